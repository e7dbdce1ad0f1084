"""Chaos: kill -9 of a random actor every few seconds for about two minutes, through backfill and the
live edge (at least two minute boundaries), then every table is exactly the exchange's truth,
gap-free from its first candle to the last one closed."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from exactness import stored_rows, trading_symbols, truth_rows
from kl_actors.core import intervals
from kl_actors.store import Store
from harness import make_config, offset_before_boundary, wait_for

pytestmark = pytest.mark.slow(140)
LEAD_MS = 15_000  # server time from the simulator's start to the first boundary
ACTORS = ["broker", "writer", "timesync", "scheduler", "downloader-1", "downloader-2", "websocket"]


def test_random_kill9_every_few_seconds_through_backfill_and_live_every_table_exact(
        workdir, sim_factory, service_factory):
    sim = sim_factory(symbols=8, weight_limit=1_000_000, latency_ms=100, ws_push_ms=500,
                      clock_offset_ms=offset_before_boundary("1m", LEAD_MS))
    symbols = trading_symbols(sim)
    depth = {"1m": 3000, "5m": 1000}
    config = make_config(
        workdir,
        exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url, "request_timeout_s": 3.0},
        klines={"intervals": list(depth), "depth": depth},
        symbols={"rediscover_s": 10.0},
        downloader={"processes": 2, "concurrency": 2, "lease_s": 4.0},
        live={"final_recheck_ms": 2000, "boundary_margin_ms": 200},
        supervisor={"max_restarts": 30, "restart_window_s": 60.0})
    service = service_factory(config)
    rng = random.Random(int(time.time()))
    killed: list[str] = []
    service.wait_running(ACTORS, timeout=30)
    # Two minute boundaries inside the chaos, which ends 10 s before a third: the calm boundary.
    chaos_until = intervals.next_boundary("1m", sim.info()["server_time_ms"]) + 110_000
    while sim.info()["server_time_ms"] < chaos_until:
        name = rng.choice(ACTORS)
        pid = service.pid(name)
        if pid:
            os.kill(pid, signal.SIGKILL)
            killed.append(name)
        # The next victim is picked once everything is back up: a kill every 2-4 s.
        service.wait_running(ACTORS, timeout=30)
        time.sleep(rng.uniform(2.0, 4.0))  # the interval between kills is the stimulus itself
        assert service.proc.poll() is None, service.log_text()[-3000:]
    assert len(set(killed)) >= 5, killed
    # Calm again: wait for a boundary and its re-check after the last kill, then for backfill.
    calm_from = sim.info()["server_time_ms"]
    boundary = intervals.next_boundary("1m", calm_from)
    wait_for(lambda: sim.info()["server_time_ms"] >= boundary + 8000, 75, what="a calm boundary")

    calm_now = sim.info()["server_time_ms"]

    def incomplete():
        """Tables not yet gap-free up to the candles closed before the calm boundary."""
        store = Store.open_readonly(path=config.database.path)
        try:
            missing = []
            for symbol in symbols:
                for interval in depth:
                    first, last = store.first_last(symbol, interval)
                    want = intervals.last_closed_open(interval, calm_now - 5000)
                    if last is None or last < want or \
                            store.count(symbol, interval) != intervals.count_between(interval, first, last):
                        missing.append((symbol, interval, first, last, want, store.count(symbol, interval)))
            return missing
        finally:
            store.close()

    try:
        wait_for(lambda: not incomplete(), 120, interval=1.0, what="every table complete")
    except AssertionError:
        raise AssertionError(f"incomplete: {incomplete()}\n{service.log_text()[-4000:]}") from None
    code, log = service.stop()
    assert code == 0, log[-3000:]
    end = sim.info()["server_time_ms"]
    store = Store.open_readonly(path=config.database.path)
    try:
        for symbol in symbols:
            for interval in depth:
                rows = stored_rows(store, symbol, interval)
                last_final = intervals.last_closed_open(interval, end - 10_000)
                rows = [r for r in rows if r[0] <= last_final]
                assert len(rows) >= depth[interval] - 1
                assert rows == truth_rows(sim, symbol, interval, rows[0][0], rows[-1][0]), (symbol, interval)
    finally:
        store.close()
