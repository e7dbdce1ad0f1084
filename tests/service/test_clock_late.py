"""The first ClockSync comes late (time-sync slow to start) while the exchange's clock is minutes
ahead of this host's: the first planning pass stopped at the host's "now", minutes short of the
exchange's. Tables still being filled when the clock arrives must still get their newest candles
(the pass after the sync plans their tail), or they end minutes short until the next pass. And the
weight released on the host's clock must count in the exchange's minutes: a sync that moves the
budget into a new minute must not spend that minute's weight a second time."""

from __future__ import annotations

import time

import pytest

from exactness import stored_rows, trading_symbols, truth_rows
from kl_actors.core import intervals
from kl_actors.store import Store
from harness import ActorProcess, make_config, wait_for

AHEAD_MS = 150_000  # the exchange's clock, ahead of this host's


@pytest.mark.slow(40)
def test_tail_after_a_late_first_clock_sync_is_fetched_for_tables_still_being_filled(workdir, sim_factory,
                                                                                        service_factory):
    sim = sim_factory(symbols=4, weight_limit=1_000_000, clock_offset_ms=AHEAD_MS, latency_ms=100)
    symbols = trading_symbols(sim)
    config = make_config(
        workdir,
        exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url, "request_timeout_s": 5.0},
        klines={"intervals": ["1m"], "depth": {"1m": 40_000}},
        downloader={"processes": 2, "concurrency": 1, "lease_s": 10.0},
    )
    # Everything but time-sync: --once plans at once on the host's clock.
    service = service_factory(config, ["--once", "--actors", "broker,writer,scheduler,downloader-1,downloader-2"])
    timesync = None
    try:
        wait_for(lambda: "actor=scheduler event=planned " in service.log_text(), 30, what="the first plan")
        synced_server_ms = sim.info()["server_time_ms"]
        timesync = ActorProcess("timesync", config, workdir)
        wait_for(lambda: service.proc.poll() is not None, 180, what="the --once run to end")
    finally:
        if timesync is not None:
            timesync.stop()
    code, err = service.stop()
    assert code == 0, err[-3000:]
    plans = [ln for ln in err.splitlines() if "actor=scheduler event=planned " in ln]
    assert len(plans) >= 2, "no pass after the clock arrived:\n" + "\n".join(plans)

    edge = intervals.last_closed_open("1m", synced_server_ms)
    store = Store.open_readonly(path=config.database.path)
    try:
        for symbol in symbols:
            rows = stored_rows(store, symbol, "1m")
            assert rows, symbol
            last = rows[-1][0]
            assert last >= edge, (symbol, "ends", (edge - last) // 60_000, "candles short of the exchange's now")
            assert rows == truth_rows(sim, symbol, "1m", rows[0][0], last), symbol
    finally:
        store.close()


WEIGHT_LIMIT = 100


@pytest.mark.slow(60)
def test_weight_released_before_a_late_clock_sync_counts_in_the_exchanges_minute(workdir, sim_factory,
                                                                                  service_factory):
    # The exchange's clock is ahead by just enough that its minute E began 20 s ago while this
    # host's minute is the one before: the budget's first minute is not the exchange's, and the
    # sync moves it into E, where the first releases already count. E has 40 s left: time to
    # start, release, sync and (were the releases forgotten) release again.
    # And this host's minute must outlast E: before the first sync the budget runs on this host's
    # clock, so a host minute ending inside E would start a fresh budget in E (already spent)
    # before any sync could say otherwise. From :20 on, the host's next minute is waited for.
    if int(time.time() * 1000) % 60_000 > 20_000:
        wait_for(lambda: int(time.time() * 1000) % 60_000 < 20_000, 45, interval=0.2,
                 what="this host's next minute")
    phase_ms = int(time.time() * 1000) % 60_000
    ahead_ms = 80_000 - phase_ms
    # Answers take 300 ms: a budget that forgot its releases would fill every free slot before the
    # first header after the sync could correct it.
    sim = sim_factory(symbols=4, weight_limit=WEIGHT_LIMIT, clock_offset_ms=ahead_ms, latency_ms=300)
    symbols = trading_symbols(sim)
    config = make_config(
        workdir,
        exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url, "request_timeout_s": 5.0},
        klines={"intervals": ["1m"], "depth": {"1m": 12_000}},  # ~2.2 minutes of weight at 100
        downloader={"processes": 2, "concurrency": 8, "lease_s": 10.0},
    )
    service = service_factory(config, ["--once", "--actors", "broker,writer,scheduler,downloader-1,downloader-2"])
    started = sim.info()["server_time_ms"]
    minute = str(started - started % 60_000)

    def weight_now() -> int:
        return sim.stats()["weight_by_ip_minute"].get("127.0.0.1", {}).get(minute, 0)

    timesync = None
    try:
        wait_for(lambda: weight_now() >= 0.8 * WEIGHT_LIMIT, 30, what="the first minute's releases")
        timesync = ActorProcess("timesync", config, workdir)
        try:
            wait_for(lambda: "event=clock_measured" in timesync.stderr(), 30, what="the first clock sync")
        except AssertionError:
            raise AssertionError(f"no clock sync in 30 s; time-sync said:\n{timesync.stderr()[-3000:]}\n"
                                 f"simulator: {sim.stats()['responses_by_status']}") from None
        synced_at = sim.info()["server_time_ms"]
        assert synced_at < int(minute) + 57_000, "the sync came after the minute under test: nothing shown"
        # The rest of the minute: time for a budget that forgot its releases to spend again.
        wait_for(lambda: sim.info()["server_time_ms"] >= int(minute) + 61_000, 70, what="the minute's end")
    finally:
        if timesync is not None:
            timesync.stop()
    code, err = service.stop()
    stats = sim.stats()
    assert stats["responses_by_status"]["429"] == 0 and stats["responses_by_status"]["418"] == 0, \
        (stats["responses_by_status"], stats["weight_by_ip_minute"])
    per_minute = stats["weight_by_ip_minute"]["127.0.0.1"]
    assert per_minute[minute] <= WEIGHT_LIMIT, per_minute
    store = Store.open_readonly(path=config.database.path)
    try:
        stored = 0
        for symbol in symbols:
            rows = stored_rows(store, symbol, "1m")
            stored += len(rows)
            if rows:
                # Stopped mid-run: pages land in any order, so the table may have holes, but
                # every stored candle is the exchange's.
                truth = {r[0]: r for r in truth_rows(sim, symbol, "1m", rows[0][0], rows[-1][0])}
                assert rows == [truth.get(r[0]) for r in rows], symbol
        assert stored >= 20_000, stored  # the first minute's pages (88 weight, 2 a page of 499)
    finally:
        store.close()


@pytest.mark.slow(75)
def test_no_boundary_is_planned_before_the_first_clock_sync(workdir, sim_factory, service_factory):
    """A live service whose time-sync is late plans no boundary on this host's clock (the exchange
    is hours ahead: a boundary of this host's minutes fetches some other minute's candles and
    reports them as that boundary); the first sync starts boundaries on the exchange's clock."""
    # Started 13-15 s before this host's minute ends, and the exchange's minute ends 15 s after it:
    # this host's boundary passes while the clock is unknown, the exchange's right after the sync.
    wait_for(lambda: 45_000 <= int(time.time() * 1000) % 60_000 < 47_000, 65, interval=0.1,
             what="this host's second 45")
    host_boundary = intervals.next_boundary("1m", int(time.time() * 1000))
    sim = sim_factory(symbols=4, weight_limit=1_000_000, ws_push_ms=500, clock_offset_ms=3 * 3_600_000 - 15_000)
    exchange_boundary = intervals.next_boundary("1m", sim.info()["server_time_ms"])
    config = make_config(
        workdir,
        exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url, "request_timeout_s": 5.0},
        klines={"intervals": ["1m"], "depth": {"1m": 10}},
        downloader={"processes": 1, "lease_s": 10.0},
        live={"final_recheck_ms": 2000, "boundary_margin_ms": 200},
    )
    service = service_factory(config, ["--actors", "broker,writer,scheduler,downloader-1,websocket"])
    timesync = None
    try:
        service.wait_running(["scheduler", "downloader-1", "websocket"])
        # This host's boundary, its margin and then some: the old scheduler planned it by now.
        wait_for(lambda: time.time() * 1000 >= host_boundary + 3000, 30, interval=0.1,
                 what="this host's boundary passed")
        assert int(time.time() * 1000) < exchange_boundary - 3 * 3_600_000 + 15_000 - 5000, \
            "too late to see the exchange's boundary after the sync"
        assert "event=boundary " not in service.log_text(), service.log_text()[-3000:]
        timesync = ActorProcess("timesync", config, workdir)
        done = f"event=boundary_done boundary_ms={exchange_boundary} interval=1m tasks=4 failed=0"
        wait_for(lambda: done in service.log_text(), 45, interval=0.2, what="the exchange's boundary confirmed")
    finally:
        if timesync is not None:
            timesync.stop()
        code, log = service.stop()
    assert code == 0, log[-3000:]
    planned = [int(line.split("boundary_ms=")[1].split()[0]) for line in log.splitlines()
               if " event=boundary " in line]
    assert planned and all(b >= exchange_boundary and b % 60_000 == 0 for b in planned), planned
