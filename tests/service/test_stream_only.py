"""--stream-only: no backfill, yet every candle that closes while it runs is stored, final and
exact, even when the exchange drops every WebSocket connection mid-minute; a feed consumer sees
that drop as a seq jump on every topic, and still gets every stored closed candle."""

from __future__ import annotations

import os
import signal

import pytest

from exactness import stored_rows, trading_symbols, truth_rows
from kl_actors.core import intervals
from kl_actors import messages
from kl_actors.store import Store
from harness import FeedCollector, make_config, offset_before_boundary, wait_for


LEAD_MS = 20_000  # server time from the simulator's start to the first boundary


@pytest.mark.slow(90)
def test_stream_only_keeps_tables_current_without_backfill(workdir, sim_factory, service_factory):
    sim = sim_factory(symbols=4, weight_limit=1_000_000, final_delay_ms=1000, ws_push_ms=200,
                      clock_offset_ms=offset_before_boundary("1m", LEAD_MS))
    symbols = trading_symbols(sim)
    config = make_config(
        workdir,
        exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url, "request_timeout_s": 3.0},
        klines={"intervals": ["1m"], "depth": {"1m": 500}},
        downloader={"processes": 1, "lease_s": 5.0},
        live={"final_recheck_ms": 2500},
    )
    consumer = FeedCollector(config.endpoints.feed)
    feed = consumer.messages
    service = service_factory(config, ["--stream-only"])
    try:
        service.wait_running(["scheduler", "websocket", "downloader-1"], timeout=20)
        start = sim.info()["server_time_ms"]
        first_boundary = intervals.next_boundary("1m", start)
        wait_for(lambda: sim.info()["server_time_ms"] >= first_boundary + 20_000, timeout=90, what="boundary")
        before_drop = len(feed)
        sim.drop_ws()  # mid-minute: every WebSocket connection is closed by the exchange
        second = intervals.next_open("1m", first_boundary)
        wait_for(lambda: sim.info()["server_time_ms"] >= second + 4000, timeout=90, what="second boundary")
        assert sim.stats()["ws"]["dropped_by_server"] >= 1
        # kill -9 the WebSocket actor: the restarted one reports the loss for every topic.
        old = service.pid("websocket")
        before_kill = len(feed)
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: service.pid("websocket") not in (None, old), timeout=10, what="websocket restarted")
        wait_for(lambda: "websocket restarted" in service.log_text(), timeout=20, what="restart gap reported")
        # Live updates after the restart reach the feed, for every symbol.
        restarted_at = len(feed)
        wait_for(lambda: {t for t, _ in feed[restarted_at:]} >= {messages.feed_topic(s, "1m") for s in symbols},
                 30, what="live updates after the restart")
    finally:
        code, err = service.stop()
        consumer.stop()
    assert code == 0, err[-3000:]
    assert "event=planned" not in err  # no backfill was planned
    # The candles that closed at the two boundaries the test waited for.
    expected = [intervals.prev_open("1m", first_boundary), intervals.prev_open("1m", second)]
    store = Store.open_readonly(path=config.database.path)
    try:
        for symbol in symbols:
            rows = stored_rows(store, symbol, "1m")
            opens = [r[0] for r in rows]
            # Exactly the candles that closed while it ran: no history before the start.
            assert opens[0] >= intervals.last_closed_open("1m", start)
            assert all(t in opens for t in expected), (symbol, opens, expected)
            assert rows == truth_rows(sim, symbol, "1m", opens[0], opens[-1])
            assert {r[11] for r in store.candles(symbol, "1m", expected[0], expected[1])} == {"rest"}
    finally:
        store.close()

    # The feed: per topic, seq counts up by one except for one jump at the drop, which is where a
    # consumer learns it lost live updates; every stored candle of the run arrived anyway.
    for symbol in symbols:
        topic = messages.feed_topic(symbol, "1m")
        got = [(i, k) for i, (t, k) in enumerate(feed) if t == topic]
        assert got, topic
        jumps = [(a, b) for (_, a), (i, b) in zip(got, got[1:]) if b.seq != a.seq + 1]
        assert jumps, f"{topic}: the drop left no trace in seq"
        assert all(b.seq > a.seq for a, b in jumps), jumps  # forward jumps, not a restart
        jump_at = [i for (_, a), (i, b) in zip(got, got[1:]) if b.seq != a.seq + 1]
        assert jump_at[0] >= before_drop, f"{topic}: seq jumped before the drop"
        assert any(i >= before_kill for i in jump_at), f"{topic}: the actor's restart left no trace in seq"
        stored = {k.candle.open_time_ms for _, k in got if k.stored and k.closed and k.source == "rest"}
        assert set(expected) <= stored, (topic, sorted(stored), expected)
