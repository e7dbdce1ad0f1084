"""status.py in-process: what it reads of a large file (bounded by tables, not rows), a file
from before summaries (counted, and said so), and the service part of status.json (progress,
heartbeats aged to now). The command as a subprocess against the service: tests/service/test_status.py."""

from __future__ import annotations

import json
import os
import time

import apsw
import msgspec
import pytest

from kl_actors import messages, status
from kl_actors.config import DatabaseConfig
from kl_actors.core import intervals
from kl_actors.core.symbols import table_name
from kl_actors.status_render import render_text
from kl_actors.store import Store
from harness import bulk_connection, make_config

MIN = 60_000
TABLES = 300                # 300 tables of 1m, 80,000 rows each: 24 M rows
ROWS_PER_TABLE = 80_000
HOLE_TABLES = 3             # these get two holes punched (their gaps are listed: they are read)


class Reads:
    """What a connection reads while it is watched: VM steps of every statement (SQLite's own
    per-statement counters) and pages fetched from the file (cache misses; mmap off)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.statements: list[tuple[str, int]] = []

    def __enter__(self):
        self.misses = self.store.conn.status(apsw.SQLITE_DBSTATUS_CACHE_MISS, True)[0]
        self.store.conn.trace_v2(apsw.SQLITE_TRACE_PROFILE, self._profile)
        return self

    def _profile(self, event: dict) -> None:
        self.statements.append((event["sql"], event["stmt_status"]["SQLITE_STMTSTATUS_VM_STEP"]))

    def __exit__(self, *exc) -> None:
        self.store.conn.trace_v2(0, None)
        self.pages = self.store.conn.status(apsw.SQLITE_DBSTATUS_CACHE_MISS)[0]

    @property
    def steps(self) -> int:
        return sum(n for _, n in self.statements)


def symbol(i: int) -> str:
    return f"S{i:03d}USDT"


def build(path, last_open_ms: int) -> tuple[int, dict[str, list[tuple[int, int]]]]:
    """TABLES 1m tables ending at `last_open_ms`, one row in 1000 from the WebSocket; two holes
    in each of the first HOLE_TABLES. Generated directly with apsw, as an old writer left them
    (no meta_tables: the writer's upkeep sums them, as it would a real file)."""
    first = last_open_ms - (ROWS_PER_TABLE - 1) * MIN
    store = Store.open_writer(DatabaseConfig(path=str(path)))
    store.close()
    from kl_actors.store import _KLINE_TABLE_SQL
    holes = {}
    with bulk_connection(path) as conn, conn:
        conn.execute("DROP TABLE meta_tables")
        for i in range(TABLES):
            table = table_name(symbol(i), "1m")
            conn.execute(_KLINE_TABLE_SQL.format(table=table))
            if i:  # the same rows as the first table
                conn.execute(f"INSERT INTO {table} SELECT * FROM {table_name(symbol(0), '1m')}")
                continue
            conn.execute(
                f"WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < {ROWS_PER_TABLE - 1}) "
                f"INSERT INTO {table} SELECT {first} + i * 60000, '1.0', '1.1', '0.9', '1.05', '10', "
                f"{first} + i * 60000 + 59999, '10.5', 5, '5', '5.2', "
                f"CASE WHEN i % 1000 = 7 THEN 'ws' ELSE 'rest' END FROM g")
        for i in range(HOLE_TABLES):
            table = table_name(symbol(i), "1m")
            ranges = [(first + (20_000 + i) * MIN, first + (20_009 + i) * MIN), (first + 50_000 * MIN, first + 50_000 * MIN)]
            for a, b in ranges:
                conn.execute(f"DELETE FROM {table} WHERE open_time BETWEEN ? AND ?", (a, b))
            holes[symbol(i)] = ranges
    return first, holes


@pytest.mark.slow(20)
def test_status_reads_a_bounded_part_of_a_large_file(workdir):
    now = time.time_ns() // 1_000_000
    last = intervals.last_closed_open("1m", now)
    path = workdir / "big.sqlite"
    first, holes = build(path, last)
    total = TABLES * ROWS_PER_TABLE - HOLE_TABLES * 11

    # The writer sums the old tables in slices: no step reads more than one chunk.
    writer = Store.open_writer(DatabaseConfig(path=str(path), mmap_size_mib=0))
    slices = []
    while writer.summaries_pending:
        with Reads(writer) as r:
            writer.summarize_step(time.monotonic() + 0.05, time.monotonic)
        slices.append(r)
    assert len(slices) > 20
    biggest = max(max((n for _, n in s.statements), default=0) for s in slices)
    assert biggest < 20 * 200_000  # one chunk of SUM_CHUNK_CANDLES rows, a few VM steps a row
    # An upsert into one of these tables keeps its summary with reads of the batch's range only.
    overwrite = [(first + (1000 + k) * MIN, "2", "3", "1", "2", "9", first + (1000 + k) * MIN + 59_999,
                  "1", 1, "1", "1", "0") for k in range(1000)]
    with Reads(writer) as r, writer.transaction():
        writer.upsert_rows(symbol(5), "1m", "rest", overwrite)
    summary_steps = sum(n for sql, n in r.statements if "count(*)" in sql)
    assert 0 < summary_steps < 20 * 1000, r.statements
    writer.close()

    config = make_config(workdir, database={"path": str(path), "mmap_size_mib": 0},
                         klines={"intervals": ["1m"], "depth": {"1m": 1000}})
    store = status.open_database(str(path), config.database)
    try:
        with Reads(store) as r:
            data = status.collect(store, config, now)
    finally:
        store.close()
    (row,) = data["intervals"]
    assert (row.tables, row.candles, row.missing, row.holes) == (TABLES, total, HOLE_TABLES * 11, HOLE_TABLES * 2)
    assert TABLES * 79 < row.ws_rows <= TABLES * 80 and row.counted == 0
    assert {s: [tuple(g) for g in gaps] for (s, _), gaps in data["listed"].items()} == holes
    # Bounded: only the tables with holes are read through (their gaps listed); the rest costs a
    # few steps and pages per table, whatever its rows.
    hole_tables = {table_name(s, "1m") for s in holes}
    listing = sum(n for sql, n in r.statements if any(t in sql for t in hole_tables))
    rest = r.steps - listing
    assert rest < 200 * TABLES, r.statements[:20]
    assert listing < 100 * HOLE_TABLES * ROWS_PER_TABLE  # a window function over each: ~45 steps a row
    pages_per_table = (path.stat().st_size // 4096) / TABLES
    assert r.pages < HOLE_TABLES * pages_per_table * 1.5 + 10 * TABLES
    # Counting every table instead (--exact) reads every row: what the summaries spare.
    store = status.open_database(str(path), config.database)
    try:
        with Reads(store) as exact:
            counted = status.collect(store, config, now, exact=True)
    finally:
        store.close()
    # ... and finds exactly what the summaries say, table by table.
    assert counted["intervals"][0]._replace(counted=0) == row
    assert [s.facts._replace(counted=False) for s in counted["states"]] == [s.facts for s in data["states"]]
    assert exact.steps > 10 * r.steps and exact.pages > 0.9 * path.stat().st_size // 4096
    print(f"status: {r.steps} VM steps ({rest} outside the {HOLE_TABLES} tables with holes), {r.pages} pages; "
          f"--exact: {exact.steps} steps, {exact.pages} pages; file {path.stat().st_size // 4096} pages")


def test_a_file_from_before_summaries_is_counted_and_says_so(workdir):
    path = workdir / "old.sqlite"
    store = Store.open_writer(DatabaseConfig(path=str(path)))
    t0 = intervals.last_closed_open("1h", time.time_ns() // 1_000_000) - 9 * 3_600_000
    rows = [(t0 + k * 3_600_000, "1", "1", "1", "1", "1", t0 + (k + 1) * 3_600_000 - 1, "1", 1, "1", "1", "0")
            for k in (0, 1, 2, 4, 5, 6, 7, 8, 9)]
    with store.transaction():
        store.upsert_rows("BTCUSDT", "1h", "ws", rows)
    store.close()
    conn = apsw.Connection(str(path))
    conn.execute("DROP TABLE meta_tables")
    conn.close()
    config = make_config(workdir, database={"path": str(path)}, klines={"intervals": ["1h"], "depth": {"1h": 10}})
    store = status.open_database(str(path), config.database)
    try:
        data = status.collect(store, config, time.time_ns() // 1_000_000, symbol="BTCUSDT")
    finally:
        store.close()
    (state,) = data["states"]
    assert (state.facts.rows, state.facts.ws_rows, state.facts.counted, state.missing) == (9, 9, True, 1)
    assert data["listed"] == {("BTCUSDT", "1h"): [(t0 + 3 * 3_600_000, t0 + 3 * 3_600_000)]}
    text = render_text(status.service_view(str(workdir / "rt"), 0), {"path": str(path), "now_ms": 0}, data, True)
    assert "1 table(s) counted directly" in text and "1 open hole(s), 1 candle(s) missing" in text
    assert data["exit"] == 1
    store = status.open_database(str(path), config.database)
    try:
        nothing = status.collect(store, config, time.time_ns() // 1_000_000, symbol="ETHUSDT")
    finally:
        store.close()
    assert (nothing["states"], nothing["exit"]) == ([], 1)
    assert "NOT current: no kline table" in render_text(status.service_view(str(workdir / "rt"), 0),
                                                         {"path": "x", "now_ms": 0}, nothing, True)


def test_service_view_reads_status_json_progress_and_ages_heartbeats(workdir):
    rt = workdir / "rt"
    rt.mkdir()
    now = 1_800_000_000_000
    progress = messages.Progress(at_ms=now - 2_000, tasks_done=9377, tasks_total=19140, candles=4_000_000,
                                 candles_per_s=12345.6, eta_s=492.5, weight_used=1234, weight_limit=2400, failed=3)
    (rt / "status.json").write_text(json.dumps({
        "supervisor_pid": os.getpid(), "started_at_ms": now - 3_723_000, "written_at_ms": now - 500,
        "actors": {"writer": {"pid": os.getpid(), "restarts": 2, "heartbeat_age_s": 0.3, "last_exit": "killed by SIGKILL"}},
        "progress": msgspec.to_builtins(progress)}))
    view = status.service_view(str(rt), now)
    assert (view["running"], view["uptime_s"], view["status_age_s"]) == (True, 3723.0, 0.5)
    assert view["actors"] == [{"name": "writer", "pid": os.getpid(), "restarts": 2, "heartbeat_age_s": 0.8,
                               "last_exit": "killed by SIGKILL"}]
    assert view["progress"]["tasks_done"] == 9377 and view["progress"]["age_s"] == 2.0
    data = {"states": [], "listed": {}, "intervals": [], "exit": 0, "grace_s": 60.0}
    text = render_text(view, {"path": "x", "now_ms": now}, data, False)
    assert "running, supervisor pid" in text and "up 1h02m" in text
    assert "backfill  9,377 / 19,140 tasks (49.0%), 12,346 candles/s, ETA 8m12s, 3 failed" in text
    assert "weight    1,234 / 2,400 this minute" in text
    assert "killed by SIGKILL" in text
    # A supervisor that is gone: not running, no pids, no uptime.
    (rt / "status.json").write_text(json.dumps({"supervisor_pid": 2 ** 22 + 12345, "actors": {"writer": {"pid": 5}}}))
    gone = status.service_view(str(rt), now)
    assert (gone["running"], gone["uptime_s"], gone["actors"][0]["pid"]) == (False, None, None)
    (rt / "status.json").write_text("{not json")
    assert "unreadable" in status.service_view(str(rt), now)["note"]
    # Values of the wrong kind are left out with a note, never a crash of the command.
    (rt / "status.json").write_text(json.dumps({"supervisor_pid": "x", "actors": {"w": {"pid": "y", "restarts": "z",
                                                "heartbeat_age_s": "q"}}, "progress": {"at_ms": "soon"}}))
    odd = status.service_view(str(rt), now)
    assert odd["progress"] is None and "progress in status.json unreadable" in odd["note"]
    assert odd["actors"] == [{"name": "w", "pid": None, "restarts": 0, "heartbeat_age_s": None, "last_exit": ""}]
    assert "not running" in render_text(odd, {"path": "x", "now_ms": now}, data, False)


def test_delisted_and_unconfigured_tables_are_shown_not_judged(workdir):
    """A delisted symbol's table stops; a table of an interval no longer configured too: both are
    counted and shown, neither makes the exit status 1. A trading symbol's stale table does."""
    path = workdir / "db.sqlite"
    now = time.time_ns() // 1_000_000
    last = intervals.last_closed_open("1h", now)
    old = last - 500 * 3_600_000
    store = Store.open_writer(DatabaseConfig(path=str(path)))

    def rows(end):  # five 1h-long candles ending at `end` (their length matters not here)
        return [(end - k * 3_600_000, "1", "1", "1", "1", "1", end - k * 3_600_000 + 3_599_999, "1", 1, "1", "1", "0")
                for k in range(5)]

    with store.transaction():
        store.record_symbols([messages.SymbolInfo("BTCUSDT", "TRADING", 0), messages.SymbolInfo("OLDUSDT", "SETTLING", 0)], now)
        store.upsert_rows("BTCUSDT", "1h", "rest", rows(last))
        store.upsert_rows("OLDUSDT", "1h", "rest", rows(old))    # delisted 500 hours ago
        store.upsert_rows("BTCUSDT", "4h", "rest", rows(intervals.align("4h", old)))  # 4h not configured
    store.close()
    config = make_config(workdir, database={"path": str(path)}, klines={"intervals": ["1h"], "depth": {"1h": 10}})

    def run(cfg):
        s = status.open_database(str(path), cfg.database)
        try:
            return status.collect(s, cfg, now)
        finally:
            s.close()

    data = run(config)
    by = {r.interval: r for r in data["intervals"]}
    assert (by["1h"].tables, by["1h"].candles, by["1h"].delisted, by["1h"].lagging) == (2, 10, 1, 0)
    assert (by["4h"].tables, by["4h"].lagging) == (1, 0) and by["4h"].lag_candles > 100
    assert data["exit"] == 0
    # The same BTCUSDT 4h table once 4h is configured: it lags, exit 1.
    config4 = make_config(workdir, database={"path": str(path)},
                          klines={"intervals": ["1h", "4h"], "depth": {"1h": 10, "4h": 10}})
    data = run(config4)
    assert {r.interval: r.lagging for r in data["intervals"]} == {"1h": 0, "4h": 1} and data["exit"] == 1


def test_sim_flag_reads_the_demo_config():
    # `status --sim` looks where `scripts/demo.sh` (supervisor.py --sim) keeps its database.
    from kl_actors import cli, config as cfg
    demo = cfg.load(str(cli.SIM_CONFIG))
    config = status.load_config(status.parser().parse_args(["--sim"]))
    assert config.database.path == demo.database.path == "data/sim.sqlite"
    plain = status.load_config(status.parser().parse_args([]))
    assert plain.database.path != demo.database.path
