"""Reading the kline and meta tables (a part of `Store`, by idea): which tables exist, first and
last open time, counts over a key range, the gaps inside a range, the stored candles, confirmed
exchange holes, symbols. Every query walks the primary key of one table (or a meta table); none
reads a whole table except `coverage` and `candles` asked for everything.

A mixin of `Store`: it uses the store's `_cursor`, `readonly` and `_known_tables`, never writes.
"""

from __future__ import annotations

from typing import NamedTuple

from .core import intervals, planner
from .core.symbols import parse_table_name, table_name

VALUE_COLUMNS = (
    "open", "high", "low", "close", "volume", "close_time", "quote_volume", "trades",
    "taker_buy_volume", "taker_buy_quote_volume",
)
COLUMNS = ("open_time", *VALUE_COLUMNS, "source")


class TableCoverage(NamedTuple):
    symbol: str
    interval: str
    table: str
    first_open_ms: int | None
    last_open_ms: int | None
    rows: int


class SymbolRecord(NamedTuple):
    symbol: str
    status: str
    onboard_ms: int
    first_seen_ms: int
    last_seen_ms: int


class Reading:
    """Mixin of `Store`: the read side."""

    # -- reading --------------------------------------------------------------------------------
    def _scalar(self, sql: str, bindings: tuple = ()) -> object:
        for row in self._cursor.execute(sql, bindings):
            return row[0]
        return None

    def _table_names(self) -> list[str]:
        return [r[0] for r in self._cursor.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table'")]

    def kline_tables(self) -> dict[str, dict[str, str]]:
        """symbol -> interval -> table, for every table whose name parses as a kline table."""
        found: dict[str, dict[str, str]] = {}
        names = self._table_names()
        if self.readonly:
            # Each later query then skips its own existence check: while the writer creates
            # tables, every query of a reader reloads the schema (~0.1 s at 8,000 tables).
            self._known_tables.update(names)
        for name in names:
            parsed = parse_table_name(name)
            if parsed is not None:
                symbol, interval = parsed
                found.setdefault(symbol, {})[interval] = name
        return found

    def _existing(self, symbol: str, interval: str) -> str | None:
        table = table_name(symbol, interval)
        if table in self._known_tables:
            return table
        exists = self._scalar(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (table,))
        if exists and self.readonly:
            self._known_tables.add(table)  # a committed table is never dropped
        return table if exists else None

    def last_open_ms(self, symbol: str, interval: str) -> int | None:
        table = self._existing(symbol, interval)
        return None if table is None else self._scalar(f"SELECT max(open_time) FROM {table}")

    def first_open_ms(self, symbol: str, interval: str) -> int | None:
        table = self._existing(symbol, interval)
        return None if table is None else self._scalar(f"SELECT min(open_time) FROM {table}")

    def count(self, symbol: str, interval: str) -> int:
        table = self._existing(symbol, interval)
        return 0 if table is None else self._scalar(f"SELECT count(*) FROM {table}")

    def candles(self, symbol: str, interval: str, start_ms: int | None = None,
                end_ms: int | None = None) -> list[tuple]:
        """Stored rows (all 12 columns, `source` last) with open time in [start_ms, end_ms]."""
        table = self._existing(symbol, interval)
        if table is None:
            return []
        lo = start_ms if start_ms is not None else -(2 ** 62)
        hi = end_ms if end_ms is not None else 2 ** 62
        return list(self._cursor.execute(
            f"SELECT {', '.join(COLUMNS)} FROM {table} WHERE open_time BETWEEN ? AND ? "
            "ORDER BY open_time", (lo, hi)))

    def coverage(self) -> list[TableCoverage]:
        """First, last open time and row count of every kline table, by symbol then interval."""
        result = []
        for symbol, by_interval in sorted(self.kline_tables().items()):
            for interval, table in sorted(by_interval.items(),
                                          key=lambda kv: intervals.INTERVALS.index(kv[0])):
                first, last, rows = next(self._cursor.execute(
                    f"SELECT min(open_time), max(open_time), count(*) FROM {table}"))
                result.append(TableCoverage(symbol, interval, table, first, last, rows))
        return result

    def exchange_holes(self, symbol: str, interval: str) -> list[tuple[int, int]]:
        """Confirmed exchange holes of (symbol, interval), [start_ms, end_ms], by start."""
        return [(s, e) for s, e in self._cursor.execute(
            "SELECT start_ms, end_ms FROM meta_holes WHERE symbol = ? AND interval = ? "
            "ORDER BY start_ms", (symbol, interval))]

    def first_last(self, symbol: str, interval: str) -> tuple[int | None, int | None]:
        """First and last stored open time (two primary-key lookups, whatever the table's size)."""
        table = self._existing(symbol, interval)
        if table is None:
            return None, None
        return (self._scalar(f"SELECT open_time FROM {table} ORDER BY open_time LIMIT 1"),
                self._scalar(f"SELECT open_time FROM {table} ORDER BY open_time DESC LIMIT 1"))

    def count_between(self, symbol: str, interval: str, first_ms: int, last_ms: int) -> int:
        """Rows with open time in [first_ms, last_ms]: a primary-key range walk, ~10x cheaper than
        listing the gaps, so a full range is proven complete without reading its rows."""
        table = self._existing(symbol, interval)
        if table is None:
            return 0
        return self._scalar(f"SELECT count(*) FROM {table} WHERE open_time BETWEEN ? AND ?",
                            (first_ms, last_ms))

    def gaps_between(self, symbol: str, interval: str, first_ms: int, last_ms: int) -> list[tuple[int, int]]:
        """Aligned open times missing in [first_ms, last_ms] (both aligned), as ranges, edges
        included: the caller chooses a range inside stored history."""
        table = self._existing(symbol, interval)
        if table is None:
            return [(first_ms, last_ms)]
        if interval == intervals.MONTH:
            gaps, expected = [], first_ms
            for (open_ms,) in self._cursor.execute(
                    f"SELECT open_time FROM {table} WHERE open_time BETWEEN ? AND ? ORDER BY open_time",
                    (first_ms, last_ms)):
                if open_ms > expected:
                    gaps.append((expected, intervals.prev_open(interval, open_ms)))
                expected = intervals.next_open(interval, open_ms)
            if expected <= last_ms:
                gaps.append((expected, last_ms))
            return gaps
        step_ms = intervals.nominal_ms(interval)
        low, high = next(self._cursor.execute(
            f"SELECT min(open_time), max(open_time) FROM {table} WHERE open_time BETWEEN ? AND ?",
            (first_ms, last_ms)))
        if low is None:
            return [(first_ms, last_ms)]
        gaps = [(first_ms, low - step_ms)] if low > first_ms else []
        gaps += [(a + step_ms, b - step_ms) for a, b in self._cursor.execute(
            f"SELECT open_time, next_open FROM (SELECT open_time, LEAD(open_time) OVER "
            f"(ORDER BY open_time) AS next_open FROM {table} WHERE open_time BETWEEN ? AND ?) "
            f"WHERE next_open - open_time > ?", (first_ms, last_ms, step_ms))]
        if high < last_ms:
            gaps.append((high + step_ms, last_ms))
        return gaps

    def holes(self, symbol: str, interval: str) -> list[tuple[int, int]]:
        """Ranges [first_missing, last_missing] of open times missing inside stored history,
        minus the exchange holes recorded in `meta_holes`."""
        first, last = self.first_last(symbol, interval)
        if last is None:
            return []
        return planner.minus_known(interval, self.gaps_between(symbol, interval, first, last),
                                   self.exchange_holes(symbol, interval))

    def symbols(self) -> list[SymbolRecord]:
        return [SymbolRecord(*row) for row in self._cursor.execute(
            "SELECT symbol, status, onboard_ms, first_seen_ms, last_seen_ms FROM meta_symbols "
            "ORDER BY symbol")]

    def schema_version(self) -> int | None:
        return self._scalar("SELECT max(version) FROM meta_schema")

    # -- reading for the Parquet export (export.py) ---------------------------------------------
    def range_stats(self, symbol: str, interval: str, first_ms: int,
                    last_ms: int) -> tuple[int, int | None, int | None]:
        """(rows, first open time, last open time) in [first_ms, last_ms]: one primary-key range
        walk, no row decoded."""
        table = self._existing(symbol, interval)
        if table is None:
            return 0, None, None
        return next(self._cursor.execute(
            f"SELECT count(*), min(open_time), max(open_time) FROM {table} WHERE open_time BETWEEN ? AND ?",
            (first_ms, last_ms)))
