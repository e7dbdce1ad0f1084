"""Backfill that is planned but not yet queued, and how far each table is known complete (pure).

Two things keep planning cheap whatever the database holds:
- **Lazy pages.** A planned range stays a range here; the scheduler cuts pages off its front only
  as the task queue drains (`take`). A since-listing plan of years of 1m history for hundreds of
  symbols is a few thousand ranges, not millions of tasks.
- **Incremental scans.** `Coverage` remembers, per table, the open time up to which stored history
  is proven complete (every candle present or a confirmed exchange hole). A planning pass checks
  only what lies after it, in chunks of `CHUNK_ROWS` candles proven complete by a count before any
  row is read (`chunks`), so a pass over a month-old database costs what the last hour added.
  The mark lives in memory: a restarted scheduler proves everything once again, a slice at a time.

No sockets, files or clocks here: the scheduler does the reading and passes the answers in.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator

from . import intervals, planner
from .planner import Range

CHUNK_ROWS = 50_000  # one count is ~2 ms and one gap listing ~25 ms at this size


class Backlog:
    """Ranges waiting to be cut into page tasks, in planning order (first planned, first queued)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._ranges: deque[Range] = deque()
        self._per_table: Counter[tuple[str, str]] = Counter()
        self.pages_left = 0

    def __len__(self) -> int:
        return len(self._ranges)

    def has(self, symbol: str, interval: str) -> bool:
        return self._per_table[(symbol, interval)] > 0

    def add(self, ranges: list[Range]) -> int:
        """Queue ranges; returns how many pages they will make."""
        pages = 0
        for r in ranges:
            self._ranges.append(r)
            self._per_table[(r.symbol, r.interval)] += 1
            pages += planner.page_count(r.interval, r.first_open_ms, r.last_open_ms, self.limit)
        self.pages_left += pages
        return pages

    def take(self, n: int) -> list[tuple[str, str, str, int, int]]:
        """Up to `n` pages (kind, symbol, interval, start, end), oldest first within a range."""
        pages = []
        while self._ranges and len(pages) < n:
            r = self._ranges[0]
            end = min(intervals.step(r.interval, r.first_open_ms, self.limit - 1), r.last_open_ms)
            pages.append((r.kind, r.symbol, r.interval, r.first_open_ms, end))
            if end >= r.last_open_ms:
                self._ranges.popleft()
                self._forget(r)
            else:
                self._ranges[0] = r._replace(first_open_ms=intervals.next_open(r.interval, end))
        self.pages_left = max(0, self.pages_left - len(pages))
        return pages

    def drop_symbol(self, symbol: str) -> int:
        """Forget the ranges of a symbol (delisted); returns the pages dropped."""
        kept: deque[Range] = deque()
        dropped = 0
        for r in self._ranges:
            if r.symbol == symbol:
                dropped += planner.page_count(r.interval, r.first_open_ms, r.last_open_ms, self.limit)
                self._forget(r)
            else:
                kept.append(r)
        self._ranges = kept
        self.pages_left = max(0, self.pages_left - dropped)
        return dropped

    def _forget(self, r: Range) -> None:
        key = (r.symbol, r.interval)
        self._per_table[key] -= 1
        if self._per_table[key] <= 0:
            del self._per_table[key]


def chunks(interval: str, first_ms: int, last_ms: int, rows: int = CHUNK_ROWS) -> Iterator[tuple[int, int]]:
    """[first, last] in consecutive aligned pieces of at most `rows` candles (one piece for 1M:
    a month table is a few hundred rows)."""
    if interval == intervals.MONTH:
        if first_ms <= last_ms:
            yield first_ms, last_ms
        return
    start = first_ms
    while start <= last_ms:
        end = min(intervals.step(interval, start, rows - 1), last_ms)
        yield start, end
        start = intervals.next_open(interval, end)


class Coverage:
    """Per table, the open time up to which stored history is proven complete, and where that
    history began when it was proven (history filled in before it is proven anew)."""

    def __init__(self) -> None:
        self._proven: dict[tuple[str, str], tuple[int, int]] = {}  # -> (first stored, proven to)

    def scan_from(self, symbol: str, interval: str, first_stored_ms: int) -> int:
        """Where a pass must start checking this table."""
        mark = self._proven.get((symbol, interval))
        if mark is None or mark[0] != first_stored_ms or mark[1] < first_stored_ms:
            return first_stored_ms
        return intervals.next_open(interval, mark[1])

    def proven(self, symbol: str, interval: str, first_stored_ms: int, scanned_to_ms: int,
               holes: list[tuple[int, int]]) -> None:
        """A pass checked [scan_from, scanned_to_ms] and found `holes` still open there: history
        is complete up to just before the first of them."""
        if holes:
            scanned_to_ms = min(scanned_to_ms, intervals.prev_open(interval, holes[0][0]))
        self._proven[(symbol, interval)] = (first_stored_ms, scanned_to_ms)

    def forget(self, symbol: str) -> None:
        for key in [k for k in self._proven if k[0] == symbol]:
            del self._proven[key]
