"""Backfill end to end: supervisor --once against the simulator, the file compared with truth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import apsw
import pytest

from exactness import assert_exact, run_once, trading_symbols
from kl_actors.core import intervals
from harness import backfill_config, server_ms, ROOT, RunningService, wait_for, write_toml

FOUR = {"1m": 1000, "5m": 1000, "1h": 1000, "1d": 500}


service_config = backfill_config


@pytest.mark.slow
def test_fifty_symbols_four_intervals_from_empty_then_only_tail(workdir, sim_factory):
    sim = sim_factory(symbols=50, weight_limit=1_000_000)
    symbols = trading_symbols(sim)
    assert len(symbols) == 50
    config = service_config(workdir, sim, FOUR)
    started = server_ms(sim)
    code, err = run_once(config, workdir)
    assert code == 0, err[-3000:]
    checked = assert_exact(workdir / "db.sqlite", sim, symbols, FOUR, started, server_ms(sim))
    assert checked > 50 * 1500
    assert "event=once_summary" in err and "failed=0" in err

    # Second run: only the tails are asked, at most one small page per table.
    sim.reset_stats()
    code, err = run_once(config, workdir)
    assert code == 0, err[-3000:]
    by_table = sim.stats()["requests_by_symbol_interval"]
    assert all(count == 1 for count in by_table.values()), by_table
    assert set(by_table) <= {f"{s} {i}" for s in symbols for i in FOUR}
    # The depth was counted when the first run planned the table.
    assert_exact(workdir / "db.sqlite", sim, symbols, FOUR, started, server_ms(sim))


def test_punched_holes_refilled_and_maintenance_hole_recorded_once(workdir, sim_factory):
    sim = sim_factory(symbols=5, weight_limit=1_000_000)
    symbols = trading_symbols(sim)
    depth = {"1m": 600, "1h": 300}
    now = server_ms(sim)
    last_hour = intervals.last_closed_open("1h", now)
    # The exchange itself has no candles for BTCUSDT 1h in a 3-hour window (maintenance).
    hole_start, hole_end = intervals.step("1h", last_hour, -100), intervals.step("1h", last_hour, -98)
    sim.add_hole("BTCUSDT", hole_start, intervals.next_open("1h", hole_end))
    config = service_config(workdir, sim, depth, klines={"hole_confirm_s": 1.0})
    code, err = run_once(config, workdir)
    assert code == 0, err[-3000:]
    # The page around the maintenance window came back without it: recorded at once, from the
    # page itself (the exchange answered that range), never asked for.
    assert (f"event=exchange_hole_confirmed symbol=BTCUSDT interval=1h start_ms={hole_start} "
            f"end_ms={hole_end} ranges=1 source=page") in err

    # Punch holes into our own copy: they must be found and refilled exactly.
    db = apsw.Connection(str(workdir / "db.sqlite"))
    one_minute_start = intervals.step("1m", intervals.last_closed_open("1m", now), -300)
    db.execute("DELETE FROM k_eth_1m WHERE open_time BETWEEN ? AND ?",
               (one_minute_start, intervals.step("1m", one_minute_start, 9)))
    db.execute("DELETE FROM k_1000pepe_1h WHERE open_time = ?", (intervals.step("1h", last_hour, -50),))
    db.close()
    sim.reset_stats()
    code, err = run_once(config, workdir)
    assert code == 0, err[-3000:]
    assert "exchange_hole_confirmed" not in err  # the refilled holes were ours, not the exchange's
    assert_exact(workdir / "db.sqlite", sim, symbols, depth, now, server_ms(sim))  # depth set by run 1
    with apsw.Connection(str(workdir / "db.sqlite")) as conn:
        recorded = conn.execute("SELECT symbol, interval, start_ms, end_ms FROM meta_holes").fetchall()
    assert recorded == [("BTCUSDT", "1h", hole_start, hole_end)]

    # Third run: the confirmed hole is not asked again (only a tail, if an hour closed meanwhile).
    before = server_ms(sim)
    sim.reset_stats()
    code, err = run_once(config, workdir)
    assert code == 0, err[-3000:]
    asked = sim.stats()["requests_by_symbol_interval"].get("BTCUSDT 1h", 0)
    hour_closed = intervals.last_closed_open("1h", server_ms(sim)) != intervals.last_closed_open("1h", before)
    assert asked == (1 if hour_closed else 0)
    assert "exchange_hole_confirmed" not in err


def test_an_empty_answer_for_a_moment_is_not_recorded_as_a_hole(workdir, sim_factory):
    """A blip: the exchange answers nothing for a range it has, then serves it again. The first
    empty answer is asked again only `hole_confirm_s` later, so the range is stored, not recorded."""
    sim = sim_factory(symbols=2, weight_limit=1_000_000)
    symbols = trading_symbols(sim)
    depth = {"1h": 300}
    config = service_config(workdir, sim, depth, klines={"hole_confirm_s": 3.0})
    code, err = run_once(config, workdir)
    assert code == 0, err[-3000:]
    last_hour = intervals.last_closed_open("1h", server_ms(sim))
    gone_start, gone_end = intervals.step("1h", last_hour, -40), intervals.step("1h", last_hour, -30)
    db = apsw.Connection(str(workdir / "db.sqlite"))
    db.execute("DELETE FROM k_btc_1h WHERE open_time BETWEEN ? AND ?", (gone_start, gone_end))
    db.close()
    sim.add_hole("BTCUSDT", gone_start, intervals.next_open("1h", gone_end))
    service = RunningService(config, workdir, extra_args=["--once"])
    try:
        def first_empty_answer():
            if "event=hole_empty_once symbol=BTCUSDT" in service.log_text():
                return True
            assert service.proc.poll() is None, service.log_text()[-3000:]  # ended without asking
            return False

        wait_for(first_empty_answer, 90, what="first empty answer")
        sim.clear_holes("BTCUSDT")  # the blip is over before the second look
        service.proc.wait(timeout=120)
        code, err = service.stop()
    finally:
        service.cleanup()
    assert code == 0, err[-3000:]
    assert "exchange_hole_confirmed" not in err
    with apsw.Connection(str(workdir / "db.sqlite")) as conn:
        assert conn.execute("SELECT count(*) FROM meta_holes").fetchall() == [(0,)]
        assert conn.execute("SELECT count(*) FROM k_btc_1h WHERE open_time BETWEEN ? AND ?",
                            (gone_start, gone_end)).fetchall() == [(11,)]
    assert_exact(workdir / "db.sqlite", sim, symbols, depth, 0, server_ms(sim))


@pytest.mark.slow
def test_low_weight_limit_four_downloaders_never_throttled(workdir, sim_factory):
    sim = sim_factory(symbols=8, weight_limit=60)
    symbols = trading_symbols(sim)
    depth = {"1m": 1497, "1h": 499}  # 4 pages of weight 2 per symbol: 64 > one minute of 60
    config = service_config(workdir, sim, depth, downloader={"processes": 4, "concurrency": 2})
    started = server_ms(sim)
    code, err = run_once(config, workdir, timeout=200)
    assert code == 0, err[-3000:]
    stats = sim.stats()
    assert stats["responses_by_status"]["429"] == 0 and stats["responses_by_status"]["418"] == 0
    per_minute = stats["weight_by_ip_minute"]["127.0.0.1"]
    assert max(per_minute.values()) <= 60, per_minute
    assert len(per_minute) >= 2  # it really had to wait for the next minute
    assert_exact(workdir / "db.sqlite", sim, symbols, depth, started, server_ms(sim))


def test_faults_still_exact(workdir, sim_factory):
    sim = sim_factory(symbols=10, weight_limit=1_000_000, seed=7)
    sim.set_faults(error_5xx_rate=0.1, reset_rate=0.1, malformed_rate=0.1, timeout_rate=0.05)
    symbols = _retry_info(sim)
    depth = {"1m": 1000, "5m": 500}
    config = service_config(workdir, sim, depth, downloader={"max_attempts": 30})
    started = server_ms(sim)
    code, err = run_once(config, workdir)
    assert code == 0, err[-3000:]
    sim.set_faults(error_5xx_rate=0.0, reset_rate=0.0, malformed_rate=0.0, timeout_rate=0.0)
    stats = sim.stats()["responses_by_status"]
    assert stats["5xx"] > 0
    assert "status=invalid" in err or "status=network" in err
    assert_exact(workdir / "db.sqlite", sim, symbols, depth, started, server_ms(sim))


def _retry_info(sim):
    # exchangeInfo itself may be hit by a fault: the test reads it until it comes back whole.
    def ok():
        try:
            return trading_symbols(sim)
        except Exception:
            return None
    return wait_for(ok, timeout=20, what="exchangeInfo without a fault")


@pytest.mark.slow
def test_kill9_downloader_and_scheduler_mid_backfill_still_exact(workdir, sim_factory):
    sim = sim_factory(symbols=20, weight_limit=1_000_000, latency_ms=300)
    symbols = trading_symbols(sim)
    depth = {"1m": 1500, "5m": 1000, "1h": 1000}
    config = service_config(workdir, sim, depth, downloader={"lease_s": 4.0})
    toml = write_toml(config, workdir / "once.toml")
    started = server_ms(sim)
    proc = subprocess.Popen([sys.executable, str(ROOT / "supervisor.py"), "--config", str(toml), "--once"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines: list[str] = []
    reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
    reader.start()
    status_file = workdir / "rt" / "status.json"
    try:
        import json

        def pid_of(name):
            try:
                return json.loads(status_file.read_text())["actors"][name]["pid"]
            except (FileNotFoundError, KeyError, json.JSONDecodeError):
                return None

        wait_for(lambda: any("event=progress" in line for line in err_lines), timeout=60,
                 what="backfill under way")
        victim = wait_for(lambda: pid_of("downloader-1"), timeout=10, what="downloader pid")
        os.kill(victim, signal.SIGKILL)
        time.sleep(1.5)
        scheduler = wait_for(lambda: pid_of("scheduler"), timeout=10, what="scheduler pid")
        os.kill(scheduler, signal.SIGKILL)
        code = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    reader.join(timeout=5)
    err = "".join(err_lines)
    assert code == 0, err[-3000:]
    assert "event=actor_exited name=downloader-1" in err and "event=actor_exited name=scheduler" in err
    assert_exact(workdir / "db.sqlite", sim, symbols, depth, started, server_ms(sim))
