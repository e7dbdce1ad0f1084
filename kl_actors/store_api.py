"""The read API's SQL (apsw, read-only): a page of kline rows in the exchange's layout, the
symbols as last seen, the confirmed holes inside a span.

A part of `store.py` split off by idea (the queries one reader serves to clients); it only reads.
Table names come from `symbols.table_name` through `Store._existing`, as everywhere. Every query
is bounded by the request: a page is at most `limit` rows walked on the primary key, holes are
only those overlapping the page's span; nothing here scans a table.
"""

from __future__ import annotations

import apsw

from .config import DatabaseConfig
from .core.api_rules import SymbolRow
from .core.symbols import is_valid_symbol
from .store import VALUE_COLUMNS, Store

# The exchange's 12 fields: the stored 11, then its always-"0" `ignore`.
_ROW = ", ".join(("open_time", *VALUE_COLUMNS, "'0'"))


class ApiStore(Store):
    """One read-only connection for the API's thread."""

    _has_info: bool | None = None  # whether meta_symbols has `info_json` (learned once)

    @classmethod
    def open(cls, config: DatabaseConfig) -> ApiStore:
        return cls.open_readonly(config)

    def kline_rows(self, symbol: str, interval: str, lo_ms: int, hi_ms: int, limit: int,
                   newest: bool) -> list[tuple]:
        """At most `limit` rows with open time in [lo_ms, hi_ms], ascending: the oldest of them,
        or the newest when `newest`. Each row is the exchange's 12-element array."""
        if not is_valid_symbol(symbol):
            return []
        table = self._existing(symbol, interval)
        if table is None:
            return []
        order = "DESC" if newest else "ASC"
        rows = list(self._cursor.execute(
            f"SELECT {_ROW} FROM {table} WHERE open_time BETWEEN ?1 AND ?2 ORDER BY open_time {order} LIMIT ?3",
            (lo_ms, hi_ms, limit)))
        if newest:
            rows.reverse()
        return rows

    def has_table(self, symbol: str, interval: str) -> bool:
        return is_valid_symbol(symbol) and self._existing(symbol, interval) is not None

    def holes_between(self, symbol: str, interval: str, a_ms: int, b_ms: int) -> list[tuple[int, int]]:
        """Confirmed exchange holes overlapping [a_ms, b_ms]."""
        try:
            return list(self._cursor.execute(
                "SELECT start_ms, end_ms FROM meta_holes WHERE symbol = ?1 AND interval = ?2 "
                "AND start_ms <= ?4 AND end_ms >= ?3", (symbol, interval, a_ms, b_ms)))
        except apsw.SQLError:
            return []  # no meta tables yet (the writer has not made the file's schema)

    def symbol_rows(self) -> list[SymbolRow]:
        """Every symbol in `meta_symbols`, by name, with the exchange's entry when kept (a file
        from before the `info_json` column has none)."""
        try:
            if not self._has_info:
                columns = {row[1] for row in self._cursor.execute("PRAGMA table_info(meta_symbols)")}
                self._has_info = "info_json" in columns
            info = "coalesce(info_json, '')" if self._has_info else "''"
            return [SymbolRow(*row) for row in self._cursor.execute(
                f"SELECT symbol, coalesce(status, ''), coalesce(onboard_ms, 0), {info} FROM meta_symbols "
                "ORDER BY symbol")]
        except apsw.SQLError:
            return []

    def symbols_version(self) -> tuple:
        """Changes whenever `meta_symbols` does (a discovery recorded): cheap to ask every second."""
        try:
            return tuple(next(self._cursor.execute(
                "SELECT count(*), max(last_seen_ms) FROM meta_symbols")))
        except apsw.SQLError:
            return (0, None)
