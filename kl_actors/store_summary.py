"""Per-table summaries (`meta_tables`): rows, WebSocket rows, first and last open time of every
kline table, kept by the writer in the same transaction as each upsert (a part of `Store`, by idea).

Why: `count(*)` over years of 1m for hundreds of symbols reads hundreds of millions of rows; the
status command must answer from a few meta rows instead. So each upsert of a batch counts the
rows (and WebSocket rows) of the table inside the batch's open-time range before and after it and
adds the difference: a primary-key range walk, O(batch) (a sparse batch, far wider than its
candles, looks its open times up one by one instead). The after-count needs no second walk when
nothing was stored in that range before (a tail, a new table, a bootstrap: the batch's distinct
open times) or when the batch fills its range on an epoch-grid interval (a page, a boundary
fetch: the precedence rules say what each row became). A change of nothing (a REST re-check of
a REST copy) writes nothing. First and last are min/max: after an upsert every open time of the batch
is stored (written, or kept because a better copy was there).

A table made by this connection gets its row (zeros) when it is made. A table with no row (a file
from before summaries existed) is summed once by `summarize_step`, which the writer's upkeep
calls between commits with a deadline: in open-time chunks, ascending, so it never blocks long.
While one table is being summed, an upsert below the chunk already counted adds its difference to
the running sum; one above it is counted later by the chunk walk; one across it (or a rollback
of a transaction that touched the running sum) starts that table's sum again.

Never: scan a whole table inside a write transaction; trust anything but what this connection
wrote. Rows deleted by another program (a user's `DELETE`) are not seen: the summary of that
table then overstates its rows; `status --exact` counts tables directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

from .core import intervals
from .core.symbols import SymbolError, parse_table_name, table_name

# A batch is walked as a key range when that range holds at most this many candles per batch
# candle (plus a little); wider (sparse) batches look their open times up one by one.
DENSE_FACTOR = 4
DENSE_SLACK = 64
SUM_CHUNK_CANDLES = 200_000  # one step of summing an unsummarised table (~20-50 ms of reading)

_SUMMARY_SQL = """
CREATE TABLE IF NOT EXISTS meta_tables (
    symbol TEXT NOT NULL,
    interval TEXT NOT NULL,
    rows INTEGER NOT NULL,
    ws_rows INTEGER NOT NULL,
    first_ms INTEGER,
    last_ms INTEGER,
    PRIMARY KEY (symbol, interval)
) WITHOUT ROWID;
"""

_ADD_SQL = ("UPDATE meta_tables SET rows = rows + ?1, ws_rows = ws_rows + ?2, first_ms = ?3, last_ms = ?4 "
            "WHERE symbol = ?5 AND interval = ?6")
# Intervals whose every open time is a multiple of their length since the epoch (no phase, no
# calendar): a batch that fills its range leaves no other row in it.
_EPOCH_GRID = frozenset(i for i in intervals.INTERVALS if i != intervals.MONTH and i not in intervals.PHASED_MS)


class Summary(NamedTuple):
    symbol: str
    interval: str
    rows: int
    ws_rows: int
    first_ms: int | None
    last_ms: int | None


class _Summing:
    """The running sum of one unsummarised table: rows with open time below `next_lo` counted."""

    __slots__ = ("table", "symbol", "interval", "next_lo", "rows", "ws_rows", "first_ms", "last_ms")

    def __init__(self, table: str, symbol: str, interval: str) -> None:
        self.table, self.symbol, self.interval = table, symbol, interval
        self.restart()

    def restart(self) -> None:
        self.next_lo: int | None = None  # None: not started
        self.rows = self.ws_rows = 0
        self.first_ms: int | None = None
        self.last_ms: int | None = None


class Summaries:
    """Mixin of `Store`: uses its `conn`, `_cursor`, `_known_tables`, `readonly`."""

    def _summary_init(self) -> None:
        self._summarized: set[str] = set()      # tables whose meta_tables row is kept up to date
        self._summarized_in_txn: set[str] = set()
        self._summing: _Summing | None = None
        self._summing_touched = False           # the running sum took a delta in this transaction
        self.summaries_pending = True           # until summarize_step finds no table left
        self._spans: dict[str, tuple] = {}      # table -> (first_ms, last_ms) as in its row
        self._count_sqls: dict[str, tuple[str, str]] = {}
        self._to_sum: list[str] | None = None   # tables left to sum, listed once (newest last)

    def _summary_schema(self) -> None:
        """Inside the writer's schema transaction: the table, and which tables have a row."""
        self._cursor.execute(_SUMMARY_SQL)
        self._summarized = {name for name in (self._summary_table(s, i) for s, i in self._cursor.execute(
            "SELECT symbol, interval FROM meta_tables")) if name}

    @staticmethod
    def _summary_table(symbol: str, interval: str) -> str | None:
        try:
            return table_name(symbol, interval)
        except (SymbolError, intervals.IntervalError):
            return None

    def _summary_rollback(self) -> None:
        self._spans.clear()  # rows rolled back: read first/last again
        self._summarized -= self._summarized_in_txn
        self._summarized_in_txn.clear()
        if self._summing_touched and self._summing is not None:
            self._summing.restart()
        self._summing_touched = False

    def _summary_begin(self) -> None:
        self._summarized_in_txn.clear()
        self._summing_touched = False

    def _summary_new_table(self, table: str, symbol: str, interval: str) -> None:
        """A table this connection just made: its summary starts at zero (also replacing the row
        of a table someone dropped by hand to have it fetched again)."""
        self._cursor.execute("INSERT OR REPLACE INTO meta_tables (symbol, interval, rows, ws_rows) "
                             "VALUES (?, ?, 0, 0)", (symbol, interval))
        self._spans.pop(table, None)
        self._summarized.add(table)
        if self.conn.in_transaction:
            self._summarized_in_txn.add(table)

    # -- around an upsert -----------------------------------------------------------------------
    def _tracked(self, table: str) -> bool:
        return table in self._summarized or (self._summing is not None and self._summing.table == table)

    def _count_sql(self, table: str) -> tuple[str, str]:
        sql = self._count_sqls.get(table)
        if sql is None:
            head = f"SELECT count(*), count(*) FILTER (WHERE source = 'ws') FROM {table} WHERE open_time "
            sql = self._count_sqls[table] = (head + "BETWEEN ?1 AND ?2",
                                             head + "IN (SELECT value FROM json_each(?1))")
        return sql

    def _range_counts(self, table: str, interval: str, opens: list[int], lo: int, hi: int) -> tuple[int, int]:
        """(rows, ws rows) of `table` at the batch's open times' range (dense) or at exactly its
        open times (sparse)."""
        dense, sparse = self._count_sql(table)
        if (hi - lo) // intervals.nominal_ms(interval) + 1 <= DENSE_FACTOR * len(opens) + DENSE_SLACK:
            return next(self._cursor.execute(dense, (lo, hi)))
        return next(self._cursor.execute(sparse, ("[" + ",".join(map(str, sorted(set(opens)))) + "]",)))

    def _summary_before(self, table: str, interval: str, opens: list[int]) -> tuple | None:
        """What the summary needs to know before the upsert of candles with these open times
        (None: nothing to keep)."""
        if not opens or not self._tracked(table):
            return None
        lo, hi = min(opens), max(opens)
        return opens, lo, hi, self._range_counts(table, interval, opens, lo, hi)

    def _summary_after(self, table: str, symbol: str, interval: str, source: str, before: tuple | None) -> None:
        if before is None:
            return
        opens, lo, hi, (rows_before, ws_before) = before
        distinct = len(set(opens)) if len(opens) > 1 else 1
        if rows_before == 0:
            # Nothing was there: every distinct open time of the batch is now stored from it.
            rows_after = distinct
            ws_after = distinct if source == "ws" else 0
        elif interval in _EPOCH_GRID and (hi - lo) // intervals.nominal_ms(interval) + 1 == distinct:
            # The batch fills its range (every stored row of these intervals is on the epoch
            # grid, the writer checks it): each row there is now the batch's, or a better copy
            # kept. A ws candle replaces only ws; archive and REST leave no ws behind.
            rows_after = distinct
            ws_after = distinct - (rows_before - ws_before) if source == "ws" else 0
        else:
            rows_after, ws_after = self._range_counts(table, interval, opens, lo, hi)
        d_rows, d_ws = rows_after - rows_before, ws_after - ws_before
        if table in self._summarized:
            self._summary_add(table, symbol, interval, d_rows, d_ws, lo, hi)
            return
        s = self._summing
        if s.next_lo is None or lo >= s.next_lo:
            return  # not counted yet: the chunk walk will see it
        if hi >= s.next_lo:
            s.restart()  # across the counted edge: count this table again
            return
        s.rows += d_rows
        s.ws_rows += d_ws
        s.first_ms = lo if s.first_ms is None else min(s.first_ms, lo)
        s.last_ms = hi if s.last_ms is None else max(s.last_ms, hi)
        self._summing_touched = True

    def _summary_add(self, table: str, symbol: str, interval: str, d_rows: int, d_ws: int, lo: int, hi: int) -> None:
        """Add to the table's row; skipped when nothing changes (a REST re-check of a REST copy).
        First and last are remembered per table (forgotten at a rollback)."""
        span = self._spans.get(table)
        if span is None:
            span = self._spans[table] = next(self._cursor.execute(
                "SELECT first_ms, last_ms FROM meta_tables WHERE symbol = ? AND interval = ?", (symbol, interval)))
        first, last = span
        first = lo if first is None or lo < first else first
        last = hi if last is None or hi > last else last
        if d_rows or d_ws or (first, last) != span:
            self._cursor.execute(_ADD_SQL, (d_rows, d_ws, first, last, symbol, interval))
            self._spans[table] = (first, last)

    # -- tables without a summary ---------------------------------------------------------------
    def unsummarized(self) -> list[str]:
        """Kline tables of this file without a summary row (made before summaries existed)."""
        return sorted(t for t in self._known_tables if t not in self._summarized and parse_table_name(t))

    def summarize_step(self, deadline: float, clock) -> list[str]:
        """Sum unsummarised tables, chunk by chunk, until `clock() >= deadline` or none is left;
        outside any transaction (reads), each finished sum written in its own. Returns the
        tables finished in this call (for the log)."""
        finished = []
        while clock() < deadline:
            s = self._summing
            if s is None or s.table in self._summarized:
                if self._to_sum is None:
                    self._to_sum = self.unsummarized()[::-1]
                while self._to_sum and self._to_sum[-1] in self._summarized:
                    self._to_sum.pop()
                if not self._to_sum:
                    self._summing = None
                    self._to_sum = None
                    self.summaries_pending = bool(self.unsummarized())  # a written sum rolled back
                    return finished
                table = self._to_sum.pop()
                symbol, interval = parse_table_name(table)
                s = self._summing = _Summing(table, symbol, interval)
            if self._sum_chunk(s):
                with self.transaction():
                    self._cursor.execute(
                        "INSERT OR REPLACE INTO meta_tables (symbol, interval, rows, ws_rows, first_ms, last_ms) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (s.symbol, s.interval, s.rows, s.ws_rows, s.first_ms, s.last_ms))
                    self._summarized.add(s.table)
                    self._summarized_in_txn.add(s.table)
                self._summing = None
                finished.append(s.table)
        return finished

    def _sum_chunk(self, s: _Summing) -> bool:
        """Count one chunk of `s`'s table; True when every row is counted."""
        lo = -(2 ** 62) if s.next_lo is None else s.next_lo
        start = next(self._cursor.execute(
            f"SELECT open_time FROM {s.table} WHERE open_time >= ? ORDER BY open_time LIMIT 1", (lo,)), None)
        if start is None:
            if s.next_lo is None:
                s.next_lo = lo
            return True
        start = start[0]
        end = start + SUM_CHUNK_CANDLES * intervals.nominal_ms(s.interval)
        rows, ws, first, last = next(self._cursor.execute(
            f"SELECT count(*), count(*) FILTER (WHERE source = 'ws'), min(open_time), max(open_time) "
            f"FROM {s.table} WHERE open_time >= ?1 AND open_time < ?2", (start, end)))
        s.rows += rows
        s.ws_rows += ws
        s.first_ms = first if s.first_ms is None else min(s.first_ms, first)
        s.last_ms = last if s.last_ms is None else max(s.last_ms, last)
        s.next_lo = end
        return False

    # -- reading --------------------------------------------------------------------------------
    @contextmanager
    def read_snapshot(self) -> Iterator[None]:
        """Every read inside sees one committed state (a deferred read transaction), so the
        summaries, the holes and the gaps listed agree even while the writer commits."""
        self._cursor.execute("BEGIN")
        try:
            yield
        finally:
            if self.conn.in_transaction:
                self._cursor.execute("ROLLBACK")  # nothing was written

    def summaries(self) -> dict[str, Summary]:
        """table -> its summary row, for every row naming a valid table (empty on a file without
        the meta table, e.g. one no writer of this version has opened yet)."""
        if not self._scalar("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'meta_tables'"):
            return {}
        found = {}
        for row in self._cursor.execute(
                "SELECT symbol, interval, rows, ws_rows, first_ms, last_ms FROM meta_tables"):
            table = self._summary_table(row[0], row[1])
            if table:
                found[table] = Summary(*row)
        return found

    def count_table(self, symbol: str, interval: str) -> Summary:
        """A summary by counting the table itself: reads every row (tables without a summary
        row, `status --exact`)."""
        table = self._existing(symbol, interval)
        if table is None:
            return Summary(symbol, interval, 0, 0, None, None)
        rows, ws, first, last = next(self._cursor.execute(
            f"SELECT count(*), count(*) FILTER (WHERE source = 'ws'), min(open_time), max(open_time) FROM {table}"))
        return Summary(symbol, interval, rows, ws, first, last)

    def exchange_hole_rows(self) -> list[tuple[str, str, int, int]]:
        """Every confirmed exchange hole: (symbol, interval, start_ms, end_ms)."""
        return list(self._cursor.execute(
            "SELECT symbol, interval, start_ms, end_ms FROM meta_holes ORDER BY symbol, interval, start_ms"))

    def rows_in_ranges(self, symbol: str, interval: str, ranges: list[tuple[int, int]]) -> int:
        """Stored rows with open time inside any of `ranges` (disjoint): one key-range walk each."""
        table = self._existing(symbol, interval)
        if table is None or not ranges:
            return 0
        text = "[" + ",".join(f"[{a},{b}]" for a, b in ranges) + "]"
        return self._scalar(
            f"SELECT count(*) FROM json_each(?1) AS h JOIN {table} AS k "
            "ON k.open_time BETWEEN h.value ->> 0 AND h.value ->> 1", (text,))

