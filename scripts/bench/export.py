"""Parquet export: `python scripts/bench.py export [--tables 5] [--rows 2000000]`.

Builds a database of `tables` 1m tables of `rows` candles each (made inside SQLite, as the
tests' large fixture), then times `supervisor.py export` as a process: the first run (every
month: rows/s, MB, bytes per candle), a run with nothing changed (only the per-month counts),
and a run after three new candles and one changed in the newest month of one table (that
month read and written). DuckDB then sums `close` over the whole export (its own time).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from export_support import DUCK_SOURCE, fill, put, row, run_export, summary

from kl_actors.core import export_plan as plan

MIN = 60_000


def run(tables: int = 5, rows: int = 2_000_000) -> None:
    work = Path(tempfile.mkdtemp(prefix="kl-bench-export-"))
    try:
        db, out = work / "db.sqlite", work / "out"
        start = plan.month_start_ms(2019, 1)
        symbols = [f"SYM{i}USDT" for i in range(tables)]
        t0 = time.monotonic()
        for symbol in symbols:
            fill(db, symbol, start, rows)
        print(f"database: {tables} x {rows} 1m candles, {db.stat().st_size / 1e6:.0f} MB, "
              f"made in {time.monotonic() - t0:.1f} s")
        for name, change in (("first", None), ("unchanged", None), ("one month changed", symbols[-1])):
            if change:
                last_open = start + (rows - 1) * MIN
                put(db, change, "1m", [row("1m", last_open + i * MIN) for i in range(1, 4)])
                put(db, change, "1m", [row("1m", last_open - 10 * MIN, close="1.00")])
            t0 = time.monotonic()
            code, err = run_export(db, out, timeout=3600)
            wall = time.monotonic() - t0
            if code != 0:
                raise SystemExit(err[-3000:])
            s = summary(err)
            rate = int(s["rows_read"]) / max(float(s["seconds"]), 1e-9)
            print(f"{name:>18}: {wall:7.2f} s wall (process), {float(s['seconds']):7.2f} s export; "
                  f"months written {s['written']} kept {s['kept']} checked {s['checked']}; rows read "
                  f"{s['rows_read']} ({rate:,.0f}/s); {s['mb']} MB written")
            if name == "first":
                print(f"{'':>18}  {float(s['mb']) * 1e6 / (tables * rows):.1f} bytes per candle on disk "
                      f"(SQLite: {db.stat().st_size / (tables * rows):.1f})")
        import duckdb

        t0 = time.monotonic()
        with duckdb.connect() as con:
            n, total = con.sql(f"SELECT count(*), sum(close) FROM {DUCK_SOURCE.format(out=out)}").fetchall()[0]
        print(f"DuckDB: count {n}, sum(close) {total} in {time.monotonic() - t0:.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
