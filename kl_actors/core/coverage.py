"""How complete and how current the stored tables are (pure: summaries in, verdicts out; `now` is
passed in). The arithmetic of `supervisor.py status`.

For one table, from its summary (`meta_tables`: rows, WebSocket rows, first and last open time),
its confirmed exchange holes (`meta_holes`) and the rows stored inside them:
- **expected** candles: every open time of the table's grid from first to last (3d and 1w on the
  grid of its own first candle, 1M calendar months);
- **missing** (open holes): expected minus rows minus the exchange-hole candles, where rows
  stored inside a confirmed hole (served after all) count as rows of that hole, not of history;
- **lag**: the last closed candle at `now` minus the newest stored one, where a confirmed hole
  right after the newest stored candle (a closed market session) counts as stored;
- **lagging**: a table of a followed symbol (trading, configured interval) lags when a candle that
  closed more than `grace_ms` ago is not stored: one candle behind is normal for `grace_ms`
  after each close (the boundary fetch, `live.boundary_deadline_s`); more is not. An empty table
  of a followed symbol lags (not fetched yet).

Never reads rows itself: the caller brings counts from the summary (or from counting, said so).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from . import intervals


class TableFacts(NamedTuple):
    symbol: str
    interval: str
    rows: int
    ws_rows: int
    first_ms: int | None
    last_ms: int | None
    exchange_holes: tuple[tuple[int, int], ...] = ()  # confirmed, [start, end] open times
    rows_in_exchange_holes: int = 0
    followed: bool = True      # trading symbol, configured interval: its lag decides the exit status
    delisted: bool = False     # meta_symbols says it no longer trades (its data kept)
    counted: bool = False      # rows counted from the table itself (no summary row)


class TableState(NamedTuple):
    facts: TableFacts
    expected: int
    missing: int                 # candles in open holes
    exchange_hole_candles: int   # confirmed exchange-hole candles inside [first, last]
    last_closed_ms: int
    lag_ms: int                  # -1: no rows
    lag_candles: int             # -1: no rows
    lagging: bool


class IntervalRow(NamedTuple):
    interval: str
    tables: int
    candles: int
    ws_rows: int
    first_ms: int | None
    last_ms: int | None          # the oldest newest-candle among followed tables (the worst)
    lag_ms: int                  # the largest lag among followed tables (-1: no rows at all)
    lag_candles: int
    lagging: int                 # followed tables that lag
    holes: int                   # open holes (ranges), when listed
    missing: int                 # candles in open holes
    exchange_holes: int          # confirmed exchange-hole ranges
    exchange_hole_candles: int
    delisted: int                # tables of symbols that no longer trade
    counted: int                 # tables counted directly (no summary row)


def _grid_phase(interval: str, first_ms: int) -> int | None:
    return intervals.phase_of(interval, first_ms) if interval in intervals.PHASED_MS else None


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, overlapping or touching ranges joined (open times, both ends inclusive)."""
    merged: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def clip_to_grid(interval: str, first_ms: int, last_ms: int,
                 holes: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The confirmed holes inside [first_ms, last_ms], as ranges of open times on the table's grid
    (the grid of its first candle; months for 1M); holes holding no grid time are left out."""
    out = []
    for a, b in merge_ranges(holes):
        lo, hi = max(a, first_ms), min(b, last_ms)
        if lo > hi:
            continue
        if interval == intervals.MONTH:
            start = intervals.align(interval, lo)
            if start < lo:
                start = intervals.next_open(interval, start)
            end = intervals.align(interval, hi)
        else:
            step = intervals.nominal_ms(interval)
            start = first_ms + -(-(lo - first_ms) // step) * step
            end = first_ms + (hi - first_ms) // step * step
        if start <= end:
            out.append((start, end))
    return out


def candles_in(interval: str, ranges: Iterable[tuple[int, int]]) -> int:
    return sum(intervals.count_between(interval, a, b) for a, b in ranges)


def newest_covered(interval: str, last_ms: int, holes: Iterable[tuple[int, int]]) -> int:
    """The newest open time known for: the newest stored one, carried through confirmed holes
    that follow it without a gap (the exchange said nothing exists there)."""
    covered = last_ms
    for a, b in merge_ranges(holes):
        if a <= intervals.next_open(interval, covered) and b > covered:
            if interval == intervals.MONTH:
                covered = intervals.align(interval, b)
            else:
                step = intervals.nominal_ms(interval)
                covered = last_ms + (b - last_ms) // step * step
    return covered


def table_state(facts: TableFacts, now_ms: int, grace_ms: int) -> TableState:
    f = facts
    if f.last_ms is None or f.first_ms is None or f.rows == 0:
        return TableState(f, 0, 0, 0, intervals.last_closed_open(f.interval, now_ms), -1, -1, f.followed)
    phase = _grid_phase(f.interval, f.last_ms)
    expected = intervals.count_between(f.interval, f.first_ms, f.last_ms)
    inside = clip_to_grid(f.interval, f.first_ms, f.last_ms, f.exchange_holes)
    hole_candles = candles_in(f.interval, inside)
    missing = max(0, expected - hole_candles - (f.rows - f.rows_in_exchange_holes))
    last_closed = intervals.last_closed_open(f.interval, now_ms, phase)
    covered = newest_covered(f.interval, f.last_ms, f.exchange_holes)
    lag_candles = max(0, intervals.count_between(f.interval, covered, last_closed) - 1)
    lag_ms = max(0, last_closed - covered)
    due = intervals.last_closed_open(f.interval, now_ms - grace_ms, phase)
    return TableState(f, expected, missing, hole_candles, last_closed, lag_ms, lag_candles,
                      f.followed and covered < due)


def by_interval(states: Iterable[TableState], holes_by_table: dict[tuple[str, str], int] | None = None) -> list[IntervalRow]:
    """One row per interval (in the exchange's order): sums, and the worst lag of followed tables.
    `holes_by_table`: open-hole ranges per (symbol, interval) where they were listed."""
    holes_by_table = holes_by_table or {}
    grouped: dict[str, list[TableState]] = {}
    for s in states:
        grouped.setdefault(s.facts.interval, []).append(s)
    rows = []
    for interval in intervals.INTERVALS:
        group = grouped.get(interval)
        if not group:
            continue
        firsts = [s.facts.first_ms for s in group if s.facts.first_ms is not None and s.facts.rows]
        followed = [s for s in group if s.facts.followed]
        lasts = [s.facts.last_ms for s in followed if s.facts.last_ms is not None and s.facts.rows]
        if not lasts:
            lasts = [s.facts.last_ms for s in group if s.facts.last_ms is not None and s.facts.rows]
        worst = max(followed or group, key=lambda s: (s.lag_ms < 0, s.lag_ms))
        rows.append(IntervalRow(
            interval=interval, tables=len(group), candles=sum(s.facts.rows for s in group),
            ws_rows=sum(s.facts.ws_rows for s in group),
            first_ms=min(firsts) if firsts else None, last_ms=min(lasts) if lasts else None,
            lag_ms=worst.lag_ms, lag_candles=worst.lag_candles,
            lagging=sum(s.lagging for s in group),
            holes=sum(holes_by_table.get((s.facts.symbol, interval), 0) for s in group),
            missing=sum(s.missing for s in group),
            exchange_holes=sum(len(s.facts.exchange_holes) for s in group),
            exchange_hole_candles=sum(s.exchange_hole_candles for s in group),
            delisted=sum(s.facts.delisted for s in group),
            counted=sum(s.facts.counted for s in group)))
    return rows


def exit_status(states: Iterable[TableState]) -> int:
    """0: every followed table current and no open hole anywhere; 1: otherwise."""
    return 1 if any(s.lagging or s.missing for s in states) else 0
