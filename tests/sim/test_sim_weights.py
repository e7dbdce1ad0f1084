"""The simulator's weight window, 429 → 418 escalation, faults settings and import boundary."""

import ast
from pathlib import Path

import pytest

from kl_actors.sim.faults import FaultDice, Faults
from kl_actors.sim.weights import WeightLimiter, klines_weight

T0 = 1795540440000  # on a minute boundary


@pytest.mark.parametrize("limit,weight", [(None, 5), ("1", 1), ("99", 1), ("100", 2),
                                          ("499", 2), ("500", 5), ("1000", 5), ("1001", 10),
                                          ("1500", 10), ("0", 1), ("x", 5)])
def test_klines_weight_table(limit, weight):
    assert klines_weight(limit) == weight


def test_window_accounts_and_resets():
    lim = WeightLimiter(limit=10)
    assert lim.charge("a", 5, T0).used == 5
    assert lim.charge("b", 5, T0).used == 5  # per IP
    d = lim.charge("a", 5, T0 + 59_000)
    assert (d.status, d.used) == (200, 10)
    d = lim.charge("a", 1, T0 + 59_500)
    assert d.status == 429 and d.used == 10 and d.retry_after_s == 1
    d = lim.charge("a", 1, T0 + 60_000)  # the calendar minute rolled over
    assert (d.status, d.used) == (200, 1)
    assert lim.ips["a"].history == {T0: 10, T0 + 60_000: 1}


def test_429_then_418_and_growing_ban():
    lim = WeightLimiter(limit=3, ban_base_s=120, abuse_after=5)
    for _ in range(3):
        assert lim.charge("a", 1, T0).status == 200
    statuses = [lim.charge("a", 1, T0 + 10_000) for _ in range(6)]
    assert [d.status for d in statuses] == [429] * 6
    assert statuses[0].retry_after_s == 50
    assert lim.ips["a"].used == 3  # rejected requests add no weight
    ban = lim.charge("a", 1, T0 + 10_000)
    assert ban.status == 418 and ban.retry_after_s == 120
    assert ban.ban_until_ms == T0 + 10_000 + 120_000
    during = lim.charge("a", 1, T0 + 100_000)
    assert during.status == 418 and during.retry_after_s == 30
    assert during.ban_until_ms == ban.ban_until_ms  # not extended
    after = T0 + 10_000 + 120_000 + 1
    assert lim.charge("a", 1, after).status == 200
    lim.charge("a", 1, after)
    lim.charge("a", 1, after)
    for _ in range(6):
        assert lim.charge("a", 1, after).status == 429
    second = lim.charge("a", 1, after)
    assert second.status == 418 and second.retry_after_s == 240


def test_faults_update_and_dice():
    f = Faults()
    f.update({"latency_ms": 5, "error_5xx_rate": 0.5, "ws_close_differs": True,
              "final_delay_ms": 1500})
    assert f.latency_ms == 5.0 and f.final_delay_ms == 1500 and f.ws_close_differs is True
    with pytest.raises(KeyError):
        f.update({"nope": 1})
    with pytest.raises(ValueError):
        f.update({"reset_rate": 2})
    picks = [FaultDice(f, 3).pick() for _ in range(1)]
    dice_a, dice_b = FaultDice(f, 3), FaultDice(f, 3)
    seq_a = [dice_a.pick() for _ in range(200)]
    assert seq_a == [dice_b.pick() for _ in range(200)]  # seeded
    assert 60 < seq_a.count("5xx") < 140 and set(seq_a) == {"5xx", None}
    assert picks[0] in ("5xx", None)


def test_sim_imports_nothing_of_the_service():
    sim_dir = Path(__file__).resolve().parents[2] / "kl_actors" / "sim"
    allowed = {"aiohttp", "msgspec"}
    import sys
    for path in sim_dir.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: must stay inside kl_actors.sim
                    assert node.level == 1, path
                    continue
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or top in sys.stdlib_module_names, (path.name, name)
