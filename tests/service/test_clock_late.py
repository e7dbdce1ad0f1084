"""The first ClockSync comes late (time-sync slow to start) while the exchange's clock is minutes
ahead of this host's: the first planning pass stopped at the host's "now", minutes short of the
exchange's. Tables still being filled when the clock arrives must still get their newest candles
(the pass after the sync plans their tail), or they end minutes short until the next pass."""

from __future__ import annotations

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
