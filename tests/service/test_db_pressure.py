"""The database file under pressure from outside, with the whole service running: another
process holding SQLite's write lock, a reader keeping a snapshot open (the WAL), a read-only
file, a full disk."""

from __future__ import annotations

import os
import signal
import time

import apsw
import pytest

from exactness import assert_exact, trading_symbols
from harness import backfill_config, wait_for

DEPTH = {"1m": 1500, "5m": 1000, "1h": 1000}


service_config = backfill_config


@pytest.mark.slow(40)
def test_outside_write_lock_held_30s_mid_backfill_writer_never_restarted_all_exact(
        workdir, sim_factory, service_factory):
    sim = sim_factory(symbols=20, weight_limit=1_000_000, latency_ms=200)
    symbols = trading_symbols(sim)
    # A writer waiting 5 s per batch without a heartbeat is killed after 3 s of silence.
    config = service_config(workdir, sim, DEPTH, supervisor={"heartbeat_timeout_s": 3.0})
    started = sim.info()["server_time_ms"]
    service = service_factory(config, ["--once"])
    db_path = config.database.path
    wait_for(lambda: "event=progress" in service.log_text(), 60, what="backfill under way")
    writer_pid = service.pid("writer")
    assert writer_pid
    outside = apsw.Connection(db_path)
    # It takes the lock between two of the writer's transactions, as an outside program would
    # (without a wait, BEGIN IMMEDIATE fails at once whenever one is open).
    outside.setbusytimeout(30_000)
    outside.execute("BEGIN IMMEDIATE")
    locked_at = time.monotonic()
    try:
        while time.monotonic() < locked_at + 30:
            assert service.proc.poll() is None, service.log_text()[-3000:]
            status = service.status()
            if status:
                assert status["writer"]["pid"] == writer_pid, status["writer"]
            time.sleep(0.5)  # sampling the status while the lock is held, not waiting for an event
        assert "event=database_blocked" in service.log_text()
    finally:
        outside.execute("ROLLBACK")
        outside.close()
    code = service.proc.wait(timeout=240)
    code, log = service.stop()
    assert code == 0, log[-3000:]
    writer_trouble = [line for line in log.splitlines() if "name=writer" in line and (
        "event=actor_exited" in line or "event=actor_silent" in line
        or ("event=actor_started" in line and "restarts=0" not in line))]
    assert writer_trouble == []
    resumed = [line for line in log.splitlines() if "event=database_resumed" in line]
    assert resumed and float(resumed[0].split("blocked_s=")[1].split()[0]) >= 25, resumed
    assert "event=write_failed" not in log
    assert_exact(db_path, sim, symbols, DEPTH, started, sim.info()["server_time_ms"])


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


@pytest.mark.slow(50)
def test_writer_stopped_for_half_a_minute_release_held_memory_bounded_nothing_lost(
        workdir, sim_factory, service_factory):
    """SIGSTOP the writer mid-backfill: the scheduler stops releasing at `max_uncommitted`, pages
    it already fetched are waited for, not fetched again every lease; after SIGCONT everything
    is committed and every table is exact."""
    sim = sim_factory(symbols=20, weight_limit=1_000_000, latency_ms=50)
    symbols = trading_symbols(sim)
    depth = {"1m": 5000, "5m": 3000, "1h": 1000}
    stall_s = 30
    config = service_config(workdir, sim, depth, downloader={"max_uncommitted": 16, "lease_s": 5.0},
                            supervisor={"heartbeat_timeout_s": stall_s + 120})
    started = sim.info()["server_time_ms"]
    service = service_factory(config, ["--once"])
    wait_for(lambda: "event=progress" in service.log_text(), 60, what="backfill under way")
    writer = service.pid("writer")
    downloaders = [service.pid("downloader-1"), service.pid("downloader-2")]
    os.kill(writer, signal.SIGSTOP)
    try:
        wait_for(lambda: "event=release_held" in service.log_text(), 30, what="release held")
        asked_at_hold = sim.stats()["requests_by_path"].get("/fapi/v1/klines", 0)
        rss_at_hold = [_rss_kib(pid) for pid in downloaders]
        stopped_at = time.monotonic()
        while time.monotonic() < stopped_at + stall_s:  # the stall itself is the stimulus
            assert service.proc.poll() is None, service.log_text()[-3000:]
            time.sleep(1.0)
        asked_in_stall = sim.stats()["requests_by_path"].get("/fapi/v1/klines", 0) - asked_at_hold
        rss_end = [_rss_kib(pid) for pid in downloaders]
    finally:
        os.kill(writer, signal.SIGCONT)
    # Six leases passed: nothing was fetched again, nothing new was released.
    assert asked_in_stall <= 16, asked_in_stall
    assert all(end <= start + 16 * 1024 for start, end in zip(rss_at_hold, rss_end)), (rss_at_hold, rss_end)
    code = service.proc.wait(timeout=300)
    code, log = service.stop()
    assert code == 0, log[-3000:]
    assert log.count("event=actor_started name=writer ") == 1  # stopped, never restarted
    assert "event=release_resumed" in log
    assert_exact(workdir / "db.sqlite", sim, symbols, depth, started, sim.info()["server_time_ms"])
