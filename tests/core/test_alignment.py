"""core/alignment: where 3d, 1w and 1M candles open is read from real candles, never assumed for good."""

from __future__ import annotations

from kl_actors.core import intervals
from kl_actors.core.alignment import Alignment, is_month_start

DAY = intervals.DAY_MS
MONDAY = 20787 * DAY          # 2026-11-30 00:00 UTC
DEC_1 = 1_796_083_200_000     # 2026-12-01 00:00 UTC


def test_assumed_until_a_real_candle_shows_the_phase():
    a = Alignment(["1m", "3d", "1w", "1M"], phase_3d_days=1)
    assert a.unknown() == ["3d", "1w", "1M"]
    assert a.phase("3d") == DAY and a.phase("1w") == 4 * DAY and a.phase("1m") is None
    learned = a.learn("3d", 20787 * DAY, "exchange")      # epoch day 20787 ≡ 0 (mod 3)
    assert learned.outcome == "phase" and learned.phase_ms == 0 and a.phase("3d") == 0
    a.learn("1w", MONDAY + 2 * DAY, "stored")             # weeks on Wednesdays
    assert a.phase("1w") == (20789 % 7) * DAY and a.all_phases() == {"3d": 0, "1w": (20789 % 7) * DAY}
    assert a.unknown() == ["1M"]


def test_only_configured_intervals_are_asked_for():
    assert Alignment(["1m", "1h"], 0).unknown() == []
    assert Alignment(["1w"], 0).unknown() == ["1w"]


def test_month_confirmed_by_a_calendar_candle():
    a = Alignment(["1M"], 0)
    assert a.usable("1M")  # unknown: assumed calendar, validation still guards every page
    learned = a.learn("1M", DEC_1, "exchange")
    assert learned.outcome == "confirmed" and a.usable("1M") and a.unknown() == []


def test_month_contradicted_stops_1m_until_confirmed():
    a = Alignment(["1M", "1d"], 0)
    learned = a.learn("1M", DEC_1 + 2 * DAY, "exchange")
    assert learned.outcome == "contradicted" and not a.usable("1M") and a.usable("1d")
    assert a.unknown() == ["1M"]  # asked again at the next discovery
    a.learn("1M", DEC_1, "exchange")
    assert a.usable("1M") and a.unknown() == []


def test_month_start_check():
    assert is_month_start(DEC_1) and not is_month_start(DEC_1 + 1) and not is_month_start(DEC_1 - DAY)
    assert not is_month_start(10 ** 30)  # no calendar holds it: not a month start, no exception
