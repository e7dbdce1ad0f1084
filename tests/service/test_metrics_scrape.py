"""Prometheus metrics of the whole service against the simulator: a real HTTP GET of /metrics,
parsed with prometheus_client's own parser, compared with what the database holds; counters
that survive a kill -9 of the writer (exactly: the restarted writer's rows are added on top) and
of a downloader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import apsw
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exactness import trading_symbols
from kl_actors.core import intervals
from kl_actors.core.metrics import FAMILIES, PREFIX
from kl_actors.core.symbols import table_name
from harness import ROOT, backfill_config, free_port, make_config, wait_for, write_toml

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
DEPTH = {"1m": 20, "1h": 150, "1d": 60}
EXACT = ("1h", "1d")  # no 1h or 1d candle closes during the test (see _quiet_offset)
ACTORS = ["broker", "writer", "timesync", "scheduler", "downloader-1", "downloader-2", "websocket"]


def _quiet_offset() -> int:
    """A simulator clock offset putting its time at 13:19:35 UTC today: the first 1m boundary
    comes 25 s after the start (boundary lag is measured), the next 1h and 1d closes are 40
    minutes and 10 hours away, so every 1h and 1d row is written exactly once in this test."""
    local = int(time.time() * 1000)
    return local - local % DAY_MS + 13 * HOUR_MS + 19 * 60_000 + 35_000 - local


def scrape(port: int) -> dict[str, dict]:
    """sample name -> {labels as sorted tuple: value}, and family name -> type under '#types'."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    out: dict[str, dict] = {"#types": {}}
    for family in text_string_to_metric_families(text):
        out["#types"][family.name] = family.type
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(metrics: dict, name: str, **labels) -> float:
    return metrics.get(PREFIX + name, {}).get(tuple(sorted(labels.items())), 0.0)


def written(metrics: dict) -> dict[tuple[str, str], float]:
    """candles_written_total by (interval, source)."""
    return {(dict(k)["interval"], dict(k)["source"]): v
            for k, v in metrics.get(PREFIX + "candles_written_total", {}).items()}


def db_rows(db_path: str, symbols, interval: str) -> dict[str, int]:
    """source -> rows of `interval` over `symbols`' tables."""
    conn = apsw.Connection(db_path, flags=apsw.SQLITE_OPEN_READONLY)
    conn.setbusytimeout(5000)  # the writer may be setting the file up (WAL mode, schema)
    try:
        counts: dict[str, int] = {}
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for symbol in symbols:
            table = table_name(symbol, interval)
            if table not in tables:
                continue
            for source, n in conn.execute(f"SELECT source, count(*) FROM {table} GROUP BY source"):
                counts[source] = counts.get(source, 0) + n
        return counts
    finally:
        conn.close()


def expected_rows(onboard_ms: int, interval: str, server_now_ms: int) -> int:
    """Closed candles of a fixed-length interval the backfill stores at least: the depth, or
    since listing (more when the depth was counted on local time before the clock was known and
    the tail to the exchange's now came after)."""
    last = intervals.last_closed_open(interval, server_now_ms)
    listed = intervals.align(interval, onboard_ms)
    available = 0 if last < listed else (last - listed) // intervals.nominal_ms(interval) + 1
    return min(DEPTH[interval], available)


def backfilled(sim, db_path: str, symbols: dict[str, int]) -> bool:
    """Every 1h and 1d table holds its depth, without a hole, up to the last closed candle."""
    server_now = sim.info()["server_time_ms"]
    conn = apsw.Connection(db_path, flags=apsw.SQLITE_OPEN_READONLY)
    conn.setbusytimeout(5000)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for symbol, onboard in symbols.items():
            for interval in EXACT:
                table = table_name(symbol, interval)
                if table not in tables:
                    return False
                n, first, last = next(conn.execute(f"SELECT count(*), min(open_time), max(open_time) FROM {table}"))
                if (n < expected_rows(onboard, interval, server_now)
                        or last != intervals.last_closed_open(interval, server_now)
                        or n != (last - first) // intervals.nominal_ms(interval) + 1):
                    return False
        return True
    finally:
        conn.close()


def assert_written_equals_database(port: int, db_path: str, symbols) -> dict:
    """candles_written_total of 1h and 1d equals the rows the database holds, per source."""
    def matches():
        metrics = scrape(port)
        got = {key: n for key, n in written(metrics).items() if key[0] in EXACT}
        want = {(interval, source): n for interval in EXACT
                for source, n in db_rows(db_path, symbols, interval).items()}
        return metrics if got == want else None

    try:
        metrics = wait_for(matches, timeout=10, interval=0.2, what="candles written == rows stored")
    except AssertionError:
        raise AssertionError(f"metrics {written(scrape(port))} != database "
                             f"{ {i: db_rows(db_path, symbols, i) for i in EXACT} }") from None
    return metrics


@pytest.mark.slow(40)
def test_metrics_match_the_database_and_survive_kill_9(workdir, sim_factory, service_factory):
    sim = sim_factory(symbols=4, weight_limit=1_000_000, ws_push_ms=200, clock_offset_ms=_quiet_offset())
    symbols = trading_symbols(sim)
    port = free_port()
    config = backfill_config(workdir, sim, DEPTH, metrics={"listen": f"127.0.0.1:{port}"},
                             symbols={"rediscover_s": 2.0},
                             live={"final_recheck_ms": 2000, "boundary_margin_ms": 200})
    db = config.database.path
    service = service_factory(config)
    service.wait_running(ACTORS, timeout=20)
    wait_for(lambda: f"event=metrics_serving url=http://127.0.0.1:{port}/metrics" in service.log_text(), 10,
             what="metrics_serving line")

    # -- a fresh database backfilled: the metric counts exactly the rows it holds --------------------
    server_now = sim.info()["server_time_ms"]
    wait_for(lambda: backfilled(sim, db, symbols), 60, interval=0.3, what="1h and 1d backfilled")
    metrics = assert_written_equals_database(port, db, symbols)
    least = sum(expected_rows(onboard, i, server_now) for onboard in symbols.values() for i in EXACT)
    assert sum(n for (i, source), n in written(metrics).items() if i in EXACT) >= least > 0
    assert {source for (i, source) in written(metrics) if i in EXACT} == {"rest"}

    # Every family is there, with the type the catalog gives it.
    types = metrics["#types"]
    for name, family in FAMILIES.items():
        exposed = PREFIX + (name.removesuffix("_total") if family.kind == "counter" else name)
        assert types.get(exposed) == family.kind, (name, types.get(exposed))
    assert value(metrics, "weight_limit", egress="default") == 1_000_000  # the simulator's rateLimits
    assert (("egress", "default"),) in metrics[PREFIX + "weight_used"]
    assert value(metrics, "writer_transaction_seconds_count") > 0

    def live():  # each actor's figures arrive with its own heartbeat: wait for all of them
        m = scrape(port)
        return (value(m, "websocket_connections") == 1  # 12 streams: one connection
                and value(m, "websocket_events_total") > 0 and value(m, "feed_messages_total", source="ws") > 0)

    wait_for(live, 30, interval=0.2, what="one WebSocket connection, its events counted and published")
    # Pages of 1m tails come with each minute's planning pass: zero once they are committed.
    wait_for(lambda: value(scrape(port), "backfill_tasks_remaining") == 0, 30, interval=0.2,
             what="backfill_tasks_remaining 0")
    kline_requests = sum(sim.stats()["requests_by_symbol_interval"].values())
    assert 0 < value(metrics, "requests_total", outcome="ok") <= kline_requests
    assert all(value(metrics, "actor_restarts_total", actor=name) == 0 for name in ACTORS)
    assert metrics[PREFIX + "actor_restarts_total"].keys() == {(("actor", n),) for n in ACTORS}

    def size_on_disk() -> int:
        return sum(os.stat(p).st_size for p in (db, db + "-wal") if os.path.exists(p))

    # Measured by the supervisor every heartbeat: once the writer is quiet, the files' size.
    wait_for(lambda: value(scrape(port), "database_bytes") == size_on_disk() > 0, 15, interval=0.3,
             what="database_bytes == size of the database and WAL files")

    # -- the 1m boundary: each symbol's candle has its final REST copy, its lag observed -------------
    boundary = intervals.next_boundary("1m", server_now)
    metrics = wait_for(lambda: (m := scrape(port)) and value(m, "boundary_lag_seconds_count", interval="1m") >= 4 and m,
                       timeout=90, interval=0.3, what="boundary lag of the first 1m boundary")
    lag_count = value(metrics, "boundary_lag_seconds_count", interval="1m")
    lag_sum = value(metrics, "boundary_lag_seconds_sum", interval="1m")
    assert lag_count % 4 == 0  # one observation per symbol per boundary
    # Each lag is from the close to the commit, past the re-check delay, well inside a minute.
    assert 2.0 * lag_count <= lag_sum <= 60.0 * lag_count
    assert value(metrics, "boundary_lag_seconds_bucket", interval="1m", le="+Inf") == lag_count
    assert value(metrics, "boundary_lag_seconds_bucket", interval="1m", le="1.0") == 0
    assert sim.info()["server_time_ms"] >= boundary

    def published_and_counted():
        # The stored closes reach the feed (the broker counts them); every 1m row of a source was
        # written at least once with it (a boundary candle more than once: fetch and re-check).
        stored = db_rows(db, symbols, "1m")
        m = scrape(port)
        return (value(m, "feed_messages_total", source="rest") >= 4
                and all(written(m).get(("1m", source), 0) >= n for source, n in stored.items()))

    wait_for(published_and_counted, timeout=10, interval=0.2, what="1m closes published and counted")

    # -- kill -9 the writer: nothing counted is lost, its successor's rows come on top ---------------
    before = scrape(port)
    writer_pid = service.pid("writer")
    os.kill(writer_pid, signal.SIGKILL)
    seen = [before]

    def writer_back():
        seen.append(scrape(port))
        status = service.status().get("writer", {})
        return (status.get("pid") not in (None, writer_pid) and status.get("heartbeat_age_s") is not None
                and value(seen[-1], "actor_restarts_total", actor="writer") == 1)

    wait_for(writer_back, timeout=30, interval=0.2, what="the writer restarted and counted")
    # A symbol listed now (with a month of history) is backfilled through the new writer.
    onboard = sim.info()["server_time_ms"] - 30 * DAY_MS
    sim.list_symbol("NEWCOINUSDT", onboard_ms=onboard)
    symbols["NEWCOINUSDT"] = onboard
    try:
        wait_for(lambda: backfilled(sim, db, symbols), 60, interval=0.3, what="NEWCOINUSDT 1h and 1d backfilled")
    except AssertionError as exc:
        stored = {(s, i): db_rows(db, [s], i) for s in symbols for i in EXACT}
        lines = [ln for ln in service.log_text().splitlines() if "NEWCOIN" in ln or "writer" in ln][-40:]
        raise AssertionError(f"{exc}\nstored {stored}\n" + "\n".join(lines)) from None
    # The scheduler fetches again the pages whose commit it had not heard of when the writer died
    # (they may have died with it): rewritten with the same values, they count again. So: every
    # stored row counted (nothing lost with the old writer), and at most one more depth a table.
    bound = sum(DEPTH[i] for i in EXACT) * len(symbols)

    def covers():
        m = scrape(port)
        got = {key: n for key, n in written(m).items() if key[0] in EXACT}
        want = {(i, source): n for i in EXACT for source, n in db_rows(db, symbols, i).items()}
        ok = all(got.get(k, 0) >= n for k, n in want.items()) and sum(got.values()) - sum(want.values()) <= bound
        return m if ok else None

    try:
        metrics = wait_for(covers, timeout=10, interval=0.2, what="candles written cover the rows stored")
    except AssertionError:
        raise AssertionError(f"metrics {written(scrape(port))} vs database "
                             f"{ {i: db_rows(db, symbols, i) for i in EXACT} }, bound {bound}") from None
    seen.append(metrics)

    # -- kill -9 a downloader: its requests stay counted ----------------------------------------------
    downloader_pid = service.pid("downloader-1")
    os.kill(downloader_pid, signal.SIGKILL)
    wait_for(lambda: seen.append(scrape(port)) or value(seen[-1], "actor_restarts_total", actor="downloader-1") == 1,
             timeout=30, interval=0.2, what="the downloader restarted")
    assert value(seen[-1], "requests_total", outcome="ok") >= value(metrics, "requests_total", outcome="ok")

    # No counter ever went down, in any scrape of the run.
    for earlier, later in zip(seen, seen[1:]):
        for name, family in FAMILIES.items():
            if family.kind == "counter":
                for labels, n in earlier.get(PREFIX + name, {}).items():
                    assert later.get(PREFIX + name, {}).get(labels, 0.0) >= n, (name, labels)
    assert value(seen[-1], "actor_restarts_total", actor="writer") == 1
    assert value(seen[-1], "actor_restarts_total", actor="scheduler") == 0

    code, err = service.stop()
    assert code == 0, err[-3000:]
    assert "metrics_refused" not in err and "malformed_message" not in err


def test_public_metrics_address_is_refused_without_the_flag(workdir):
    """The service does not start, one line names the key; with the flag the config passes."""
    config = make_config(workdir)  # never started: the exchange's URLs are not reached
    toml = write_toml(config, workdir / "service.toml")
    proc = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--config", str(toml),
                           "--metrics", "0.0.0.0:9108"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "key metrics.listen: '0.0.0.0:9108' is not loopback; set metrics.allow_public_metrics = true" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_metrics_port_taken_is_one_line_and_exit_2(workdir):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = make_config(workdir, metrics={"listen": f"127.0.0.1:{port}"})
        toml = write_toml(config, workdir / "service.toml")
        proc = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--config", str(toml)],
                              cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"kl-actors: metrics.listen 127.0.0.1:{port}: cannot serve" in proc.stderr
    assert "actor_started" not in proc.stderr  # refused before any actor started
