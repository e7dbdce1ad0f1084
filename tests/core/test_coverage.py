"""core/coverage.py: expected and missing candles, confirmed holes on the table's own grid, lag,
what counts as lagging, the per-interval rows and the exit status."""

from __future__ import annotations

import calendar

from kl_actors.core import coverage, intervals
from kl_actors.core.coverage import TableFacts

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
T0 = 1_700_000_040_000 - 1_700_000_040_000 % HOUR  # an hour boundary
GRACE = 60_000


def state(facts, now, grace=GRACE):
    return coverage.table_state(facts, now, grace)


def test_complete_current_table():
    last = T0 + 99 * MIN
    f = TableFacts("BTCUSDT", "1m", 100, 3, T0, last)
    s = state(f, now=last + MIN + 10_000)  # the newest stored candle closed 10 s ago
    assert (s.expected, s.missing, s.lag_ms, s.lag_candles, s.lagging) == (100, 0, 0, 0, False)
    assert coverage.exit_status([s]) == 0


def test_one_candle_behind_is_fine_only_within_the_grace():
    last = T0 + 99 * MIN
    f = TableFacts("BTCUSDT", "1m", 100, 0, T0, last)
    within = state(f, now=last + 2 * MIN + 30_000)   # the next candle closed 30 s ago, not stored yet
    assert (within.lag_candles, within.lag_ms, within.lagging) == (1, MIN, False)
    late = state(f, now=last + 2 * MIN + 45_000, grace=30_000)  # ... 45 s ago, with a grace of 30 s
    assert (late.lag_candles, late.lagging) == (1, True)
    far = state(f, now=last + 10 * MIN)
    assert (far.lag_candles, far.lagging) == (9, True)
    assert coverage.exit_status([within]) == 0 and coverage.exit_status([late]) == 1


def test_missing_candles_minus_confirmed_exchange_holes():
    # 100 open times, 90 rows: 10 missing, of which 4 are a confirmed exchange hole.
    last = T0 + 99 * HOUR
    hole = (T0 + 10 * HOUR, T0 + 13 * HOUR)
    f = TableFacts("BTCUSDT", "1h", 90, 0, T0, last, exchange_holes=(hole,))
    s = state(f, now=last + HOUR)
    assert (s.expected, s.exchange_hole_candles, s.missing) == (100, 4, 6)
    assert coverage.exit_status([s]) == 1
    # Rows stored inside the hole (served after all) are not rows of history: still 6 missing.
    g = f._replace(rows=92, rows_in_exchange_holes=2)
    assert state(g, now=last + HOUR).missing == 6


def test_exchange_holes_clipped_to_stored_history_and_to_the_grid():
    # A 3d table on phase 1 day; a hole that starts before the first candle and one that ends
    # after the last, and one between grid times (no candle inside).
    first = 19_000 * DAY + DAY - (19_000 * DAY + DAY) % (3 * DAY) + DAY
    assert intervals.phase_of("3d", first) == DAY
    last = first + 9 * 3 * DAY
    holes = ((first - 10 * DAY, first + 3 * DAY), (first + 4 * DAY, first + 5 * DAY), (last, last + 30 * DAY))
    assert coverage.clip_to_grid("3d", first, last, holes) == [(first, first + 3 * DAY), (last, last)]
    f = TableFacts("BTCUSDT", "3d", 7, 0, first, last, exchange_holes=holes)
    s = state(f, now=last + 3 * DAY)
    assert (s.expected, s.exchange_hole_candles, s.missing) == (10, 3, 0)


def test_month_tables_count_calendar_months():
    first = calendar.timegm((2023, 11, 1, 0, 0, 0)) * 1000
    last = calendar.timegm((2024, 10, 1, 0, 0, 0)) * 1000
    hole = (calendar.timegm((2024, 2, 1, 0, 0, 0)) * 1000, calendar.timegm((2024, 3, 15, 0, 0, 0)) * 1000)
    f = TableFacts("BTCUSDT", "1M", 9, 0, first, last, exchange_holes=(hole,))
    now = calendar.timegm((2024, 11, 20, 0, 0, 0)) * 1000
    s = state(f, now)
    assert (s.expected, s.exchange_hole_candles, s.missing) == (12, 2, 1)  # February and March open in it
    assert (s.lag_candles, s.lagging) == (0, False)
    later = state(f, calendar.timegm((2024, 12, 2, 0, 0, 0)) * 1000)
    assert (later.lag_candles, later.lagging) == (1, True)


def test_a_confirmed_hole_right_after_the_newest_candle_is_not_lag():
    # A closed market session: the exchange has no candles after the newest stored one.
    last = T0 + 99 * MIN
    f = TableFacts("XAUUSDT", "1m", 100, 0, T0, last, exchange_holes=((last + MIN, last + 30 * MIN),))
    s = state(f, now=last + 31 * MIN + 5_000)
    assert (s.lag_candles, s.lagging, s.missing) == (0, False, 0)
    s = state(f, now=last + 40 * MIN)
    assert (s.lag_candles, s.lagging) == (9, True)  # the session reopened at last + 31 min


def test_empty_tables_and_tables_not_followed():
    empty = state(TableFacts("NEWUSDT", "1h", 0, 0, None, None), now=T0)
    assert (empty.lag_ms, empty.lagging, empty.missing) == (-1, True, 0)
    stale = TableFacts("OLDUSDT", "1h", 10, 0, T0, T0 + 9 * HOUR)
    delisted = state(stale._replace(followed=False, delisted=True), now=T0 + 100 * DAY)
    assert delisted.lag_candles > 0 and not delisted.lagging
    assert coverage.exit_status([delisted]) == 0
    assert coverage.exit_status([state(stale, now=T0 + 100 * DAY)]) == 1


def test_rows_per_interval_sum_and_take_the_worst_lag():
    now = T0 + 1000 * MIN + 5_000
    a = state(TableFacts("BTCUSDT", "1m", 1000, 2, T0, T0 + 999 * MIN), now)
    b = state(TableFacts("ETHUSDT", "1m", 995, 0, T0 + 5 * MIN, T0 + 995 * MIN), now)        # 4 behind
    c = state(TableFacts("OLDUSDT", "1m", 10, 0, T0 - DAY, T0 - DAY + 9 * MIN, followed=False, delisted=True), now)
    d = state(TableFacts("BTCUSDT", "1h", 15, 1, T0, T0 + 15 * HOUR), now)                     # 1 missing
    rows = coverage.by_interval([d, c, b, a], {("BTCUSDT", "1h"): 1})
    assert [r.interval for r in rows] == ["1m", "1h"]
    m, h = rows
    assert (m.tables, m.candles, m.ws_rows, m.first_ms, m.last_ms) == (3, 2005, 2, T0 - DAY, T0 + 995 * MIN)
    assert (m.lag_candles, m.lagging, m.delisted, m.missing) == (4, 1, 1, 0)
    assert (h.tables, h.candles, h.missing, h.holes, h.lagging) == (1, 15, 1, 1, 0)
    assert coverage.exit_status([a, b, c, d]) == 1
    assert coverage.exit_status([a, c]) == 0


def test_merge_ranges_joins_overlaps_and_neighbours():
    assert coverage.merge_ranges([(10, 20), (0, 5), (6, 8), (15, 30), (40, 41)]) == [(0, 8), (10, 30), (40, 41)]
