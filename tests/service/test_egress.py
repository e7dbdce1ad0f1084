"""Egress groups end to end: the whole service `--once` against the simulator, each group's
downloaders leaving from their own loopback address (any 127.x reaches the simulator's 127.0.0.1
listener on Linux; the simulator counts weight per peer address, `/_sim/stats` `by_ip`)."""

from __future__ import annotations

import re
import subprocess

import msgspec
import pytest
import requests

from exactness import assert_exact, stored_rows, trading_symbols, truth_rows
from harness import backfill_config, offset_before_boundary, server_ms, wait_for
from kl_actors import config as cfg
from kl_actors.core import intervals
from kl_actors.exchange import SourceAddressAdapter
from kl_actors.store import Store

MINUTE_MS = 60_000


def egress_config(workdir, sim, depth, groups: list[dict], **overrides) -> cfg.Config:
    config = backfill_config(workdir, sim, depth, **overrides)
    config = msgspec.structs.replace(config, egress=[cfg.EgressConfig(**g) for g in groups])
    return cfg.check(config, "test")


def fresh_window(sim, need_s: float) -> int:
    """Server time once at least `need_s` seconds of the current minute window are left (the
    exchange counts per calendar minute): waits for the next window if fewer are left."""
    def left_s() -> float:
        now = server_ms(sim)
        return (MINUTE_MS - now % MINUTE_MS) / 1000
    if left_s() < need_s:
        wait_for(lambda: left_s() > 58.0, timeout=62.0, interval=0.2, what="the next minute window")
    return server_ms(sim)


def by_window(stats, ip: str) -> dict[int, int]:
    return {int(k): v for k, v in stats["weight_by_ip_minute"].get(ip, {}).items()}


def run_service(config, workdir, *extra):
    from harness import ROOT, write_toml
    import sys
    toml = write_toml(config, workdir / "egress.toml")
    return subprocess.Popen([sys.executable, str(ROOT / "supervisor.py"), "--config", str(toml), "--once", *extra],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


TWO_IPS = [{"name": "lo2", "source_address": "127.0.0.2", "downloaders": 2},
           {"name": "lo3", "source_address": "127.0.0.3", "downloaders": 2}]


@pytest.mark.slow
def test_two_groups_each_spend_their_own_ip_budget(workdir, sim_factory):
    # 120 a minute per IP; the work is ~160 weight (8 symbols x 10 pages of weight 2): more than
    # one IP may spend in a minute, less than two.
    sim = sim_factory(symbols=8, weight_limit=120)
    symbols = trading_symbols(sim)
    depth = {"1m": 4990}
    config = egress_config(workdir, sim, depth, TWO_IPS)
    started = fresh_window(sim, need_s=40)
    sim.reset_stats()
    proc = run_service(config, workdir)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    stats = sim.stats()
    by_ip = stats["by_ip"]
    assert set(by_ip) == {"127.0.0.2", "127.0.0.3"}, by_ip  # nothing left from the default route
    for ip in ("127.0.0.2", "127.0.0.3"):
        assert by_ip[ip]["429"] == 0 and by_ip[ip]["418"] == 0, by_ip
        assert by_ip[ip]["weight"] >= 40, by_ip  # both groups carried a real share
    assert stats["responses_by_status"]["429"] == 0 and stats["responses_by_status"]["418"] == 0
    # In one minute the two IPs together served more than one IP's limit: two budgets.
    two, three = by_window(stats, "127.0.0.2"), by_window(stats, "127.0.0.3")
    assert max(two.get(w, 0) + three.get(w, 0) for w in set(two) | set(three)) > 120, (two, three)
    # Downloaders are named with their group in the log; time-sync went out through the first group.
    assert re.search(r"actor=downloader-1@lo2 ", err) and re.search(r"actor=downloader-3@lo3 ", err)
    assert stats["requests_by_path"].get("/fapi/v1/time", 0) >= 1
    assert "egress_shared_ip" not in err and "event=throttled" not in err
    assert_exact(workdir / "db.sqlite", sim, symbols, depth, started, server_ms(sim))


def _fill(sim, source_ip: str, limit: int) -> None:
    """Spend all of `source_ip`'s weight for this minute from outside the service (another
    program on that IP)."""
    s = requests.Session()
    s.mount("http://", SourceAddressAdapter(source_ip))
    used = 0
    while used < limit:
        r = s.get(sim.rest_url + "/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "1m", "limit": 1000}, timeout=10)
        used = int(r.headers["X-MBX-USED-WEIGHT-1M"])


@pytest.mark.slow
def test_a_429_on_one_groups_ip_pauses_only_that_group(workdir, sim_factory):
    sim = sim_factory(symbols=4, weight_limit=120)
    symbols = trading_symbols(sim)
    depth = {"1m": 4990}  # ~80 weight: group lo2 alone can carry it within the minute
    config = egress_config(workdir, sim, depth, TWO_IPS)
    started = fresh_window(sim, need_s=45)
    window = started - started % MINUTE_MS
    sim.reset_stats()
    _fill(sim, "127.0.0.3", 120)  # lo3's IP is spent for this minute: its first answers are 429
    proc = run_service(config, workdir)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    stats = sim.stats()
    by_ip = stats["by_ip"]
    throttled = [line for line in err.splitlines() if "event=throttled" in line]
    assert throttled and all("egress=lo3" in line and "dispatch to lo3 paused" in line for line in throttled), throttled
    assert by_ip["127.0.0.2"]["429"] == 0 and by_ip["127.0.0.2"]["418"] == 0
    # lo3 stopped at its first 429s: at most what its two downloaders had in flight or queued
    # (2 x (2 in flight + 2 queued)), never a stream of refusals that would earn a 418 ban.
    assert 1 <= by_ip["127.0.0.3"]["429"] <= 8 and by_ip["127.0.0.3"]["418"] == 0, by_ip
    # lo2 did all the work, the tasks refused on lo3 included, inside the very minute lo3 was
    # paused for: lo3's IP served nothing but the other program's 120.
    assert by_window(stats, "127.0.0.2").get(window, 0) >= 60, stats["weight_by_ip_minute"]
    assert by_ip["127.0.0.3"]["weight"] == 120, by_ip
    assert_exact(workdir / "db.sqlite", sim, symbols, depth, started, server_ms(sim))


@pytest.mark.slow
def test_two_groups_on_one_ip_are_found_and_share_one_budget(workdir, sim_factory):
    # "def" takes the default route (127.0.0.1), "same" binds 127.0.0.1: different config, one IP.
    sim = sim_factory(symbols=16, weight_limit=1_000_000)
    symbols = trading_symbols(sim)
    # ~640 weight: even if one group's downloaders start late on a busy machine, both groups
    # answer well over SHARED_MIN_WEIGHT within one minute.
    depth = {"1m": 9980}
    groups = [{"name": "def", "downloaders": 2},
              {"name": "same", "source_address": "127.0.0.1", "downloaders": 2}]
    config = egress_config(workdir, sim, depth, groups)
    started = server_ms(sim)
    proc = run_service(config, workdir)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    found = [line for line in err.splitlines() if "event=egress_shared_ip" in line]
    assert len(found) == 1, found  # logged once, then one budget: nothing left to find
    assert "groups=def,same" in found[0] and "one budget for both" in found[0]
    fields = dict(kv.split("=", 1) for kv in found[0].split() if "=" in kv)
    # Each header showed the other group's requests on top of its own.
    assert int(fields["header_a"]) >= int(fields["own_a"]) + int(fields["own_b"]) // 2
    assert set(sim.stats()["by_ip"]) == {"127.0.0.1"}
    assert_exact(workdir / "db.sqlite", sim, symbols, depth, started, server_ms(sim))


@pytest.mark.slow(35)
def test_live_boundary_fetches_go_out_through_the_groups(workdir, sim_factory, service_factory):
    # Started 25 s before a minute boundary: backfilled by then, no minute-long wait for it.
    sim = sim_factory(symbols=6, weight_limit=1_000_000, ws_push_ms=200,
                      clock_offset_ms=offset_before_boundary("1m", 25_000))
    symbols = trading_symbols(sim)
    config = egress_config(workdir, sim, {"1m": 30}, TWO_IPS,
                           live={"final_recheck_ms": 3000, "boundary_margin_ms": 200})
    service = service_factory(config)
    try:
        service.wait_running(["scheduler", "downloader-1", "downloader-3", "websocket"], timeout=30)
        wait_for(lambda: "event=planned tasks=" in service.log_text(), 30, what="the backfill plan")
        boundary = intervals.next_boundary("1m", server_ms(sim) + 2000)  # backfill long done by then
        wait_for(lambda: f"event=boundary boundary_ms={boundary} " in service.log_text(), 75,
                 what="the boundary planned")
        before = sim.stats()["by_ip"]
        done = f"event=boundary_done boundary_ms={boundary} interval=1m tasks={len(symbols)} failed=0"
        wait_for(lambda: done in service.log_text(), 40, what="the boundary confirmed")
        after = sim.stats()["by_ip"]
    finally:
        code, err = service.stop()
    assert code == 0, err[-3000:]
    for ip in ("127.0.0.2", "127.0.0.3"):
        assert after[ip]["429"] == 0 and after[ip]["418"] == 0, after
    # Only boundary fetches (and time-sync on the first group) went out meanwhile; the second
    # group's IP carried some of them.
    assert after["127.0.0.3"]["requests"] > before.get("127.0.0.3", {}).get("requests", 0), (before, after)
    store = Store.open_readonly(path=config.database.path)
    try:
        for symbol in symbols:
            rows = stored_rows(store, symbol, "1m")
            assert rows[-1][0] >= intervals.prev_open("1m", boundary)
            assert rows == truth_rows(sim, symbol, "1m", rows[0][0], rows[-1][0])
    finally:
        store.close()
