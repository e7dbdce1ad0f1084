"""`python supervisor.py export`: the database as Hive-partitioned Parquet files, kept up to date.

`OUT/interval=1m/symbol=BTCUSDT/year=2026/month=11/data.parquet`, one file per table and calendar
month (UTC, by open time), Zstd, one row per candle: `open_time`, `close_time` as UTC timestamps
(ms), prices and volumes as Arrow decimal128 at the scale their strings have in that month (the
larger where they mix; strings only past 38 digits, see `core/export_plan.decimal_type`),
`trades` int64, `source` string. `interval` and `symbol` are only in the path.

Owns the export folder: the files, `_kl_export_state.json` (one fingerprint per written month,
`core/export_plan`), `_kl_tmp/` (files being written) and `_kl_export.lock` (one export per
folder). A second run rewrites only the months whose candles changed (the rule is in
`core/export_plan`). Each file is written in `_kl_tmp/`, synced, and renamed into its partition,
so a reader sees the old file or the new one, never half of one; the state is saved after the
renames it describes (every few seconds and at the end), so a crash leaves at worst a month
rewritten again by the next run.

Never writes the database: it is opened read-only (`Store.open_readonly`, enforced by SQLite),
never through the writer, and needs no running service.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import apsw
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import config as cfg
from .core import intervals as ivl
from .core import export_plan as plan
from .core.export_plan import Action
from .locks import PidLock, StartError
from .log import Logger
from .store import COLUMNS, Store, StoreError

TMP_DIR = "_kl_tmp"
LOCK_FILE = "_kl_export.lock"
PROGRESS_S = 2.0
SAVE_STATE_S = 5.0
DECIMAL_COLUMNS = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume",
                   "taker_buy_quote_volume")
_TIMESTAMP = pa.timestamp("ms", tz="UTC")


@dataclass
class Report:
    """What one export did (also logged as `export_summary`)."""
    tables: int = 0
    months_total: int = 0
    written: list[str] = field(default_factory=list)   # partition folders, relative to OUT
    removed: list[str] = field(default_factory=list)
    checked: int = 0        # read and hashed (may change in place)
    unchanged: int = 0      # of those, equal to the file: not written
    kept: int = 0           # not read at all
    rows_written: int = 0
    rows_read: int = 0      # every row fetched from the database (written or hashed)
    bytes_written: int = 0
    seconds: float = 0.0


@dataclass
class _Work:
    symbol: str
    interval: str
    month: tuple[int, int]
    action: Action
    reason: str
    rows: int


# -- one month as an Arrow table ------------------------------------------------------------------
def _decimal_column(values: list[str]) -> tuple[pa.Array, str]:
    """A decimal128 column at the scale of the strings (the largest where they mix), or the
    strings themselves past 38 digits; the second value says what was unusual ('' if nothing)."""
    strings = pa.array(values, pa.string())
    dot = pc.find_substring(strings, ".")
    length = pc.binary_length(strings)
    has_dot = pc.greater_equal(dot, 0)
    scale = pc.min_max(pc.if_else(has_dot, pc.subtract(pc.subtract(length, dot), 1), 0)).as_py()
    integer_digits = pc.max(pc.if_else(has_dot, dot, length)).as_py()
    chosen = plan.decimal_type(scale["min"], scale["max"], integer_digits)
    if chosen is None:
        return strings, "too_many_digits"
    try:
        # Arrow parses the decimal text itself (never through a float), and widens a smaller
        # scale without loss: exact.
        column = strings.cast(pa.decimal128(*chosen))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return strings, "not_decimal"
    return column, f"mixed_scales_{scale['min']}_{scale['max']}" if scale["min"] != scale["max"] else ""


def arrow_table(rows: list[tuple]) -> tuple[pa.Table, dict[str, str]]:
    """A month's stored rows (`Store.candles`: COLUMNS order, sorted by open time) as the file's
    table; second value: column -> what was unusual (mixed scales, strings kept)."""
    columns = dict(zip(COLUMNS, zip(*rows)))
    arrays: dict[str, pa.Array] = {}
    unusual: dict[str, str] = {}
    for name in COLUMNS:
        values = list(columns[name])
        if name in ("open_time", "close_time"):
            arrays[name] = pa.array(values, pa.int64()).cast(_TIMESTAMP)
        elif name == "trades":
            arrays[name] = pa.array(values, pa.int64())
        elif name == "source":
            arrays[name] = pa.array(values, pa.string())
        else:
            arrays[name], why = _decimal_column(values)
            if why:
                unusual[name] = why
    return pa.table(arrays), unusual


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the export ---------------------------------------------------------------------------------
class Exporter:
    """One export run over an open read-only store into `out_dir`."""

    def __init__(self, store: Store, out_dir: str | Path, log: Logger, database: str = "",
                 clock=time.time, monotonic=time.monotonic) -> None:
        self.store = store
        self.out = Path(out_dir)
        self.log = log
        self.database = database
        self.clock = clock
        self.monotonic = monotonic
        self.state = plan.ExportState(database=database)
        self._tmp_seq = 0

    # state ---------------------------------------------------------------------------------------
    def load_state(self) -> None:
        path = self.out / plan.STATE_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        try:
            state = plan.decode_state(data)
        except plan.ExportError as exc:
            self.log.warning("export_state_reset", path=str(path), reason=str(exc)[:200],
                             action="every month is written again")
            return
        if self.database and state.database and state.database != self.database:
            self.log.warning("export_state_reset", path=str(path), reason=f"made from {state.database}",
                             action="every month is written again")
            return
        self.state = state

    def save_state(self) -> None:
        path = self.out / plan.STATE_FILE
        tmp = self.out / TMP_DIR / (plan.STATE_FILE + ".tmp")
        tmp.write_bytes(plan.encode_state(self.state))
        _fsync(tmp)
        os.replace(tmp, path)

    # planning --------------------------------------------------------------------------------------
    def _file(self, symbol: str, interval: str, month: tuple[int, int]) -> Path:
        return self.out / plan.partition_dir(interval, symbol, *month) / plan.DATA_FILE

    def _file_ok(self, symbol: str, interval: str, month: tuple[int, int], stamp: plan.MonthStamp | None) -> bool:
        if stamp is None:
            return False
        try:
            return self._file(symbol, interval, month).stat().st_size == stamp.file_bytes
        except OSError:
            return False

    def plan_months(self, tables: list[tuple[str, str]], since_ms: int | None, full: bool) -> list[_Work]:
        """Every month in scope with what to do; one primary-key range count per month."""
        work = []
        for symbol, interval in tables:
            stamps = self.state.tables.get(plan.table_key(symbol, interval), {})
            first, last = self.store.first_last(symbol, interval)
            months = set(plan.months_between(first, last)) if first is not None else set()
            months |= {plan.parse_month_key(k) for k in stamps}
            for month in sorted(months):
                lo, hi = plan.month_bounds(*month)
                if since_ms is not None and hi < since_ms:
                    continue
                stamp = stamps.get(plan.month_key(*month))
                rows, first_open, last_open = self.store.range_stats(symbol, interval, lo, hi)
                action, reason = plan.decide(stamp, rows, first_open, last_open,
                                             self._file_ok(symbol, interval, month, stamp), full)
                if reason != "empty":  # a month inside the table's span without candles: no file
                    work.append(_Work(symbol, interval, month, action, reason, rows))
        return work

    # doing ---------------------------------------------------------------------------------------
    def _write(self, item: _Work, rows: list[tuple], digest: str | None, report: Report) -> None:
        table, unusual = arrow_table(rows)
        for column, why in unusual.items():
            if why.startswith("mixed_scales"):  # exact at the larger scale: worth a line, not a warning
                self.log.info("export_scales_mixed", symbol=item.symbol, interval=item.interval,
                              month=plan.month_key(*item.month), column=column,
                              scales=why.removeprefix("mixed_scales_").replace("_", ".."),
                              action="written at the larger scale")
            else:
                self.log.warning("export_column_strings", symbol=item.symbol, interval=item.interval,
                                 month=plan.month_key(*item.month), column=column, reason=why,
                                 action="written as the stored strings")
        self._tmp_seq += 1
        tmp = self.out / TMP_DIR / f"{os.getpid()}-{self._tmp_seq}.parquet.tmp"
        pq.write_table(table, tmp, compression="zstd")
        _fsync(tmp)
        final = self._file(item.symbol, item.interval, item.month)
        final.parent.mkdir(parents=True, exist_ok=True)
        size = tmp.stat().st_size
        os.replace(tmp, final)
        ws_rows = sum(1 for r in rows if r[-1] == "ws")
        self.state.tables.setdefault(plan.table_key(item.symbol, item.interval), {})[
            plan.month_key(*item.month)] = plan.stamp_for(rows, ws_rows, size, int(self.clock() * 1000), digest)
        report.written.append(plan.partition_dir(item.interval, item.symbol, *item.month))
        report.rows_written += len(rows)
        report.bytes_written += size

    def _remove(self, item: _Work, report: Report) -> None:
        try:
            self._file(item.symbol, item.interval, item.month).unlink()
        except FileNotFoundError:
            pass
        stamps = self.state.tables.get(plan.table_key(item.symbol, item.interval), {})
        stamps.pop(plan.month_key(*item.month), None)
        if not stamps:
            self.state.tables.pop(plan.table_key(item.symbol, item.interval), None)
        report.removed.append(plan.partition_dir(item.interval, item.symbol, *item.month))

    def _do(self, item: _Work, report: Report) -> None:
        if item.action is Action.REMOVE:
            self._remove(item, report)
            return
        lo, hi = plan.month_bounds(*item.month)
        rows = self.store.candles(item.symbol, item.interval, lo, hi)
        report.rows_read += len(rows)
        if not rows:  # emptied since it was planned (a hand edit): as if planned so
            self._remove(item, report)
            return
        digest = None
        if item.action is Action.CHECK:
            report.checked += 1
            key, month = plan.table_key(item.symbol, item.interval), plan.month_key(*item.month)
            stamp = self.state.tables[key][month]
            digest = plan.content_digest(rows)
            if digest == stamp.digest and len(rows) == stamp.rows:
                self.state.tables[key][month] = plan.checked(stamp, int(self.clock() * 1000))
                report.unchanged += 1
                return
        self._write(item, rows, digest, report)

    def run(self, tables: list[tuple[str, str]], since_ms: int | None = None, full: bool = False) -> Report:
        started = self.monotonic()
        report = Report(tables=len(tables))
        (self.out / TMP_DIR).mkdir(parents=True, exist_ok=True)
        for leftover in (self.out / TMP_DIR).glob("*.tmp"):  # a killed run's half-written files
            leftover.unlink(missing_ok=True)
        self.load_state()
        work = self.plan_months(tables, since_ms, full)
        todo = [w for w in work if w.action is not Action.KEEP]
        report.months_total = len(work)
        report.kept = len(work) - len(todo)
        rows_total = sum(w.rows for w in todo if w.action is not Action.REMOVE)
        counts = {a.value: sum(1 for w in work if w.action is a) for a in Action}
        self.log.info("export_started", out=str(self.out), tables=len(tables), months=len(work),
                      **{f"months_{k}": v for k, v in counts.items()}, rows_to_read=rows_total,
                      since_ms=since_ms if since_ms is not None else "none", full=full)
        next_progress = started + PROGRESS_S
        next_save = started + SAVE_STATE_S
        tables_left = {(w.symbol, w.interval) for w in todo}
        done_tables: set[tuple[str, str]] = set()
        try:
            for index, item in enumerate(todo):
                self._do(item, report)
                following = todo[index + 1] if index + 1 < len(todo) else None
                if following is None or (following.symbol, following.interval) != (item.symbol, item.interval):
                    done_tables.add((item.symbol, item.interval))
                now = self.monotonic()
                if now >= next_save:
                    self.save_state()
                    next_save = now + SAVE_STATE_S
                if now >= next_progress:
                    self._progress(report, index + 1, len(todo), rows_total, len(done_tables),
                                   len(tables_left), now - started)
                    next_progress = now + PROGRESS_S
        finally:
            self.save_state()
        report.seconds = round(self.monotonic() - started, 3)
        self._progress(report, len(todo), len(todo), rows_total, len(done_tables), len(tables_left),
                       report.seconds)
        self.log.info("export_summary", tables=report.tables, months=report.months_total,
                      written=len(report.written), checked=report.checked, unchanged=report.unchanged,
                      kept=report.kept, removed=len(report.removed), rows_written=report.rows_written,
                      rows_read=report.rows_read, mb=round(report.bytes_written / 1e6, 3),
                      seconds=report.seconds)
        return report

    def _progress(self, report: Report, done: int, total: int, rows_total: int, tables_done: int,
                  tables_total: int, elapsed: float) -> None:
        rate = report.rows_read / max(elapsed, 1e-3)
        left = rows_total - report.rows_read
        self.log.info("progress", months_done=done, months_total=total, tables_done=tables_done,
                      tables_total=tables_total, rows=report.rows_read, rows_total=rows_total,
                      rows_per_s=round(rate, 1), mb=round(report.bytes_written / 1e6, 3),
                      eta_s=round(left / rate, 1) if rate > 0 and left > 0 else (0 if left <= 0 else -1))


# -- the command ----------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="supervisor.py export",
        description="Write the database as Hive-partitioned Parquet files (interval=/symbol=/year=/month=), "
                    "rewriting only the months that changed since the last export into OUT.")
    p.add_argument("--config", metavar="FILE", help="TOML config whose [database] is read (default conf/default.toml)")
    p.add_argument("--db", metavar="PATH", help="SQLite database file (overrides the config's)")
    p.add_argument("--out", metavar="DIR", required=True, help="export folder (created if absent)")
    p.add_argument("--symbols", metavar="SYMBOL", nargs="+", help="only these symbols (space- or comma-separated)")
    p.add_argument("--intervals", metavar="INTERVAL", nargs="+", help="only these intervals, e.g. 1m 1h or 1m,1h")
    p.add_argument("--since", metavar="WHEN", help="only months from the one holding WHEN (Unix ms or UTC date, e.g. 2026-11)")
    p.add_argument("--full", action="store_true", help="rewrite every month in scope, changed or not")
    return p


def _split(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [v.strip() for text in values for v in text.split(",") if v.strip()]


def _case_insensitive(out: Path) -> bool:
    probe = out / TMP_DIR / "case_probe.tmp"
    probe.touch()
    try:
        return (out / TMP_DIR / "CASE_PROBE.tmp").exists()
    finally:
        probe.unlink(missing_ok=True)


def select_tables(found: dict[str, dict[str, str]], symbols: list[str] | None,
                  intervals: list[str] | None) -> list[tuple[str, str]]:
    """(symbol, interval) pairs to export, symbols sorted, intervals in the exchange's order."""
    return [(s, i) for s in sorted(found) if symbols is None or s in symbols
            for i in ivl.INTERVALS if i in found[s] and (intervals is None or i in intervals)]


def export_main(argv: list[str]) -> int:
    """Exit status: 0 done, 1 the export failed midway (what was renamed is in the state), 2 bad
    arguments, config or database, or another export holds the folder."""
    from .cli import DEFAULT_CONFIG

    args = parser().parse_args(argv)
    log = Logger("export")
    symbols, wanted_intervals = _split(args.symbols), _split(args.intervals)
    try:
        for interval in wanted_intervals or ():
            ivl.check(interval)
        since_ms = plan.parse_since(args.since) if args.since else None
        config = cfg.load(args.config or DEFAULT_CONFIG)
    except (ivl.IntervalError, plan.ExportError, cfg.ConfigError) as exc:
        print(f"kl-actors: export: {exc}", file=sys.stderr)
        return 2
    db_path = os.path.abspath(args.db or config.database.path)
    out = Path(args.out)
    with_lock = None
    try:
        (out / TMP_DIR).mkdir(parents=True, exist_ok=True)
        with_lock = PidLock(str(out / LOCK_FILE), f"export folder {out}").acquire()
        store = Store.open_readonly(config.database, db_path)
    except (StartError, StoreError, OSError) as exc:
        if with_lock:
            with_lock.release()
        print(f"kl-actors: export: {exc}", file=sys.stderr)
        return 2
    try:
        tables = select_tables(store.kline_tables(), symbols, wanted_intervals)
        for symbol in sorted(set(symbols or ()) - {s for s, _ in tables}):
            log.warning("export_symbol_absent", symbol=symbol, action="nothing exported for it")
        if _case_insensitive(out):
            clashes = (plan.case_collisions(i for _, i in tables)
                       + plan.case_collisions(s for s, _ in tables))
            if clashes:
                print(f"kl-actors: export: {out} is on a case-insensitive file system, where "
                      f"{', '.join(f'{a} and {b}' for a, b in clashes[:5])} would share a folder; export "
                      "them into separate folders (--intervals, --symbols)", file=sys.stderr)
                return 2
        Exporter(store, out, log, database=db_path).run(tables, since_ms, args.full)
        return 0
    except (OSError, apsw.Error) as exc:  # a full disk, an unreadable page of the database
        log.error("export_failed", out=str(out), error=f"{type(exc).__name__}: {exc}"[:300],
                  action="stopped; months renamed so far are recorded, the next run goes on")
        return 1
    finally:
        store.close()
        with_lock.release()
