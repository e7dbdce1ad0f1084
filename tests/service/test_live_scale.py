"""200 symbols x (1m, 5m) live across two boundaries under a tight weight limit: every closed candle
reaches the database (final, from REST) and the feed, and no minute's weight exceeds the limit.

The simulator's clock is set so that the run starts ~30 s before a 5-minute boundary: at that
boundary 200 1m and 200 5m candles close together, and with the finality re-check that is 800
weight against a usable 784 (0.98) of the 800 limit, so the scheduler must spread the fetches into the
next minute (shortest interval first) while the WebSocket closes stand in.
"""

from __future__ import annotations


import pytest

from exactness import stored_rows, trading_symbols, truth_rows
from kl_actors.core import intervals
from kl_actors import messages
from kl_actors.store import Store
from harness import FeedCollector, make_config, offset_before_boundary, wait_for

SYMBOLS = 200
WEIGHT_LIMIT = 800
LEAD_MS = 30_000  # server time from the simulator's start to the 5-minute boundary


@pytest.mark.slow(105)
def test_two_hundred_symbols_two_intervals_live(workdir, sim_factory, service_factory):
    sim = sim_factory(symbols=SYMBOLS, weight_limit=WEIGHT_LIMIT, ws_push_ms=1000,
                      clock_offset_ms=offset_before_boundary("5m", LEAD_MS))
    symbols = trading_symbols(sim)
    assert len(symbols) == SYMBOLS
    five = intervals.next_boundary("5m", sim.info()["server_time_ms"])
    config = make_config(
        workdir,
        exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url, "request_timeout_s": 5.0},
        klines={"intervals": ["1m", "5m"], "depth": {"1m": 30, "5m": 10}},
        downloader={"processes": 2, "lease_s": 10.0},
        live={"final_recheck_ms": 5000, "boundary_margin_ms": 200},
    )
    consumer = FeedCollector(config.endpoints.feed)
    feed = consumer.messages
    service = service_factory(config)
    # Two 1m boundaries: the 5m one, and the next, whose minute also pays for what the first spilled.
    end = intervals.step("1m", five, 1)
    try:
        service.wait_running(["broker", "writer", "timesync", "scheduler", "downloader-1", "websocket"], timeout=20)
        assert sim.info()["server_time_ms"] < five - 10_000, "started too late to see the 5m boundary"
        wait_for(lambda: sim.info()["server_time_ms"] >= end + 12_000, timeout=200, what="last boundary + re-check")
    finally:
        code, err = service.stop()
        consumer.stop()
    assert code == 0, err[-3000:]

    stats = sim.stats()
    assert stats["responses_by_status"]["429"] == 0 and stats["responses_by_status"]["418"] == 0, \
        (stats["responses_by_status"], stats["weight_by_ip_minute"])
    per_minute = stats["weight_by_ip_minute"]["127.0.0.1"]
    assert max(per_minute.values()) <= WEIGHT_LIMIT, per_minute
    # The scheduler saw every boundary's fetches through (it logs how far behind they ran).
    assert err.count("event=boundary_done") >= 3, err[-3000:]

    expected = {
        "1m": [intervals.prev_open("1m", b) for b in (five, end)],
        "5m": [intervals.prev_open("5m", five)],
    }
    store = Store.open_readonly(path=config.database.path)
    try:
        for symbol in symbols:
            for interval, opens in expected.items():
                rows = stored_rows(store, symbol, interval)
                have = [r[0] for r in rows]
                assert set(opens) <= set(have), (symbol, interval, opens, have[-5:])
                # Contiguous, exact, final: the whole table equals the exchange's history.
                assert rows == truth_rows(sim, symbol, interval, have[0], have[-1]), (symbol, interval)
                ws_left = [r[0] for r in store.candles(symbol, interval, opens[0], opens[-1]) if r[11] != "rest"]
                assert not ws_left, (symbol, interval, "not replaced by the REST copy", ws_left, opens)
    finally:
        store.close()

    by_topic: dict[bytes, list] = {}
    for topic, k in feed:
        assert not isinstance(k, messages.DecodeError)
        by_topic.setdefault(topic, []).append(k)
    for symbol in symbols:
        for interval, opens in expected.items():
            got = by_topic.get(messages.feed_topic(symbol, interval), [])
            seqs = [k.seq for k in got]
            assert seqs and seqs == list(range(seqs[0], seqs[0] + len(seqs))), (symbol, interval)
            ws_closes = {k.candle.open_time_ms for k in got if k.closed and k.source == "ws" and not k.stored}
            stored_rest = {k.candle.open_time_ms for k in got if k.closed and k.stored and k.source == "rest"}
            assert set(opens) <= ws_closes, (symbol, interval, "WebSocket close missing on the feed")
            assert set(opens) <= stored_rest, (symbol, interval, "stored REST candle missing on the feed")
