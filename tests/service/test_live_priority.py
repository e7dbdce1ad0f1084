"""The top of the day under a tight weight limit: twelve intervals close at 00:00 UTC for every
symbol, more weight than a minute has. The next minute's 1m candles must not wait behind that
backlog, each candle is fetched once (at the re-check time) when the minute cannot pay for two,
and every candle still ends in the database from REST, exact.

Scaled down from 550 symbols x 2400 weight to the simulator's 4 trading symbols x 36: the service
reads the limit from exchangeInfo and may use 24 a minute after its reserve for time-sync; 48
candles close at midnight, so the backlog runs into 00:02, past the 1m closes of 00:01.
"""

from __future__ import annotations

import re

import pytest

from exactness import stored_rows, trading_symbols, truth_rows
from kl_actors.core import intervals
from kl_actors.store import Store
from harness import make_config, offset_before_boundary, wait_for

SYMBOLS = 3
WEIGHT_LIMIT = 36
LEAD_MS = 20_000  # server time from the simulator's start to 00:00 UTC
MIDNIGHT_INTERVALS = ["1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d"]
RECHECK_MS = 2000

_DONE_RE = re.compile(r"event=boundary_done boundary_ms=(\d+) interval=(\w+) tasks=(\d+) failed=(\d+) "
                      r"lag_p50_ms=(-?\d+) lag_max_ms=(-?\d+)")


def _done(service) -> list[tuple[int, str, int, int]]:
    """(boundary, interval, failed, lag_max_ms) of each boundary_done line, in log order."""
    return [(int(m[1]), m[2], int(m[4]), int(m[6])) for m in _DONE_RE.finditer(service.log_text())]


@pytest.mark.slow(145)
def test_fresh_one_minute_closes_overtake_the_top_of_day_backlog(workdir, sim_factory, service_factory):
    sim = sim_factory(symbols=SYMBOLS, weight_limit=WEIGHT_LIMIT, ws_push_ms=500,
                      clock_offset_ms=offset_before_boundary("1d", LEAD_MS))
    symbols = trading_symbols(sim)
    assert len(symbols) == 4
    midnight = intervals.next_boundary("1d", sim.info()["server_time_ms"])
    minute1, minute2 = midnight + intervals.MINUTE_MS, midnight + 2 * intervals.MINUTE_MS
    config = make_config(
        workdir,
        exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url, "request_timeout_s": 5.0},
        klines={"intervals": MIDNIGHT_INTERVALS},
        # The default lease: a shorter one re-issues a task whose request merely waited for a free
        # slot on a busy machine, and that second request is not what this test is about.
        downloader={"processes": 1, "lease_s": 30.0},
        live={"final_recheck_ms": RECHECK_MS, "boundary_margin_ms": 200},
    )
    service = service_factory(config, ["--stream-only"])
    try:
        service.wait_running(["broker", "writer", "timesync", "scheduler", "downloader-1", "websocket"], timeout=20)
        assert sim.info()["server_time_ms"] < midnight - 3_000, "started too late to see 00:00"

        def all_done():
            seen = {(b, i) for b, i, _, _ in _done(service)}
            return {(midnight, i) for i in MIDNIGHT_INTERVALS} | {(minute1, "1m"), (minute2, "1m")} <= seen
        wait_for(all_done, timeout=240, interval=0.5, what="midnight and the next two 1m boundaries confirmed")
    finally:
        code, err = service.stop()
    assert code == 0, err[-3000:]

    done = _done(service)
    lag = {(b, i): lag_max for b, i, _, lag_max in done}
    order = [(b, i) for b, i, _, _ in done]
    assert all(failed == 0 for _, _, failed, _ in done), done
    # 1m is confirmed within seconds of every close, midnight included, and the 00:01 close goes
    # before the 1d candle of 00:00 (which waits for a later minute's room).
    for boundary in (midnight, minute1, minute2):
        assert lag[(boundary, "1m")] < 10_000, (boundary, lag)
    assert order.index((minute1, "1m")) < order.index((midnight, "1d")), order
    assert lag[(midnight, "1d")] > intervals.MINUTE_MS, "no backlog: the test proves nothing"

    stats = sim.stats()
    assert stats["responses_by_status"].get("429", 0) == 0 and stats["responses_by_status"].get("418", 0) == 0
    assert max(stats["weight_by_ip_minute"]["127.0.0.1"].values()) <= WEIGHT_LIMIT
    # One fetch per closed candle: the minute could not pay for two.
    requests = stats["requests_by_symbol_interval"]
    for symbol in symbols:
        for interval in MIDNIGHT_INTERVALS[2:]:  # from 5m on, nothing else closed during the run
            assert requests.get(f"{symbol} {interval}") == 1, (
                symbol, interval, requests,
                [line for line in err.splitlines() if f":{symbol}:{interval}:" in line or "lease" in line][:20])

    store = Store.open_readonly(path=config.database.path)
    try:
        for symbol in symbols:
            for interval in MIDNIGHT_INTERVALS:
                opens = [intervals.prev_open(interval, midnight)]
                if interval == "1m":
                    opens += [intervals.prev_open("1m", minute1), intervals.prev_open("1m", minute2)]
                for open_ms in opens:
                    rows = store.candles(symbol, interval, open_ms, open_ms)
                    assert rows and rows[0][11] == "rest", (symbol, interval, open_ms, rows)
                    assert stored_rows(store, symbol, interval, open_ms, open_ms) == \
                        truth_rows(sim, symbol, interval, open_ms, open_ms), (symbol, interval, open_ms)
    finally:
        store.close()
