"""Backfill kept as ranges until the queue needs pages, and per-table proven-complete marks."""

import calendar
import datetime as dt

from kl_actors.core import backlog, intervals, planner
from kl_actors.core.planner import Range

MIN = 60_000
T0 = calendar.timegm(dt.datetime(2026, 1, 1).timetuple()) * 1000


def test_pages_are_cut_lazily_and_equal_an_eager_split():
    b = backlog.Backlog(limit=499)
    r1 = Range("BTCUSDT", "1m", T0, T0 + 2000 * MIN, "new")
    r2 = Range("ETHUSDT", "1h", T0, T0 + 10 * 3_600_000, "tail")
    assert b.add([r1, r2]) == 5 + 1
    assert b.has("BTCUSDT", "1m") and b.has("ETHUSDT", "1h") and not b.has("BTCUSDT", "1h")
    first = b.take(2)
    assert b.pages_left == 4 and len(b) == 2
    rest = b.take(100)
    pages = first + rest
    eager = [("new", "BTCUSDT", "1m", s, e) for s, e in planner.split_pages("1m", T0, T0 + 2000 * MIN, 499)]
    eager += [("tail", "ETHUSDT", "1h", s, e) for s, e in planner.split_pages("1h", T0, T0 + 10 * 3_600_000, 499)]
    assert pages == eager
    assert b.pages_left == 0 and len(b) == 0 and not b.has("BTCUSDT", "1m")


def test_years_since_listing_stay_a_few_ranges():
    b = backlog.Backlog(limit=499)
    three_years = 3 * 365 * 1440
    ranges = [Range(f"S{i}USDT", "1m", T0, T0 + (three_years - 1) * MIN, "new") for i in range(550)]
    pages = b.add(ranges)
    assert pages == 550 * -(-three_years // 499)  # ~1.7 M pages planned...
    assert len(b) == 550                          # ...held as 550 ranges
    assert len(b.take(2000)) == 2000 and len(b) == 550


def test_drop_symbol_forgets_its_ranges_and_pages():
    b = backlog.Backlog(limit=10)
    b.add([Range("A", "1m", T0, T0 + 99 * MIN, "new"), Range("B", "1m", T0, T0 + 19 * MIN, "new")])
    assert b.drop_symbol("A") == 10
    assert b.pages_left == 2 and not b.has("A", "1m")
    assert [p[1] for p in b.take(10)] == ["B", "B"]


def test_chunks_tile_the_range_exactly():
    pieces = list(backlog.chunks("1m", T0, T0 + 119_999 * MIN, rows=50_000))
    assert pieces == [(T0, T0 + 49_999 * MIN), (T0 + 50_000 * MIN, T0 + 99_999 * MIN),
                      (T0 + 100_000 * MIN, T0 + 119_999 * MIN)]
    assert sum(intervals.count_between("1m", a, b) for a, b in pieces) == 120_000
    assert list(backlog.chunks("1M", T0, T0 + 400 * 86_400_000)) == [(T0, T0 + 400 * 86_400_000)]
    assert list(backlog.chunks("1m", T0 + MIN, T0)) == []


def test_coverage_rescans_only_after_the_proven_mark():
    c = backlog.Coverage()
    assert c.scan_from("A", "1m", T0) == T0
    c.proven("A", "1m", T0, T0 + 1000 * MIN, holes=[])
    assert c.scan_from("A", "1m", T0) == T0 + 1001 * MIN
    # A hole still open: proven only up to just before it, so the next pass looks again there.
    c.proven("A", "1m", T0, T0 + 2000 * MIN, holes=[(T0 + 1500 * MIN, T0 + 1510 * MIN)])
    assert c.scan_from("A", "1m", T0) == T0 + 1500 * MIN
    # History filled in before the first stored candle: proven anew from the new start.
    assert c.scan_from("A", "1m", T0 - 500 * MIN) == T0 - 500 * MIN
    c.forget("A")
    assert c.scan_from("A", "1m", T0) == T0


def test_merge_adjacent_and_minus_known():
    gaps = [(T0 + 5 * MIN, T0 + 9 * MIN), (T0, T0 + 4 * MIN), (T0 + 20 * MIN, T0 + 20 * MIN)]
    assert planner.merge_adjacent("1m", gaps) == [(T0, T0 + 9 * MIN), (T0 + 20 * MIN, T0 + 20 * MIN)]
    known = [(T0 + 2 * MIN, T0 + 3 * MIN + 59_999)]
    assert planner.minus_known("1m", [(T0, T0 + 9 * MIN)], known) == [(T0, T0 + MIN), (T0 + 4 * MIN, T0 + 9 * MIN)]
