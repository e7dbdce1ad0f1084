"""Issue 12's pure rules: the 3d phase both ways, page gaps as exchange holes, the cheapest page
sizes, and a refused request's weight."""

from __future__ import annotations

import json
import math

import pytest

from kl_actors.core import answers, intervals, klines, planner
from kl_actors.core.budget import WeightBudget, best_page_limit, weight_for_limit
from kl_actors.messages import Candle, DownloadTask

DAY = intervals.DAY_MS
STEP_3D = 3 * DAY
MIN = 60_000
# 2026-11-30 00:00 UTC is epoch day 20787 ≡ 0 (mod 3).
D0 = 20787 * DAY


def candle(interval: str, open_ms: int) -> Candle:
    return Candle(open_ms, "1.0", "1.5", "0.5", "1.2", "3", open_ms + (STEP_3D if interval == "3d" else
                  intervals.nominal_ms(interval)) - 1, "4", 5, "1", "1")


# -- the 3d phase --------------------------------------------------------------------------------

@pytest.mark.parametrize("phase_days", [0, 1, 2])
def test_3d_alignment_follows_the_phase(phase_days):
    phase = phase_days * DAY
    t = D0 + 5 * DAY + 7 * 3_600_000  # inside some 3d candle
    opened = intervals.align("3d", t, phase)
    assert opened % STEP_3D == phase and opened <= t < opened + STEP_3D
    assert intervals.phase_of("3d", opened) == phase
    assert intervals.last_closed_open("3d", t, phase) == opened - STEP_3D
    assert intervals.next_boundary("3d", t, phase) == opened + STEP_3D
    assert "3d" in intervals.closing_at(opened + STEP_3D, ["1d", "3d"], {"3d": phase})
    # The other two day-phases are not 3d boundaries.
    other = opened + STEP_3D + DAY
    assert intervals.closing_at(other, ["1d", "3d"], {"3d": phase}) == ["1d"]


def test_phase_ignored_by_every_unphased_interval():
    t = D0 + 5 * DAY + 7 * 3_600_000
    for interval in ("1m", "1h", "1d", "1M"):
        assert intervals.align(interval, t, DAY) == intervals.align(interval, t)
        assert intervals.phase_of(interval, intervals.align(interval, t)) == 0


@pytest.mark.parametrize("phase_days", range(7))
def test_1w_alignment_follows_the_phase(phase_days):
    phase = phase_days * DAY
    t = D0 + 9 * DAY + 5 * 3_600_000
    opened = intervals.align("1w", t, phase)
    assert opened % intervals.WEEK_MS == phase and opened <= t < opened + intervals.WEEK_MS
    assert intervals.phase_of("1w", opened) == phase
    assert intervals.next_boundary("1w", t, phase) == opened + intervals.WEEK_MS
    assert intervals.closing_at(opened, ["1d", "1w"], {"1w": phase}) == ["1d", "1w"]
    assert intervals.closing_at(opened + DAY, ["1d", "1w"], {"1w": phase}) == ["1d"]
    # One phase never leaks into another interval: a 3d phase given for 1w's mapping key only.
    assert intervals.closing_at(opened, ["1w"], {"3d": DAY}) == (["1w"] if phase == 4 * DAY else [])


def test_default_phases_are_multiples_of_three_days_and_mondays():
    monday = 20787 * DAY  # 2026-11-30, a Monday
    assert intervals.align("1w", monday + 3 * DAY) == monday
    assert intervals.align("3d", D0 + DAY) == D0
    assert intervals.phase_of("1w", monday) == intervals.DEFAULT_PHASE_MS["1w"] == 4 * DAY


@pytest.mark.parametrize("phase_days", [0, 4, 6])
def test_1w_pages_valid_on_any_weekday(phase_days):
    opens = [D0 + phase_days * DAY + i * intervals.WEEK_MS for i in range(4)]
    page = [candle("1w", t) for t in opens]
    got = klines.validate_page("1w", page, opens[0], opens[-1], opens[-1] + 10 * intervals.WEEK_MS)
    assert [c.open_time_ms for c in got] == opens


@pytest.mark.parametrize("phase_days", [0, 1, 2])
def test_3d_pages_valid_on_any_phase(phase_days):
    opens = [D0 + phase_days * DAY + i * STEP_3D for i in range(4)]
    page = [candle("3d", t) for t in opens]
    got = klines.validate_page("3d", page, opens[0], opens[-1], opens[-1] + 10 * STEP_3D)
    assert [c.open_time_ms for c in got] == opens


def test_3d_page_with_a_broken_step_or_an_off_day_open_is_refused():
    with pytest.raises(klines.PageError, match="3d steps"):
        klines.validate_page("3d", [candle("3d", D0), candle("3d", D0 + 4 * DAY)], D0, D0 + 9 * DAY, 2**62)
    with pytest.raises(klines.PageError, match="not aligned"):
        klines.check_candle("3d", candle("3d", D0 + 3_600_000))
    with pytest.raises(klines.PageError, match="close time"):
        klines.check_candle("3d", candle("1d", D0))


def test_weeks_validated_by_step_not_by_weekday():
    tuesday = D0 + DAY  # 2026-12-01 was a Tuesday: weeks as the docs show them open on Monday
    page = [candle("1w", tuesday + i * intervals.WEEK_MS) for i in range(3)]
    assert len(klines.validate_page("1w", page, tuesday, tuesday + 3 * intervals.WEEK_MS, 2**62)) == 3
    with pytest.raises(klines.PageError, match="1w steps"):
        klines.validate_page("1w", [page[0], candle("1w", tuesday + 8 * DAY)], tuesday, tuesday + 30 * DAY, 2**62)


def test_planner_uses_the_phase_for_a_new_3d_table():
    now = D0 + 10 * DAY + 5 * MIN  # day 10 ≡ 1 (mod 3)
    for phase_days, last in ((0, D0 + 6 * DAY), (1, D0 + 7 * DAY), (2, D0 + 5 * DAY)):
        ranges = planner.plan_table("BTCUSDT", "3d", now_ms=now, onboard_ms=0, depth=5, since_listing=False,
                                    last_stored_ms=None, holes=[], phase_ms=phase_days * DAY)
        assert [(r.first_open_ms, r.last_open_ms) for r in ranges] == [(last - 4 * STEP_3D, last)]


# -- page gaps are exchange holes ----------------------------------------------------------------

def test_gaps_inside_and_before_a_page_are_missing_ranges():
    start, end = D0, D0 + 9 * MIN
    present = [D0 + 2 * MIN, D0 + 3 * MIN, D0 + 6 * MIN, D0 + 9 * MIN]
    page = [candle("1m", t) for t in present]
    assert klines.missing_ranges("1m", page, start, end, limit=10) == [
        (D0, D0 + MIN), (D0 + 4 * MIN, D0 + 5 * MIN), (D0 + 7 * MIN, D0 + 8 * MIN)]


def test_after_the_newest_candle_only_when_the_page_was_not_cut_by_limit():
    page = [candle("1m", D0 + i * MIN) for i in range(3)]
    assert klines.missing_ranges("1m", page, D0, D0 + 9 * MIN, limit=10) == [(D0 + 3 * MIN, D0 + 9 * MIN)]
    assert klines.missing_ranges("1m", page, D0, D0 + 9 * MIN, limit=3) == []
    assert klines.missing_ranges("1m", [], D0, D0 + 9 * MIN, limit=10) == []  # empty: asked twice first


def test_3d_missing_ranges_on_the_pages_own_phase():
    opens = [D0 + DAY + i * STEP_3D for i in (0, 2)]
    page = [candle("3d", t) for t in opens]
    assert klines.missing_ranges("3d", page, opens[0], opens[-1], limit=3) == [(opens[0] + STEP_3D,) * 2]


def test_a_week_phase_we_did_not_expect_is_not_missing_candles():
    tuesday = D0 + DAY
    page = [candle("1w", tuesday + i * intervals.WEEK_MS) for i in (0, 1, 3)]
    monday = tuesday - DAY
    assert klines.missing_ranges("1w", page, monday, tuesday + 3 * intervals.WEEK_MS, limit=4) == [
        (tuesday + 2 * intervals.WEEK_MS,) * 2]


def test_classify_reports_missing_for_backfill_pages_only():
    rows = [[t, "1.0", "1.5", "0.5", "1.2", "3", t + MIN - 1, "4", 5, "1", "1", "0"] for t in (D0, D0 + 2 * MIN)]
    backfill = DownloadTask(task_id="t", symbol="XAUUSDT", interval="1m", start_ms=D0, end_ms=D0 + 2 * MIN, limit=3)
    result, _ = answers.classify(backfill, 200, {}, json.dumps(rows).encode(), D0 + DAY)
    assert result.status == "ok" and result.missing == [(D0 + MIN, D0 + MIN)]
    live = DownloadTask(task_id="b", symbol="XAUUSDT", interval="1m", start_ms=D0, end_ms=D0 + 2 * MIN, limit=3,
                        priority="boundary")
    result, _ = answers.classify(live, 200, {}, json.dumps(rows).encode(), D0 + DAY)
    assert result.missing == []


def test_a_tail_the_exchange_confirmed_empty_is_not_asked_again():
    now = D0 + 100 * MIN + 1
    last_stored = D0 + 40 * MIN
    closed = [(D0 + 41 * MIN, D0 + 99 * MIN)]  # a closed market session up to the last closed minute
    assert planner.plan_table("XAUUSDT", "1m", now_ms=now, onboard_ms=0, depth=100, since_listing=False,
                              last_stored_ms=last_stored, holes=[], first_stored_ms=D0,
                              exchange_holes=closed) == []
    ranges = planner.plan_table("XAUUSDT", "1m", now_ms=now + MIN, onboard_ms=0, depth=100, since_listing=False,
                                last_stored_ms=last_stored, holes=[], first_stored_ms=D0, exchange_holes=closed)
    assert [(r.first_open_ms, r.last_open_ms, r.kind) for r in ranges] == [(D0 + 100 * MIN, D0 + 100 * MIN, "tail")]


# -- page sizes ------------------------------------------------------------------------------------

def measured_weight(limit: int) -> int:
    """The live measurement's reading (binance-api.md section 7): 1 up to 100, 2 up to 500."""
    return 1 if limit <= 100 else 2 if limit <= 500 else 5 if limit <= 1000 else 10


def test_weight_table_is_safe_under_both_readings():
    for limit in range(1, 1501):
        assert weight_for_limit(limit) >= measured_weight(limit)
    assert best_page_limit() == 499
    assert weight_for_limit(499) == measured_weight(499) == 2  # the same price under both readings
    assert weight_for_limit(99) == measured_weight(99) == 1


def test_a_tail_of_37_is_one_request_of_weight_1():
    pages = planner.pages("1m", D0, D0 + 36 * MIN, 499)
    assert pages == [(D0, D0 + 36 * MIN, 37)]
    assert weight_for_limit(pages[0][2]) == 1


def cheapest(n: int) -> int:
    """Brute force: the least weight that can carry n candles in pages of any limit."""
    best = [0] + [math.inf] * n
    for k in range(1, n + 1):
        best[k] = min(best[k - j] + weight_for_limit(j) for j in range(1, min(k, 1500) + 1))
    return best[n]


@pytest.mark.parametrize("n", [1, 37, 99, 100, 101, 198, 199, 499, 500, 598, 599, 998, 1000, 1097, 1234])
def test_pages_cost_the_least_weight_there_is(n):
    pages = planner.pages("1h", D0, intervals.step("1h", D0, n - 1), 499)
    assert sum(limit for _, _, limit in pages) == n
    assert all(intervals.count_between("1h", a, b) == limit for a, b, limit in pages)
    assert sum(weight_for_limit(limit) for _, _, limit in pages) == cheapest(n)


def test_month_pages_count_calendar_months():
    first = 1_704_067_200_000  # 2024-01-01
    last = intervals.step("1M", first, 36)
    assert planner.pages("1M", first, last, 499) == [(first, last, 37)]


# -- a refused request's weight ---------------------------------------------------------------------

def test_a_refused_request_keeps_its_weight_charged():
    budget = WeightBudget(100, usable_fraction=1.0)
    now = D0 + 1_000
    assert budget.try_spend(weight_for_limit(499), now, "t-1")
    # The exchange answered 400 (e.g. -1130): the scheduler settles the task with its send time.
    budget.settle("t-1", now + 5, now + 10)
    budget.observe(2, now + 5, now + 10)
    assert budget.available(now + 20) == 98
    budget.observe(7, now + 5, now + 30)  # the exchange's own count says more: it wins
    assert budget.available(now + 40) == 93
