"""Shared by the export tests: run `supervisor.py export` as a process, read the export with
DuckDB, sum the database with exact decimals, write kline rows straight into a database file."""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from kl_actors.config import DatabaseConfig
from kl_actors.core import intervals
from kl_actors.store import Store
from harness import ROOT, bulk_connection

# The README's query: hive_types so that a symbol of digits stays a string, union_by_name so that
# files of different decimal scales are widened, not cast to the first file's type.
DUCK_SOURCE = ("read_parquet('{out}/**/*.parquet', hive_partitioning = true, union_by_name = true, "
               "hive_types = {{'interval': VARCHAR, 'symbol': VARCHAR, 'year': INTEGER, 'month': INTEGER}})")


def run_export(db: Path, out: Path, *args: str, timeout: float = 600) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "export", "--db", str(db),
                           "--out", str(out), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stderr


def summary(err: str) -> dict[str, str]:
    """The fields of the run's `export_summary` line."""
    line = [ln for ln in err.splitlines() if "event=export_summary" in ln][-1]
    return dict(re.findall(r"(\w+)=(\S+)", line))


def duck_totals(out: Path, cast: bool = False) -> dict[tuple[str, str], tuple[int, Decimal]]:
    """(symbol, interval) -> (rows, sum of close) as DuckDB reads the export. `cast`: sum
    `close::DECIMAL(38,18)` (a column that mixes scales is strings)."""
    import duckdb

    close = "CAST(close AS DECIMAL(38, 18))" if cast else "close"
    with duckdb.connect() as con:
        return {(s, i): (n, total) for s, i, n, total in con.sql(
            f"SELECT symbol, interval, count(*), sum({close}) FROM {DUCK_SOURCE.format(out=out)} "
            "GROUP BY symbol, interval").fetchall()}


def sqlite_totals(db: Path, only: tuple[str, str] | None = None) -> dict[tuple[str, str], tuple[int, Decimal]]:
    """(symbol, interval) -> (rows, exact sum of close) of every kline table (or of `only`)."""
    store = Store.open_readonly(path=str(db))
    try:
        found = {}
        for symbol, by_interval in store.kline_tables().items():
            for interval in by_interval:
                if only is not None and (symbol, interval) != only:
                    continue
                rows = store.candles(symbol, interval)
                found[(symbol, interval)] = (len(rows), sum((Decimal(r[4]) for r in rows), Decimal(0)))
        return found
    finally:
        store.close()


def row(interval: str, open_ms: int, close: str = "100.10", volume: str = "12.500", trades: int = 7,
        quote: str = "1251.25000") -> tuple:
    """One kline row as the writer stores it (the exchange's 12 fields)."""
    return (open_ms, close, close, close, close, volume, intervals.close_time(interval, open_ms), quote,
            trades, volume, quote, "0")


def put(db: Path, symbol: str, interval: str, rows: list[tuple], source: str = "rest") -> None:
    """Upsert rows through the store's own writer path (its precedence rules included)."""
    store = Store.open_writer(DatabaseConfig(), str(db))
    try:
        with store.transaction():
            store.upsert_rows(symbol, interval, source, rows)
    finally:
        store.close()


def files(out: Path) -> dict[str, int]:
    """Partition folder (relative) -> inode of its data file."""
    return {str(p.parent.relative_to(out)): p.stat().st_ino for p in out.rglob("*.parquet")}


def fill(db: Path, symbols: tuple[str, ...], first_ms: int, count: int) -> None:
    """`count` 1m candles from `first_ms` in each symbol's table, made inside SQLite (a Python loop
    would take minutes) for the first and copied as they are into the others (~4x faster)."""
    store = Store.open_writer(DatabaseConfig(), str(db))
    try:
        tables = [store.ensure_table(symbol, "1m") for symbol in symbols]
    finally:
        store.close()
    with bulk_connection(db) as conn, conn:
        conn.execute(
            f"INSERT INTO {tables[0]} (open_time, open, high, low, close, volume, close_time, quote_volume, "
            "trades, taker_buy_volume, taker_buy_quote_volume, source) "
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 - 1) "
            "SELECT ?2 + i * 60000, printf('%.2f', 20000 + (i % 5000) * 0.01), printf('%.2f', 20010 + (i % 5000) * 0.01), "
            "printf('%.2f', 19990 + (i % 5000) * 0.01), printf('%.2f', 20001 + (i % 4999) * 0.01), "
            "printf('%.3f', (i % 997) * 1.001), ?2 + i * 60000 + 59999, printf('%.5f', (i % 997) * 20000.123), "
            "i % 3001, printf('%.3f', (i % 97) * 1.001), printf('%.5f', (i % 97) * 20000.123), 'rest' FROM n",
            (count, first_ms))
        for table in tables[1:]:
            conn.execute(f"INSERT INTO {table} SELECT * FROM {tables[0]}")
