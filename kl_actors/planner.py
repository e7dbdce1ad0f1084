"""What to download (pure): ranges of open times per (symbol, interval), split into pages.

- A new symbol or an empty table: the configured depth back from the last closed candle, never
  before the candle that contains the listing time (or from the listing, with since_listing).
- A known table: from the last stored candle + one interval up to the last closed candle.
- Holes inside stored history (already minus confirmed exchange holes) are fetched as well.
Ranges are inclusive [first_open_ms, last_open_ms] of aligned open times.
"""

from __future__ import annotations

from typing import NamedTuple

from . import intervals


class Range(NamedTuple):
    symbol: str
    interval: str
    first_open_ms: int
    last_open_ms: int
    kind: str  # "new", "tail" or "hole"


def plan_table(symbol: str, interval: str, *, now_ms: int, onboard_ms: int, depth: int,
               since_listing: bool, last_stored_ms: int | None,
               holes: list[tuple[int, int]]) -> list[Range]:
    last_closed = intervals.last_closed_open(interval, now_ms)
    listed = intervals.align(interval, onboard_ms) if onboard_ms > 0 else None
    ranges: list[Range] = []
    if last_stored_ms is None:
        first = listed if (since_listing and listed is not None) else intervals.step(interval, last_closed, -(depth - 1))
        if listed is not None:
            first = max(first, listed)
        if first <= last_closed:
            ranges.append(Range(symbol, interval, first, last_closed, "new"))
        return ranges
    for first, last in holes:
        ranges.append(Range(symbol, interval, first, last, "hole"))
    tail_first = intervals.next_open(interval, last_stored_ms)
    if tail_first <= last_closed:
        ranges.append(Range(symbol, interval, tail_first, last_closed, "tail"))
    return ranges


def split_pages(interval: str, first_open_ms: int, last_open_ms: int, limit: int) -> list[tuple[int, int]]:
    """Cut [first, last] into pages of at most `limit` candles, oldest first."""
    pages = []
    start = first_open_ms
    while start <= last_open_ms:
        end = min(intervals.step(interval, start, limit - 1), last_open_ms)
        pages.append((start, end))
        start = intervals.next_open(interval, end)
    return pages
