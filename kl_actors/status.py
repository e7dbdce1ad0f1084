"""`python supervisor.py status`: the operator's view of the service and of the database.

Reads `<runtime_dir>/status.json` (the supervisor's: pids, restarts, heartbeats, the scheduler's
progress) if present, and the database read-only (`Store.open_readonly`): the per-table summaries
(`meta_tables`, kept by the writer), confirmed exchange holes, symbols. Works with the service
running or stopped. Exit status: 0 every followed table current and no open hole; 1 something
lags or has holes; 2 the database (or the config) cannot be read, with one line on stderr.

Bounded whatever the file holds: rows are never counted here. Per table it reads its summary
row; a table with open holes (expected candles - rows - confirmed-hole candles > 0) gets its gaps
listed (`Store.gaps_between`, at most `MAX_LISTED` tables, the most missing first); a table with
confirmed holes has the rows inside them counted by key range. Only a table without a summary row
(a file from before summaries; the writer's upkeep adds them) or `--exact` is counted directly,
and the output says so. The arithmetic is `core/coverage.py`; the drawing `status_render.py`.

Never writes the database or the runtime directory, never talks to the exchange or the actors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import apsw
import msgspec

from . import cli, messages
from . import config as cfg
from .core import coverage, intervals, planner
from .store import Store, StoreError
from .status_render import render_text

MAX_LISTED = 50  # tables whose open holes are listed one by one (a listing reads the table)
EXIT_CURRENT, EXIT_BEHIND, EXIT_UNREADABLE = 0, 1, 2


class Unreadable(Exception):
    """The database cannot be read as a kl-actors database; the message says why."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="supervisor.py status",
                                description="Show the service's actors and progress, and how complete "
                                            "and current the database is. Exit 0 current, 1 lag or "
                                            "holes, 2 the database cannot be read.")
    p.add_argument("--config", metavar="FILE", help="TOML config (default conf/default.toml)")
    p.add_argument("--sim", action="store_true",
                   help="the offline demo's service (`scripts/demo.sh`): conf/sim.toml unless --config")
    p.add_argument("--db", metavar="PATH", help="SQLite database file")
    p.add_argument("--runtime-dir", metavar="DIR", help="the service's runtime directory (status.json)")
    p.add_argument("--json", action="store_true", help="one JSON document for scripts")
    p.add_argument("--symbol", metavar="S", help="one row per table of this symbol")
    p.add_argument("--interval", metavar="I", help="one row per table of this interval")
    p.add_argument("--exact", action="store_true",
                   help="count every table's rows instead of reading its summary (reads the whole file)")
    return p


def load_config(args: argparse.Namespace) -> cfg.Config:
    """The service's own rules for --config/--db/--runtime-dir (cli.effective_config)."""
    service_args = cli.parser().parse_args([])
    service_args.config, service_args.db, service_args.runtime_dir = args.config, args.db, args.runtime_dir
    service_args.sim = args.sim
    return cfg.resolve_endpoints(cli.effective_config(service_args))


# -- the service ---------------------------------------------------------------------------------
def pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def service_view(runtime_dir: str, now_ms: int) -> dict:
    """What status.json says, aged to `now_ms`; `running` from the supervisor's pid."""
    path = Path(runtime_dir) / "status.json"
    view: dict = {"running": False, "status_file": str(path), "supervisor_pid": None, "status_age_s": None,
                  "uptime_s": None, "actors": [], "progress": None}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except FileNotFoundError:
        view["note"] = "no status.json (the service has not run with this runtime dir)"
        return view
    except (OSError, ValueError) as exc:
        view["note"] = f"status.json unreadable: {exc}"[:200]
        return view
    pid = data.get("supervisor_pid")
    view["supervisor_pid"] = pid if isinstance(pid, int) else None
    view["running"] = pid_alive(pid)
    written = data.get("written_at_ms")
    age_s = (now_ms - written) / 1000 if isinstance(written, (int, float)) else None
    if age_s is None:
        try:
            age_s = now_ms / 1000 - path.stat().st_mtime
        except OSError:
            age_s = None
    view["status_age_s"] = None if age_s is None else round(max(0.0, age_s), 1)
    started = data.get("started_at_ms")
    if view["running"] and isinstance(started, (int, float)):
        view["uptime_s"] = round(max(0, now_ms - started) / 1000, 1)
    actors = data.get("actors") if isinstance(data.get("actors"), dict) else {}
    for name, a in actors.items():
        a = a if isinstance(a, dict) else {}
        beat = a.get("heartbeat_age_s")
        running = view["running"] and isinstance(a.get("pid"), int)
        view["actors"].append({
            "name": str(name), "pid": a.get("pid") if running else None,
            "restarts": a.get("restarts") if isinstance(a.get("restarts"), int) else 0,
            "heartbeat_age_s": round(beat + (age_s or 0), 1) if running and isinstance(beat, (int, float)) else None,
            "last_exit": str(a.get("last_exit") or "")})
    progress = data.get("progress")
    if progress is not None:
        try:  # the scheduler's Progress as the supervisor wrote it; anything else is not shown
            p = msgspec.convert(progress, messages.Progress)
        except msgspec.ValidationError as exc:
            view["note"] = f"progress in status.json unreadable: {exc}"[:200]
        else:
            view["progress"] = {**msgspec.to_builtins(p), "age_s": round((now_ms - p.at_ms) / 1000, 1)}
    return view


# -- the data ------------------------------------------------------------------------------------
def open_database(path: str, config: cfg.DatabaseConfig) -> Store:
    try:
        store = Store.open_readonly(config, path=path)
    except StoreError as exc:
        raise Unreadable(str(exc)) from None
    try:
        if store.schema_version() is None:
            raise Unreadable(f"database {path!r} holds no schema version: not a kl-actors database?")
    except apsw.SQLError as exc:
        store.close()
        raise Unreadable(f"database {path!r} is not a kl-actors database ({exc})") from None
    except apsw.Error as exc:
        store.close()
        raise Unreadable(f"cannot read database {path!r}: {type(exc).__name__}: {exc}") from None
    except Unreadable:
        store.close()
        raise
    return store


def collect(store: Store, config: cfg.Config, now_ms: int, symbol: str | None = None,
            interval: str | None = None, exact: bool = False) -> dict:
    """Every table's state (restricted to `symbol` / `interval`), the per-interval rows, the
    open holes listed, and the exit status, as plain data."""
    symbols = {r.symbol: r.status for r in store.symbols()}
    summaries = store.summaries()
    holes: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for s, i, a, b in store.exchange_hole_rows():
        holes.setdefault((s, i), []).append((a, b))
    include, exclude = set(config.symbols.include), set(config.symbols.exclude)
    configured = set(config.klines.intervals)
    grace_ms = int(config.live.boundary_deadline_s * 1000)
    states = []
    for sym, by_interval in sorted(store.kline_tables().items()):
        if symbol and sym != symbol:
            continue
        for ivl, table in by_interval.items():
            if interval and ivl != interval:
                continue
            summary = None if exact else summaries.get(table)
            counted = summary is None
            if counted:
                summary = store.count_table(sym, ivl)
            status = symbols.get(sym)
            trading = status in (None, "TRADING")
            wanted = (not include or sym in include) and sym not in exclude and ivl in configured
            known = tuple(holes.get((sym, ivl), ()))
            inside = (coverage.clip_to_grid(ivl, summary.first_ms, summary.last_ms, known)
                      if known and summary.rows else [])
            facts = coverage.TableFacts(
                sym, ivl, summary.rows, summary.ws_rows, summary.first_ms, summary.last_ms, known,
                store.rows_in_ranges(sym, ivl, inside) if inside else 0,
                followed=trading and wanted, delisted=not trading, counted=counted)
            states.append(coverage.table_state(facts, now_ms, grace_ms))
    states.sort(key=lambda s: (intervals.INTERVALS.index(s.facts.interval), s.facts.symbol))
    listed = _list_holes(store, states)
    return {"states": states, "listed": listed,
            "intervals": coverage.by_interval(states, {k: len(v) for k, v in listed.items()}),
            # Nothing stored (or nothing matching --symbol/--interval) is not "current" either.
            "exit": coverage.exit_status(states) if states else EXIT_BEHIND,
            "grace_s": config.live.boundary_deadline_s}


def _list_holes(store: Store, states: list[coverage.TableState]) -> dict[tuple[str, str], list[tuple[int, int]]]:
    """Open holes of the tables that miss candles (most missing first, at most MAX_LISTED)."""
    listed = {}
    for s in sorted((s for s in states if s.missing), key=lambda s: -s.missing)[:MAX_LISTED]:
        f = s.facts
        gaps = store.gaps_between(f.symbol, f.interval, f.first_ms, f.last_ms)
        listed[(f.symbol, f.interval)] = planner.minus_known(f.interval, gaps, list(f.exchange_holes))
    return listed


def as_json(view: dict, db: dict, data: dict | None, per_table: bool) -> dict:
    out = {"service": view, "database": db}
    if data is None:
        return out
    out["intervals"] = [r._asdict() for r in data["intervals"]]
    if per_table:
        out["tables"] = [table_json(s, data["listed"]) for s in data["states"]]
    out["lagging"] = sum(s.lagging for s in data["states"])
    out["missing"] = sum(s.missing for s in data["states"])
    out["holes_listed"] = sum(len(v) for v in data["listed"].values())
    out["grace_s"] = data["grace_s"]
    out["exit"] = data["exit"]
    return out


def table_json(s: coverage.TableState, listed: dict) -> dict:
    f = s.facts
    gaps = listed.get((f.symbol, f.interval))
    return {"symbol": f.symbol, "interval": f.interval, "candles": f.rows, "ws_rows": f.ws_rows,
            "first_ms": f.first_ms, "last_ms": f.last_ms, "expected": s.expected, "missing": s.missing,
            "holes": None if gaps is None else [list(g) for g in gaps],
            "exchange_holes": [list(h) for h in f.exchange_holes],
            "exchange_hole_candles": s.exchange_hole_candles, "lag_ms": s.lag_ms,
            "lag_candles": s.lag_candles, "lagging": s.lagging, "followed": f.followed,
            "delisted": f.delisted, "counted": f.counted}


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        config = load_config(args)
    except cfg.ConfigError as exc:
        print(f"kl-actors: status: config error: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    if args.interval and args.interval not in intervals.INTERVALS:
        print(f"kl-actors: status: unknown interval {args.interval!r}; expected one of "
              f"{', '.join(intervals.INTERVALS)}", file=sys.stderr)
        return EXIT_UNREADABLE
    now_ms = time.time_ns() // 1_000_000
    view = service_view(config.endpoints.runtime_dir, now_ms)
    path = config.database.path
    db = {"path": path, "now_ms": now_ms}
    try:
        store = open_database(path, config.database)
        try:
            with store.read_snapshot():
                db["schema_version"] = store.schema_version()
                data = collect(store, config, now_ms, args.symbol, args.interval, args.exact)
        finally:
            store.close()
    except Unreadable as exc:
        print(f"kl-actors: status: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    except apsw.Error as exc:
        print(f"kl-actors: status: cannot read database {path!r}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    per_table = bool(args.symbol or args.interval)
    text = json.dumps(as_json(view, db, data, per_table)) if args.json else render_text(view, db, data, per_table)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return data["exit"]

