"""What to download (pure): ranges of open times per (symbol, interval), split into pages.

- A new symbol or an empty table: the configured depth back from the last closed candle, never
  before the candle that contains the listing time (or from the listing, with since_listing).
- A known table: from the last stored candle + one interval up to the last closed candle, and
  its head: from where the configured depth begins up to the first stored candle, if missing
  (a backfill interrupted after some later pages were committed leaves exactly that), unless the
  exchange confirmed it has nothing there.
- Holes inside stored history (already minus confirmed exchange holes) are fetched as well.
- A tail or head the exchange confirmed it has nothing for (`meta_holes`: a closed market
  session, a halt) is not asked again.
Ranges are inclusive [first_open_ms, last_open_ms] of aligned open times; 3d ranges use the
table's phase (`phase_ms`, see `intervals`).

Page sizes (`pages`): the exchange charges by `limit` (docs: weight 1 below 100, 2 below 500;
measured: 1 up to 100, 2 up to 500). Full pages take `page_limit` candles (499: weight 2 under
both readings, 249.5 candles per weight unit, the most there is), and the last page of a range
asks exactly for what is left: 37 candles are one `limit=37` request of weight 1, never a
`limit=499` one. With weight 1 for up to 99 and 2 for up to 499 candles this greedy cut is the
cheapest there is for any range.
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
               since_listing: bool, last_stored_ms: int | None, holes: list[tuple[int, int]],
               first_stored_ms: int | None = None,
               exchange_holes: list[tuple[int, int]] = (), phase_ms: int | None = None) -> list[Range]:
    last_closed = intervals.last_closed_open(interval, now_ms, phase_ms)
    listed = intervals.align(interval, onboard_ms, phase_ms) if onboard_ms > 0 else None
    first = listed if (since_listing and listed is not None) else intervals.step(interval, last_closed, -(depth - 1))
    if listed is not None:
        first = max(first, listed)
    ranges: list[Range] = []
    if last_stored_ms is None:
        if first <= last_closed:
            ranges.append(Range(symbol, interval, first, last_closed, "new"))
        return ranges
    if first_stored_ms is not None and first < first_stored_ms:
        head_last = intervals.prev_open(interval, first_stored_ms)
        confirmed_empty = any(a <= first and head_last <= b for a, b in exchange_holes)
        if not confirmed_empty:
            ranges.append(Range(symbol, interval, first, head_last, "hole"))
    for first, last in holes:
        ranges.append(Range(symbol, interval, first, last, "hole"))
    tail_first = intervals.next_open(interval, last_stored_ms)
    for a, b in exchange_holes:
        if a <= tail_first <= b:
            tail_first = intervals.next_open(interval, b)  # confirmed empty: start after it
    if tail_first <= last_closed:
        ranges.append(Range(symbol, interval, tail_first, last_closed, "tail"))
    return ranges


def page_limit(interval: str, start_ms: int, end_ms: int) -> int:
    """The `limit` of a page [start, end]: exactly its number of candles (see module doc)."""
    return intervals.count_between(interval, start_ms, end_ms)


def pages(interval: str, first_open_ms: int, last_open_ms: int, page_limit_max: int) -> list[tuple[int, int, int]]:
    """`split_pages` with each page's `limit` (`page_limit`)."""
    return [(start, end, page_limit(interval, start, end))
            for start, end in split_pages(interval, first_open_ms, last_open_ms, page_limit_max)]


def split_pages(interval: str, first_open_ms: int, last_open_ms: int, limit: int) -> list[tuple[int, int]]:
    """Cut [first, last] into pages of at most `limit` candles, oldest first."""
    pages = []
    start = first_open_ms
    while start <= last_open_ms:
        end = min(intervals.step(interval, start, limit - 1), last_open_ms)
        pages.append((start, end))
        start = intervals.next_open(interval, end)
    return pages


def subtract(interval: str, piece: tuple[int, int], start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """Open-time range `piece` minus [start_ms, end_ms], as ranges on the piece's own grid (for
    3d the table's phase, whatever it is)."""
    a, b = piece
    if end_ms < a or start_ms > b:
        return [piece]
    if interval == intervals.MONTH:
        left_end = intervals.align(interval, start_ms - 1)  # newest open before start_ms
        right_start = intervals.next_open(interval, intervals.align(interval, end_ms))
    else:
        step_ms = intervals.nominal_ms(interval)
        left_end = a + (start_ms - 1 - a) // step_ms * step_ms
        right_start = a + ((end_ms - a) // step_ms + 1) * step_ms
    out = []
    if left_end >= a:
        out.append((a, left_end))
    if right_start <= b:
        out.append((right_start, b))
    return out


def minus_known(interval: str, gaps: list[tuple[int, int]],
                known: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """`gaps` without the confirmed exchange holes `known`."""
    result = []
    for gap in gaps:
        pieces = [gap]
        for start_ms, end_ms in known:
            pieces = [p for piece in pieces for p in subtract(interval, piece, start_ms, end_ms)]
        result.extend(pieces)
    return result


def page_count(interval: str, first_open_ms: int, last_open_ms: int, limit: int) -> int:
    return -(-intervals.count_between(interval, first_open_ms, last_open_ms) // limit)


def merge_adjacent(interval: str, gaps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted ranges with touching neighbours joined (a gap found across two scan chunks)."""
    merged: list[tuple[int, int]] = []
    for a, b in sorted(gaps):
        if merged and a <= intervals.next_open(interval, merged[-1][1]):
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged
