"""The scheduler at production size: tens of millions of stored rows, and a since-listing plan
of years of 1m history. The scheduler must never be silent long enough to be restarted (heartbeat
timeout 5 s, a third of the default: a plan that blocked the loop stalled it 15 s and more),
release work while it plans, and keep its memory flat across planning passes. Not tighter: on a
busy 2-core machine a commit or a process start alone can take 2 s.

The database is generated directly with apsw (dummy values, real open times); the holes punched
into it and its tails are fetched from the simulator and compared with its truth.
"""

from __future__ import annotations

import re
import time

import apsw
import pytest

from exactness import trading_symbols, truth_rows
from kl_actors.core import intervals
from kl_actors.core.symbols import table_name
from harness import bulk_connection, make_config, wait_for

pytestmark = pytest.mark.slow

ROWS_PER_TABLE = 1_000_000  # 1m candles: ~1.9 years per table
TABLES = 20                 # 20 M rows in all; generated in ~5 s (one table made, copied 19 times)
HOLES = [(300_000, 17), (650_000, 1), (999_000, 45)]  # (offset from the first row, candles missing)
TAIL = 90                   # the newest stored candle is this many minutes behind


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def build_database(path, symbols: list[str], last_open_ms: int) -> int:
    """20 tables of 1m candles ending TAIL minutes ago, holes punched into five of them."""
    first = last_open_ms - (ROWS_PER_TABLE - 1) * 60_000
    with bulk_connection(path) as conn, conn:
        for n, symbol in enumerate(symbols):
            table = table_name(symbol, "1m")
            conn.execute(
                f"CREATE TABLE {table} (open_time INTEGER PRIMARY KEY, open TEXT NOT NULL, high TEXT NOT NULL, "
                "low TEXT NOT NULL, close TEXT NOT NULL, volume TEXT NOT NULL, close_time INTEGER NOT NULL, "
                "quote_volume TEXT NOT NULL, trades INTEGER NOT NULL, taker_buy_volume TEXT NOT NULL, "
                "taker_buy_quote_volume TEXT NOT NULL, source TEXT NOT NULL DEFAULT 'rest', "
                "updated_ms INTEGER NOT NULL DEFAULT 0)")
            if n:  # the same rows as the first table
                conn.execute(f"INSERT INTO {table} SELECT * FROM {table_name(symbols[0], '1m')}")
                continue
            conn.execute(
                f"WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < {ROWS_PER_TABLE - 1}) "
                f"INSERT INTO {table} SELECT {first} + i * 60000, '1.0', '1.1', '0.9', '1.05', '10', "
                f"{first} + i * 60000 + 59999, '10.5', 5, '5', '5.2', 'rest', 0 FROM g")
        for symbol in symbols[:5]:
            for offset, missing in HOLES:
                start = first + offset * 60_000
                conn.execute(f"DELETE FROM {table_name(symbol, '1m')} WHERE open_time BETWEEN ? AND ?",
                             (start, start + (missing - 1) * 60_000))
    return first


def old_symbols(sim, years: float) -> list[str]:
    now = sim.info()["server_time_ms"]
    return sorted(s for s, onboard in trading_symbols(sim).items() if onboard < now - years * 365 * 86_400_000)


def service_config(workdir, sim, symbols, **klines):
    return make_config(
        workdir,
        exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url, "request_timeout_s": 5.0},
        symbols={"include": symbols, "rediscover_s": 5.0},
        klines={"intervals": ["1m"], "depth": {"1m": 1000}, **klines},
        downloader={"processes": 2, "concurrency": 2, "lease_s": 20.0},
        supervisor={"heartbeat_s": 0.2, "heartbeat_timeout_s": 5.0})


def assert_never_restarted(service, scheduler_pid):
    log = service.log_text()
    assert "actor_silent" not in log and "actor_exited" not in log, log[-3000:]
    assert service.pid("scheduler") == scheduler_pid
    assert service.status()["scheduler"]["restarts"] == 0


@pytest.mark.slow(45)
def test_twenty_million_rows_planned_incrementally_without_missing_a_heartbeat(workdir, sim_factory, service_factory):
    sim = sim_factory(symbols=60, weight_limit=1_000_000)
    symbols = old_symbols(sim, 2.0)[:TABLES]
    assert len(symbols) == TABLES
    now = sim.info()["server_time_ms"]
    last = intervals.step("1m", intervals.last_closed_open("1m", now), -TAIL)
    t0 = time.monotonic()
    first = build_database(workdir / "db.sqlite", symbols, last)
    print(f"fixture: {TABLES * ROWS_PER_TABLE:,} rows in {time.monotonic() - t0:.1f} s")

    service = service_factory(service_config(workdir, sim, symbols))
    scheduler_pid = service.wait_running(["scheduler", "writer"], timeout=30)["scheduler"]["pid"]
    db = apsw.Connection(str(workdir / "db.sqlite"), flags=apsw.SQLITE_OPEN_READONLY)

    def complete():
        edge = intervals.last_closed_open("1m", sim.info()["server_time_ms"]) - 60_000
        for symbol in symbols:
            (n, hi), = db.execute(f"SELECT count(*), max(open_time) FROM {table_name(symbol, '1m')} "
                                  "WHERE open_time >= ?", (first,)).fetchall()
            if hi < edge or n != intervals.count_between("1m", first, hi):
                return False
        return True

    wait_for(complete, 240, interval=1.0, what="holes and tails filled")
    passes = lambda: service.log_text().count("event=planned ")  # noqa: E731
    wait_for(lambda: passes() >= 2, 60, what="a second planning pass")
    rss_after_fill = _rss_kib(scheduler_pid)
    done_passes = passes()
    wait_for(lambda: passes() >= done_passes + 4, 90, what="four more planning passes")
    rss_later = _rss_kib(scheduler_pid)
    assert_never_restarted(service, scheduler_pid)
    # Flat: later passes over the same 20 M rows add nothing that stays.
    assert rss_later <= rss_after_fill * 1.1 + 8 * 1024, (rss_after_fill, rss_later)

    # The refilled holes and tails are the exchange's candles, exactly.
    for symbol in symbols[:5]:
        for offset, missing in HOLES:
            start = first + offset * 60_000
            end = start + (missing - 1) * 60_000
            stored = [list(r) for r in db.execute(
                f"SELECT open_time, open, high, low, close, volume, close_time, quote_volume, trades, "
                f"taker_buy_volume, taker_buy_quote_volume FROM {table_name(symbol, '1m')} "
                "WHERE open_time BETWEEN ? AND ? ORDER BY open_time", (start, end))]
            assert stored == truth_rows(sim, symbol, "1m", start, end)
    tail_start = intervals.next_open("1m", last)
    stored_tail = [r[0] for r in db.execute(f"SELECT open_time FROM {table_name(symbols[-1], '1m')} "
                                             "WHERE open_time >= ? ORDER BY open_time LIMIT ?", (tail_start, TAIL))]
    assert stored_tail == [tail_start + i * 60_000 for i in range(TAIL)]
    db.close()
    log = service.log_text()
    planned = re.findall(r"event=planned .*?rows_checked=(\d+) .*?busy_ms=([\d.]+)", log)
    # First pass proves all 20 M rows; later ones only what was added since.
    assert int(planned[0][0]) >= TABLES * (ROWS_PER_TABLE - 100)
    assert all(int(rows) < 50_000 for rows, _ in planned[2:]), planned
    slowest = max(float(m) for m in re.findall(r"event=planned .*?slowest_tick_ms=([\d.]+)", log))
    print(f"first pass: {planned[0][1]} ms busy; slowest tick {slowest} ms")


def test_since_listing_years_of_history_stays_lazy(workdir, sim_factory, service_factory):
    sim = sim_factory(symbols=120, weight_limit=1_000_000)
    symbols = old_symbols(sim, 1.0)
    assert len(symbols) >= 60
    service = service_factory(service_config(workdir, sim, symbols, since_listing=True))
    scheduler_pid = service.wait_running(["scheduler", "writer"], timeout=30)["scheduler"]["pid"]
    wait_for(lambda: "event=planned " in service.log_text(), 60, what="the first plan")
    planned = int(re.search(r"event=planned tasks=(\d+)", service.log_text()).group(1))
    assert planned > 60 * 365 * 1440 // 499  # over 60 symbol-years of 1m pages
    done = lambda: [int(x) for x in re.findall(r"event=progress tasks_done=(\d+)", service.log_text())]  # noqa: E731
    wait_for(lambda: len(done()) >= 2 and done()[-1] > 0, 60, what="pages committed")
    rss_early = _rss_kib(scheduler_pid)
    before = done()[-1]
    wait_for(lambda: done()[-1] >= before + 400, 120, what="400 more pages")
    rss_later = _rss_kib(scheduler_pid)
    assert_never_restarted(service, scheduler_pid)
    assert rss_later <= rss_early * 1.1 + 8 * 1024, (rss_early, rss_later)
    assert rss_later < 200 * 1024  # the plan is ranges, not a million tasks
