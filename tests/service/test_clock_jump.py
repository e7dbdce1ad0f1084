"""A clock jump (suspend and resume, a bad serverTime): the exchange's clock moves 30 minutes
ahead while the service runs. The scheduler must not plan every missed boundary for every symbol
in one tick; it fetches each interval's newest close and lets backfill fill the rest, exactly."""

from __future__ import annotations

import re

import pytest

from exactness import stored_rows, trading_symbols, truth_rows
from kl_actors.core import intervals
from kl_actors.store import Store
from harness import make_config, offset_before_boundary, wait_for

pytestmark = pytest.mark.slow(45)
JUMP_MS = 30 * 60_000
# The simulator starts at :15 of a minute: the service is up and has planned before time-sync's
# next sample (at :30 of each server minute), which sees the jump; a boundary follows at :00.
LEAD_MS = 45_000


def test_thirty_minute_jump_plans_newest_boundaries_only_and_backfills_the_rest(workdir, sim_factory,
                                                                                 service_factory):
    sim = sim_factory(symbols=4, weight_limit=1_000_000, ws_push_ms=500,
                      clock_offset_ms=offset_before_boundary("1m", LEAD_MS))
    symbols = trading_symbols(sim)
    config = make_config(
        workdir,
        exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url, "request_timeout_s": 3.0},
        klines={"intervals": ["1m", "5m"], "depth": {"1m": 60, "5m": 20}},
        symbols={"rediscover_s": 5.0},
        downloader={"processes": 2, "lease_s": 5.0},
        live={"final_recheck_ms": 2000, "boundary_margin_ms": 200},
    )
    service = service_factory(config)
    try:
        service.wait_running(["scheduler", "timesync", "writer"], timeout=20)
        wait_for(lambda: "event=planned " in service.log_text(), 30, what="first plan")
        sim.set_faults(clock_offset_ms=JUMP_MS)
        wait_for(lambda: "event=clock_jump" in service.log_text(), 90, what="the jump noticed")
        jumped_server = sim.info()["server_time_ms"]
        edge = intervals.last_closed_open("1m", jumped_server)
        store_path = config.database.path

        def caught_up():
            store = Store.open_readonly(path=store_path)
            try:
                return all((store.last_open_ms(s, "1m") or 0) >= edge for s in symbols) and all(
                    store.count(s, "1m") == intervals.count_between(
                        "1m", store.first_open_ms(s, "1m"), store.last_open_ms(s, "1m")) for s in symbols)
            finally:
                store.close()

        wait_for(caught_up, 90, interval=0.5, what="the missed half hour backfilled")
        wait_for(lambda: "event=boundary " in service.log_text().split("event=clock_jump", 1)[1], 75,
                 what="a boundary after the jump")
        end_server = sim.info()["server_time_ms"]
    finally:
        code, log = service.stop()
    assert code == 0, log[-3000:]
    assert "actor_silent" not in log
    # Each boundary planned after the jump is a current one, never a half-hour-old one.
    after = log[log.index("event=clock_jump"):]
    missed_s = float(re.search(r"event=clock_jump missed_s=([\d.]+)", after).group(1))
    assert JUMP_MS / 1000 - 120 < missed_s < JUMP_MS / 1000 + 120
    lates = [int(x) for x in re.findall(r"event=boundary boundary_ms=\d+ .*?late_ms=(-?\d+)", after)]
    assert lates and max(lates) < 60_000, lates
    store = Store.open_readonly(path=store_path)
    try:
        for symbol in symbols:
            for interval in ("1m", "5m"):
                rows = stored_rows(store, symbol, interval)
                last_closed = intervals.last_closed_open(interval, end_server)
                # Gap-free from the first stored candle, equal to truth, up to the edge at the end.
                assert rows[-1][0] >= intervals.step(interval, last_closed, -1)
                assert rows == truth_rows(sim, symbol, interval, rows[0][0], rows[-1][0]), (symbol, interval)
    finally:
        store.close()
