"""The SQLite database: kline tables, meta tables, the upsert; reading is `store_read.py`'s part.

Owns every SQL statement of the project. Only the writer opens the file read-write
(`Store.open_writer`); every other process (scheduler, status command, users' tools) opens it with
`Store.open_readonly`, which SQLite itself enforces.

Kline tables are `k_<base>_<interval>` (see `symbols.table_name`, the only place a table name is
built; nothing from outside is ever quoted into SQL; a symbol outside `[A-Z0-9]+USDT` has the base
`x_<hex of its UTF-8>`). Values stay TEXT exactly as the exchange
sent them. A REST candle is authoritative: REST overwrites anything; an archive candle (a final candle from the
exchange's bulk files) overwrites a WebSocket one and an older archive one, never a REST one; a
WebSocket candle overwrites only a WebSocket one. The same batch applied twice leaves the table
unchanged.

Meta tables are prefixed `meta_` so they never parse as kline tables:
- `meta_schema(version)`: the schema version (2: `source` may be 'archive'; a version-1 file is
  upgraded in place at open by widening each kline table's CHECK, which no stored row can fail);
- `meta_symbols`: symbols with their exchange status, listing time, when we saw them,
  `table_base`, the part of their table names between `k_` and `_<interval>` (so a user can map
  `k_x_e5b881...` back to `币安人生USDT` in SQL), and `info_json`, the exchange's own
  exchangeInfo entry as last seen (at most `discovery.MAX_ENTRY_BYTES`; the read API serves it);
  both columns are added to older files by a guarded ALTER;
- `meta_holes`: ranges the exchange confirmed it has no candles for (maintenance), so the hole
  finder does not report them forever;
- `meta_tables`: per kline table its rows, WebSocket rows, first and last open time, kept in the
  same transaction as every upsert (`store_summary.py`), so `status` never counts rows.

No zmq, no clocks: callers pass `now` in.
"""

from __future__ import annotations

import itertools
import operator
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import apsw
from msgspec.structs import astuple

from .config import DatabaseConfig
from .messages import Candle, CandleColumns, SymbolInfo
from .core.symbols import is_valid_symbol, table_base, table_name
from .store_read import COLUMNS, VALUE_COLUMNS, Reading, SymbolRecord, TableCoverage  # noqa: F401 - part of this module's API
from .store_summary import Summaries, Summary  # noqa: F401 - Summary is part of this module's API

SCHEMA_VERSION = 2
# Precedence when two sources hold the same candle: rest > archive > ws (see `_upsert_sql`).
SOURCES = ("rest", "ws", "archive")
_CHECK_V1 = "CHECK (source IN ('rest','ws'))"
_CHECK_V2 = "CHECK (source IN ('rest','ws','archive'))"
STATEMENT_CACHE_SIZE = 512
# Rows per upsert statement for a large batch, largest first (the rest go one by one): binding
# and stepping one statement per row cost about as much as SQLite's own work; 100 rows a
# statement halved the upsert's CPU (3.4 -> 1.6 µs a row, scripts/bench `archive`).
MULTI_ROW_SIZES = (100, 10)
ROW_FIELDS = 12  # parameters of one candle: `astuple(Candle)`


_KLINE_TABLE_SQL = """CREATE TABLE IF NOT EXISTS {table} (
    open_time INTEGER PRIMARY KEY,
    open TEXT NOT NULL,
    high TEXT NOT NULL,
    low TEXT NOT NULL,
    close TEXT NOT NULL,
    volume TEXT NOT NULL,
    close_time INTEGER NOT NULL,
    quote_volume TEXT NOT NULL,
    trades INTEGER NOT NULL,
    taker_buy_volume TEXT NOT NULL,
    taker_buy_quote_volume TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('rest','ws','archive'))
)"""

_META_SQL = """
CREATE TABLE IF NOT EXISTS meta_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta_symbols (
    symbol TEXT PRIMARY KEY,
    status TEXT,
    onboard_ms INTEGER,
    first_seen_ms INTEGER,
    last_seen_ms INTEGER,
    table_base TEXT,
    info_json TEXT
);
CREATE TABLE IF NOT EXISTS meta_holes (
    symbol TEXT,
    interval TEXT,
    start_ms INTEGER,
    end_ms INTEGER,
    confirmed_at_ms INTEGER,
    PRIMARY KEY (symbol, interval, start_ms)
);
"""


class StoreError(RuntimeError):
    """The database cannot be opened or used as asked; the message says which file and why."""


def _upsert_sql(table: str, source: str, rows: int = 1) -> str:
    """The upsert of `rows` candles for one table; the source is a literal (one of SOURCES,
    checked by the caller).

    Parameters are each candle's 12 fields as they are (`msgspec.structs.astuple`), so no per-row
    Python work is needed to drop the exchange's unused `ignore` field: it is bound as the 12th
    and only appears in a `coalesce` that always yields the source literal. Several rows in one
    statement (a multi-row VALUES) are applied in order, exactly as that many single-row
    statements would be (a later duplicate open time meets the earlier one as a conflict).
    """
    one = "(" + "?, " * 11 + f"coalesce('{source}', ?))"
    updates = ", ".join(f"{c}=excluded.{c}" for c in (*VALUE_COLUMNS, "source"))
    return (
        f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES {', '.join([one] * rows)} "
        f"ON CONFLICT(open_time) DO UPDATE SET {updates} "
        f"WHERE excluded.source = 'rest' OR {table}.source = 'ws' OR {table}.source = excluded.source"
    )


_OPEN = operator.itemgetter(0)


def _flat(rows: Sequence[tuple]) -> list:
    """The rows' parameters one after another; each row must have ROW_FIELDS of them."""
    if set(map(len, rows)) - {ROW_FIELDS}:
        raise ValueError(f"upsert rows must have {ROW_FIELDS} fields each")
    return list(itertools.chain.from_iterable(rows))


def candle_rows(candles: Iterable[Candle]) -> list[tuple]:
    """Candles -> upsert parameter tuples: the exchange's 12-element rows."""
    return list(map(astuple, candles))


# SQLite result codes of an open that cannot succeed however long we wait.
_PERMANENT_OPEN_ERRORS = (apsw.ReadOnlyError, apsw.CantOpenError, apsw.PermissionsError,
                          apsw.NotADBError, apsw.CorruptError, apsw.AuthError)


def _connect(path: str, config: DatabaseConfig, readonly: bool,
             busy_timeout_ms: int | None = None, immutable: bool = False) -> apsw.Connection:
    if readonly:
        if not os.path.exists(path):
            raise StoreError(f"database {path!r} does not exist (nothing stored yet?)")
        flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
        uri = f"file:{os.path.abspath(path)}?mode=ro" + ("&immutable=1" if immutable else "")
    else:
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot open database {path!r}: {exc.strerror} creating {parent!r}") from exc
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        uri = path
    try:
        conn = apsw.Connection(uri, flags=flags, statementcachesize=STATEMENT_CACHE_SIZE)
    except apsw.Error as exc:
        raise StoreError(f"cannot open database {path!r}: {exc}") from exc
    conn.setbusytimeout(config.busy_timeout_ms if busy_timeout_ms is None else busy_timeout_ms)
    cursor = conn.cursor()
    try:
        if not readonly:
            # SQLite opens a file it may not write read-only without a word; say so now, not at
            # the first COMMIT.
            if conn.readonly("main"):
                raise apsw.ReadOnlyError("the file is read-only for this process")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={config.synchronous}")
            # After a checkpoint restarts the WAL, the file is cut back to this size (an outside
            # reader can make it grow meanwhile; it must not stay that big for ever).
            cursor.execute(f"PRAGMA journal_size_limit={int(config.wal_limit_mib) * 1024 * 1024}")
        # cache_size negative = KiB; these values are ints from the checked config.
        cursor.execute(f"PRAGMA cache_size=-{int(config.cache_size_kib)}")
        cursor.execute(f"PRAGMA mmap_size={int(config.mmap_size_mib) * 1024 * 1024}")
        cursor.execute("PRAGMA temp_store=MEMORY")
    except _PERMANENT_OPEN_ERRORS as exc:
        conn.close()
        raise StoreError(f"cannot open database {path!r}: {_open_reason(exc)}") from exc
    except BaseException:
        conn.close()  # busy, I/O error: the caller may try again with a fresh connection
        raise
    return conn


def _open_reason(exc: apsw.Error) -> str:
    if isinstance(exc, apsw.ReadOnlyError):
        return f"read-only ({exc})"
    return f"{type(exc).__name__}: {exc}"


class Store(Summaries, Reading):
    """One connection to the kline database, read-write (the writer) or read-only (all others)."""

    def __init__(self, conn: apsw.Connection, readonly: bool) -> None:
        self.conn = conn
        self.readonly = readonly
        self.busy_timeout_ms = 0  # the writer's, restored after a checkpoint's own
        self._cursor = conn.cursor()
        self._known_tables: set[str] = set()
        self._created_in_txn: set[str] = set()
        self._sql: dict[tuple[str, str, int], str] = {}
        self._summary_init()

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open_writer(cls, config: DatabaseConfig, path: str | None = None,
                    busy_timeout_ms: int | None = None) -> Store:
        """The read-write connection with the schema in place.

        Raises StoreError when the file can never be written as it is (read-only, not a
        database, cannot be created), and apsw.BusyError when another process holds the write
        lock for longer than the busy timeout: the caller may try again.
        """
        busy_timeout_ms = config.busy_timeout_ms if busy_timeout_ms is None else busy_timeout_ms
        store = cls(_connect(path or config.path, config, readonly=False,
                             busy_timeout_ms=busy_timeout_ms), readonly=False)
        store.busy_timeout_ms = busy_timeout_ms
        try:
            store._init_schema()
        except _PERMANENT_OPEN_ERRORS as exc:
            store.close()
            raise StoreError(f"cannot open database {path or config.path!r}: {_open_reason(exc)}") from exc
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open_readonly(cls, config: DatabaseConfig | None = None, path: str | None = None) -> Store:
        config = config or DatabaseConfig()
        path = path or config.path
        try:
            return cls(_connect(path, config, readonly=True), readonly=True)
        except StoreError as exc:
            # A WAL file needs its `-shm` beside it, which a read-only folder cannot hold. With no
            # `-wal` there and the folder read-only, no writer has the file open or can open it:
            # it cannot change, and SQLite may read it as immutable (a copy on read-only media).
            directory = os.path.dirname(os.path.abspath(path))
            if (not isinstance(exc.__cause__, apsw.CantOpenError) or os.path.exists(path + "-wal")
                    or os.access(directory, os.W_OK)):
                raise
            return cls(_connect(path, config, readonly=True, immutable=True), readonly=True)

    def close(self) -> None:
        self.conn.close()

    def _init_schema(self) -> None:
        with self.transaction():
            self._cursor.execute(_META_SQL)
            if self._scalar("SELECT count(*) FROM meta_schema") == 0:
                self._cursor.execute("INSERT INTO meta_schema (version) VALUES (?)", (SCHEMA_VERSION,))
            elif self._scalar("SELECT max(version) FROM meta_schema") < 2:
                self._widen_source_check()
            columns = {row[1] for row in self._cursor.execute("PRAGMA table_info(meta_symbols)")}
            if "table_base" not in columns:  # a file made before the column existed
                self._cursor.execute("ALTER TABLE meta_symbols ADD COLUMN table_base TEXT")
            if "info_json" not in columns:  # made before the read API kept the exchange's entry
                self._cursor.execute("ALTER TABLE meta_symbols ADD COLUMN info_json TEXT")
            self._summary_schema()
        self._known_tables = set(self._table_names())

    def _widen_source_check(self) -> None:
        """Version 1 -> 2 inside the open transaction: let `source` be 'archive'.

        A wider CHECK accepts every stored row, so SQLite's documented in-place edit of the
        schema text is safe (no table rebuild, which would take minutes on a large file).
        """
        version = self._scalar("PRAGMA schema_version")
        self.conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 0)
        self._cursor.execute("PRAGMA writable_schema=ON")
        try:
            self._cursor.execute(
                "UPDATE sqlite_schema SET sql = replace(sql, ?, ?) WHERE type = 'table' AND name GLOB 'k_*'",
                (_CHECK_V1, _CHECK_V2))
            self._cursor.execute(f"PRAGMA schema_version={int(version) + 1}")
        finally:
            self._cursor.execute("PRAGMA writable_schema=OFF")
        self._cursor.execute("UPDATE meta_schema SET version = ?", (SCHEMA_VERSION,))

    # -- the WAL --------------------------------------------------------------------------------
    def wal_bytes(self) -> int:
        """Size of the `-wal` file now (0 when there is none)."""
        try:
            return os.path.getsize(self.conn.filename_wal)
        except OSError:
            return 0

    def checkpoint(self, busy_timeout_ms: int) -> bool:
        """Copy the WAL into the database and, if no reader still uses it, truncate it to zero.

        PASSIVE first: it never waits and copies what every reader allows. Only when that left
        nothing behind is TRUNCATE tried, waiting at most `busy_timeout_ms` for readers of the
        WAL to finish. Returns True if the WAL was truncated.
        """
        frames, copied = self.conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
        if frames != copied or frames <= 0:
            return False
        self.conn.setbusytimeout(busy_timeout_ms)
        try:
            self.conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
            return True
        except apsw.BusyError:
            return False
        finally:
            self.conn.setbusytimeout(self.busy_timeout_ms)

    # -- writing --------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """`BEGIN IMMEDIATE` .. `COMMIT`; `ROLLBACK` on any exception (also a failed COMMIT)."""
        self._cursor.execute("BEGIN IMMEDIATE")
        self._created_in_txn.clear()
        self._summary_begin()
        try:
            yield
            self._cursor.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        finally:
            self._created_in_txn.clear()
            self._summary_begin()

    def _rollback(self) -> None:
        # A table created in the rolled-back transaction no longer exists.
        self._known_tables -= self._created_in_txn
        self._sql = {k: v for k, v in self._sql.items() if k[0] not in self._created_in_txn}
        self._summary_rollback()
        if self.conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
            try:
                self._cursor.execute("ROLLBACK")
            except apsw.Error:
                pass  # The original error is what the caller must see.

    def ensure_table(self, symbol: str, interval: str) -> str:
        """Create the kline table of (symbol, interval) if needed; returns its name."""
        table = table_name(symbol, interval)
        if table not in self._known_tables:
            self._cursor.execute(_KLINE_TABLE_SQL.format(table=table))
            self._known_tables.add(table)
            if self.conn.in_transaction:
                self._created_in_txn.add(table)
            self._summary_new_table(table, symbol, interval)
        return table

    def _statement(self, symbol: str, interval: str, source: str) -> str:
        """The table of (symbol, interval), made if needed, after checking `source`."""
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}")
        return self.ensure_table(symbol, interval)

    def _upsert_sql(self, table: str, source: str, rows: int) -> str:
        key = (table, source, rows)
        sql = self._sql.get(key)
        if sql is None:
            sql = self._sql[key] = _upsert_sql(table, source, rows)
        return sql

    def _execute_upsert(self, table: str, source: str, flat: list, returning: str = "") -> Iterator[tuple]:
        """Run the upsert over the rows whose ROW_FIELDS parameters follow one another in
        `flat`: statements of MULTI_ROW_SIZES rows, then one by one, in order. The cursor's rows
        (of `returning`) from all of them."""
        if len(flat) % ROW_FIELDS:
            raise ValueError(f"upsert rows must have {ROW_FIELDS} fields each")
        done = 0
        results = []
        for size in (*MULTI_ROW_SIZES, 1):
            width = size * ROW_FIELDS
            whole = (len(flat) - done) // width * width
            if whole:
                results.append(self._cursor.executemany(
                    self._upsert_sql(table, source, size) + returning,
                    [flat[i:i + width] for i in range(done, done + whole, width)]))
                if returning:
                    results[-1] = list(results[-1])  # the next statement resets the cursor
                done += whole
        return itertools.chain.from_iterable(results)

    def upsert_rows(self, symbol: str, interval: str, source: str, rows: Sequence[tuple]) -> int:
        """Upsert parameter tuples (see `candle_rows`); returns the number of rows written."""
        table = self._statement(symbol, interval, source)
        return self._upsert(table, symbol, interval, source, list(map(_OPEN, rows)), _flat(rows))

    def upsert_columns(self, symbol: str, interval: str, source: str, columns: CandleColumns) -> int:
        """Upsert candles given as columns (checked equal in length by the caller, as
        `batches.accept_columns` does); returns the number of rows written."""
        table = self._statement(symbol, interval, source)
        # Row by row with `ignore` as "0" (only ever bound into the coalesce): the flat
        # parameters straight from the columns, no tuple per candle kept.
        flat = list(itertools.chain.from_iterable(zip(*columns.lists(), itertools.repeat("0"))))
        if len(flat) != len(columns) * ROW_FIELDS:
            raise ValueError("candle columns of unequal lengths")
        return self._upsert(table, symbol, interval, source, columns.open_time_ms, flat)

    def _upsert(self, table: str, symbol: str, interval: str, source: str, opens: list[int], flat: list) -> int:
        if not opens:
            return 0
        summary = self._summary_before(table, interval, opens)
        before = self.conn.total_changes()
        self._execute_upsert(table, source, flat)
        written = self.conn.total_changes() - before
        self._summary_after(table, symbol, interval, source, summary)
        return written

    def upsert(self, symbol: str, interval: str, source: str, candles: Iterable[Candle]) -> int:
        """Insert or update candles; returns how many rows were written (inserted or replaced).

        A WebSocket candle whose open time already holds a REST candle is not written and not
        counted.
        """
        return self.upsert_rows(symbol, interval, source, candle_rows(candles))

    def upsert_stored(self, symbol: str, interval: str, source: str,
                      candles: Iterable[Candle]) -> set[int]:
        """Like `upsert`, but returns the open times actually written (via RETURNING)."""
        return self.upsert_rows_stored(symbol, interval, source, candle_rows(candles))

    def upsert_rows_stored(self, symbol: str, interval: str, source: str,
                           rows: Sequence[tuple]) -> set[int]:
        """`upsert_rows` returning the open times actually written (via RETURNING)."""
        table = self._statement(symbol, interval, source)
        if not rows:
            return set()
        summary = self._summary_before(table, interval, list(map(_OPEN, rows)))
        stored = {row[0] for row in self._execute_upsert(table, source, _flat(rows), " RETURNING open_time")}
        self._summary_after(table, symbol, interval, source, summary)
        return stored

    def record_symbols(self, symbols: Iterable[SymbolInfo], seen_at_ms: int) -> None:
        """Record symbols; one that cannot name a table (discovery reports those) is left out."""
        rows = [(s.symbol, s.status, s.onboard_ms, seen_at_ms, table_base(s.symbol), s.info_json)
                for s in symbols if is_valid_symbol(s.symbol)]
        # An entry not sent (too large, or an older sender) keeps the one last seen.
        self._cursor.executemany(
            "INSERT INTO meta_symbols (symbol, status, onboard_ms, first_seen_ms, last_seen_ms, table_base, info_json) "
            "VALUES (?1, ?2, ?3, ?4, ?4, ?5, nullif(?6, '')) ON CONFLICT(symbol) DO UPDATE SET status=excluded.status, "
            "onboard_ms=excluded.onboard_ms, last_seen_ms=max(last_seen_ms, excluded.last_seen_ms), "
            "table_base=excluded.table_base, info_json=coalesce(excluded.info_json, info_json)", rows)

    def record_hole(self, symbol: str, interval: str, start_ms: int, end_ms: int, now_ms: int) -> None:
        """Record a confirmed exchange hole [start_ms, end_ms] (open times, both inclusive)."""
        table_name(symbol, interval)  # validates both
        if end_ms < start_ms:
            raise ValueError(f"hole end {end_ms} before start {start_ms}")
        self._cursor.execute(
            "INSERT INTO meta_holes (symbol, interval, start_ms, end_ms, confirmed_at_ms) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(symbol, interval, start_ms) DO UPDATE SET "
            "end_ms=excluded.end_ms, confirmed_at_ms=excluded.confirmed_at_ms",
            (symbol, interval, start_ms, end_ms, now_ms))
