"""The whole service in normal mode against the simulator: live edge, clock offset, finality,
listing and delisting during the run, and the consumer feed."""

from __future__ import annotations

import time

import msgspec
import pytest

from exactness import stored_rows, trading_symbols, truth_rows
from kl_actors.core import intervals
from kl_actors import messages
from kl_actors.store import Store
from harness import FeedCollector, make_config, offset_before_boundary, wait_for


LEAD_MS = 30_000  # server time from the simulator's start to the first boundary


@pytest.mark.slow(100)
def test_live_edge_with_clock_offset_finality_listing_and_delisting(workdir, sim_factory, service_factory):
    sim = sim_factory(symbols=6, weight_limit=1_000_000, # The service must follow the exchange's clock (4 to 64 s ahead), not this host's.
                      clock_offset_ms=offset_before_boundary("1m", LEAD_MS, at_least_ms=4000),
                      final_delay_ms=1500, ws_push_ms=200)
    symbols = trading_symbols(sim)
    config = make_config(
        workdir,
        exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url, "request_timeout_s": 3.0},
        klines={"intervals": ["1m", "3m"], "depth": {"1m": 30, "3m": 10}},
        symbols={"rediscover_s": 5.0},
        downloader={"processes": 2, "lease_s": 5.0},
        live={"final_recheck_ms": 3000, "boundary_margin_ms": 200},
    )
    consumer = FeedCollector(config.endpoints.feed)
    feed = consumer.messages
    service = service_factory(config)
    try:
        service.wait_running(["broker", "writer", "timesync", "scheduler", "downloader-1", "websocket"], timeout=20)
        # The listing changes must come after the scheduler's first discovery, or ETHUSDT is never
        # seen trading by this run (on a busy machine the first discovery can come seconds late).
        wait_for(lambda: "actor=scheduler event=discovered" in service.log_text(), 30, what="first discovery")
        # A symbol listed before the first boundary (its first candle closes there), one delisted
        # after it.
        listed_ms = sim.list_symbol("NEWCOINUSDT")["onboardDate"]
        start_server = sim.info()["server_time_ms"]
        wait_for(lambda: sim.info()["server_time_ms"] >= intervals.next_boundary("1m", start_server) + 1000,
                 timeout=70, what="first boundary")
        sim.delist("ETHUSDT")
        delisted_at = time.monotonic()
        try:
            wait_for(lambda: "event=symbol_delisted symbol=ETHUSDT" in service.log_text(), 30, what="one rediscovery")
        except AssertionError:
            lines = [ln for ln in service.log_text().splitlines()
                     if ("actor=scheduler" in ln or "name=scheduler" in ln)
                     and "event=boundary " not in ln and "event=progress" not in ln]
            raise AssertionError("no rediscovery in 30 s; the scheduler said:\n" + "\n".join(lines[-40:])) from None
        eth_requests = sim.stats()["requests_by_symbol_interval"].get("ETHUSDT 1m", 0)
        # One more boundary, plus its finality re-check; at least one after the boundary that
        # closed the new symbol's first 1m candle (later only when the start was slow).
        target = max(intervals.next_boundary("1m", sim.info()["server_time_ms"]),
                     intervals.next_boundary("1m", listed_ms) + intervals.MINUTE_MS)
        wait_for(lambda: sim.info()["server_time_ms"] >= target + 5000, timeout=75, what="the next boundary")
        end_server = sim.info()["server_time_ms"]
        assert sim.stats()["requests_by_symbol_interval"].get("ETHUSDT 1m", 0) == eth_requests, \
            "a delisted symbol was requested again"
        assert time.monotonic() - delisted_at > 60
    finally:
        code, err = service.stop()
        consumer.stop()
    assert code == 0, err[-3000:]

    # The new symbol's first 1m candle is among those checked in full below.
    assert intervals.last_closed_open("1m", end_server - 6000) >= intervals.align("1m", listed_ms)
    store = Store.open_readonly(path=config.database.path)
    try:
        followed = dict(symbols)
        followed.pop("ETHUSDT")
        assert "NEWCOINUSDT" in store.kline_tables(), "the symbol listed during the run was not backfilled"
        for symbol in [*followed, "NEWCOINUSDT"]:
            for interval in ("1m", "3m"):
                last_closed = intervals.last_closed_open(interval, end_server - 6000)
                rows = stored_rows(store, symbol, interval)
                if symbol == "NEWCOINUSDT" and last_closed < intervals.align(interval, listed_ms):
                    # Listed inside a 3m candle that had not closed 6 s before the end: at most
                    # that candle, if it closed in those last seconds.
                    assert all(r[0] == intervals.align(interval, listed_ms) for r in rows), \
                        f"{symbol} {interval} has candles from before its listing"
                    continue
                assert rows and rows[-1][0] >= last_closed, f"{symbol} {interval} not current"
                truth = truth_rows(sim, symbol, interval, rows[0][0], rows[-1][0])
                # The final values, never the provisional ones served during the finality delay.
                assert rows == truth, f"{symbol} {interval} differs from truth"
                # Every settled candle is the authoritative REST copy (WebSocket closes were replaced).
                settled = store.candles(symbol, interval, None, last_closed)
                assert {r[11] for r in settled} == {"rest"} or (symbol == "NEWCOINUSDT" and not settled), \
                    f"{symbol} {interval}: sources {sorted({r[11] for r in settled})}"
    finally:
        store.close()

    # The feed: live updates and stored closed candles, gap-free sequences per topic.
    assert feed, "no feed messages"
    by_topic: dict[bytes, list] = {}
    for topic, k in feed:
        assert not isinstance(k, messages.DecodeError)
        assert topic == messages.feed_topic(k.symbol, k.interval)
        by_topic.setdefault(topic, []).append(k)
    btc = by_topic[b"kline.BTCUSDT.1m"]
    seqs = [k.seq for k in btc]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert any(not k.closed for k in btc)
    stored_closed = [k for k in btc if k.closed and k.stored and k.source == "rest"]
    assert stored_closed, "no stored closed candle reached the feed"
    rechecked = {}
    for k in stored_closed:
        rechecked[k.candle.open_time_ms] = k.candle  # the last publication of each candle wins
    for open_ms, c in rechecked.items():
        [truth] = sim.truth("BTCUSDT", "1m", open_ms, open_ms)
        assert list(msgspec.structs.astuple(c)) == truth
