"""The websocket actor as a real process against the simulator (and a hand-made bad server).

The test plays the actor's peers: it binds a SUB at `feed_in` (the broker's XSUB), a PULL at
`writer` and a PULL at `control` (heartbeats).

The live test is one run in phases, because every phase has to wait for minute boundaries and
the suite must stay short: 30 symbols x (1m, 5m) over 3 connections (25 streams each), the
simulator closing every connection after 20 s (the actor renews 5 s before, so several
handovers happen each minute), and a `drop_ws()` in the middle. At two consecutive minute boundaries every symbol's closed 1m candle must reach
the writer socket, exactly equal to the simulator's truth.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
import urllib.request

import msgspec
import pytest
from harness import ActorProcess, Peers, make_config, wait_for

from kl_actors import messages
from kl_actors.core.klines import PageError, decode_ws_event

MINUTE = 60_000


def row(candle: messages.Candle) -> list:
    return list(msgspec.structs.astuple(candle))


@pytest.mark.slow(85)
def test_live_candles_across_connections_renewals_and_drops(sim_factory, workdir):
    sim = sim_factory(symbols=30, seed=3, weight_limit=1_000_000, ws_push_ms=100, ws_lifetime_s=20,
                      ws_close_delay_ms=1000)
    config = make_config(
        workdir, exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
        klines={"intervals": ["1m", "5m"]},
        live={"ws_streams_per_connection": 25, "ws_lifetime_s": 20.0, "ws_renew_before_s": 5.0,
              "ws_reconnect_initial_s": 0.2, "ws_reconnect_max_s": 2.0})
    with urllib.request.urlopen(sim.rest_url + "/fapi/v1/exchangeInfo") as response:
        info = json.loads(response.read())
    symbols = [s["symbol"] for s in info["symbols"]
               if s["status"] == "TRADING" and s["contractType"] == "PERPETUAL" and s["quoteAsset"] == "USDT"]
    assert len(symbols) == 30
    peers = Peers(config)
    actor = ActorProcess("websocket", config, workdir)
    try:
        # Phase 1: live updates of every symbol and both intervals arrive on the feed.
        peers.pump_until(actor, lambda: {(f.symbol, f.interval) for _, f in peers.feed_messages} >=
                         {(s, i) for s in symbols for i in ("1m", "5m")}, 15, "feed for every stream")
        assert sim.stats()["ws"]["opened"] >= 3
        live_since = int(time.time() * 1000)
        boundary_1 = live_since - live_since % MINUTE + MINUTE

        # Phase 2: the first minute boundary: every symbol's closed 1m candle, equal to truth.
        peers.pump_until(actor, lambda: len(peers.closed("1m", boundary_1 - MINUTE)) == 30, 75, "closes at boundary 1")
        for symbol, candle in peers.closed("1m", boundary_1 - MINUTE).items():
            assert [row(candle)] == sim.truth(symbol, "1m", candle.open_time_ms, candle.open_time_ms)

        # Phase 3: drop every connection 15 s before boundary 2; the actor reconnects. The
        # reconnected links are renewed 15 s after they opened: just after boundary 2, before the
        # simulator sends that boundary's closes (1.0-1.2 s after it): the new links do not carry
        # them, so the old links must stay open for them (handover wait > 0). One renewal cycle
        # between the drop and the boundary, so a loaded machine's connect delays add up once.
        peers.pump(max(0.0, (boundary_1 + MINUTE - 15_000 - time.time() * 1000) / 1000))
        opened_before = sim.stats()["ws"]["opened"]
        gaps_before = len(peers.gaps)
        assert sim.drop_ws()
        peers.pump_until(actor, lambda: sim.stats()["ws"]["opened"] >= opened_before + 3, 10, "reconnects after drop")
        # The drop is reported for every stream (renewals before it, with an overlap, were not).
        assert gaps_before == 0, peers.gaps
        reported = {t for g in peers.gaps for t in g.topics}
        assert reported == {messages.feed_topic(s, i).decode() for s in symbols for i in ("1m", "5m")}

        # Phase 4: the next boundary, crossed after the drop and with renewals under way.
        boundary_2 = boundary_1 + MINUTE
        peers.pump_until(actor, lambda: len(peers.closed("1m", boundary_2 - MINUTE)) == 30, 75, "closes at boundary 2")
        peers.pump(1.0)
        for symbol, candle in peers.closed("1m", boundary_2 - MINUTE).items():
            assert [row(candle)] == sim.truth(symbol, "1m", candle.open_time_ms, candle.open_time_ms)

        # Every closed candle went to the writer once, and every writer batch is well-formed.
        keys = [(b.symbol, b.interval, b.candles[0].open_time_ms) for _, b in peers.batches]
        assert len(keys) == len(set(keys)), "a closed candle reached the writer twice"
        for _, b in peers.batches:
            assert b.source == "ws" and b.live and b.task_id == "" and len(b.candles) == 1
        for _, b in peers.batches:
            if b.interval == "5m":
                c = b.candles[0]
                assert [row(c)] == sim.truth(b.symbol, "5m", c.open_time_ms, c.open_time_ms)

        # The feed: right topics, closed flags matching the writer's candles.
        for topic, f in peers.feed_messages:
            assert topic == messages.feed_topic(f.symbol, f.interval)
            assert f.source == "ws" and not f.stored and f.seq == 0
        feed_closed = {(f.symbol, f.interval, f.candle.open_time_ms) for _, f in peers.feed_messages if f.closed}
        assert feed_closed == set(keys)
        assert any(not f.closed for _, f in peers.feed_messages)

        stats = sim.stats()["ws"]
        # The admin drop closed 3 connections; every other close was the actor's own renewal,
        # 15 s into the simulator's 20 s lifetime (so more closes than server drops).
        assert stats["drop_reasons"].get("admin drop") == 3, stats
        assert stats["closed"] - stats["dropped_by_server"] >= 6, stats
        log = actor.stderr()
        assert "event=connection_renewed" in log and "event=summary" in log
        waits = [int(line.split("old_closes_in_ms=")[1].split()[0])
                 for line in log.splitlines() if "event=connection_renewed" in line]
        assert any(w > 0 for w in waits), waits   # a handover at a boundary happened
        latencies = [t - (b.candles[0].close_time_ms + 1) for t, b in peers.batches if b.interval == "1m"]
        print(f"close-to-receive ms: median {statistics.median(latencies)} max {max(latencies)};"
              f" simulator ws stats {stats}")
        assert peers.heartbeats > 0
    finally:
        actor.stop()
        peers.close()


# -- a malformed event does not kill the actor --------------------------------------------------

class BadServer:
    """A WebSocket server (aiohttp, in a thread) that sends garbage, then one good closed event."""

    def __init__(self, good_event: dict) -> None:
        self.good = good_event
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self) -> None:
        from aiohttp import web

        async def handler(request):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            for text in ('{"stream":"x@kline_1m","data":{"e":"kline","E":1,"s":"X","k":{"t":"no"}}}',
                         "not json at all", '{"result":null,"id":1}', json.dumps(self.good)):
                await ws.send_str(text)
            async for _ in ws:  # until the actor goes away
                pass
            return ws

        async def start():
            app = web.Application()
            app.router.add_get("/market/stream", handler)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            self.runner = runner
            self.ready.set()

        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def stop(self) -> None:
        async def shutdown():
            await self.runner.cleanup()
        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_malformed_events_are_dropped_and_the_actor_lives_on(sim, workdir):
    t = 1_700_000_040_000 - 1_700_000_040_000 % MINUTE
    good = {"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": t + MINUTE + 250, "s": "BTCUSDT", "k": {
        "t": t, "T": t + MINUTE - 1, "s": "BTCUSDT", "i": "1m", "f": 1, "L": 2, "o": "1.0", "c": "1.5",
        "h": "2.0", "l": "0.5", "v": "10", "n": 2, "x": True, "q": "15", "V": "5", "Q": "7.5", "B": "0"}}}
    server = BadServer(good)
    config = make_config(workdir, exchange={"rest_url": sim.rest_url, "ws_url": f"ws://127.0.0.1:{server.port}/market"},
                         klines={"intervals": ["1m"]}, symbols={"include": ["BTCUSDT"]})
    peers = Peers(config)
    actor = ActorProcess("websocket", config, workdir)
    try:
        def got_batch():
            peers.pump(0.1)
            return peers.batches
        wait_for(got_batch, 15, interval=0, what="the good closed candle at the writer")
        _, batch = peers.batches[0]
        assert batch.symbol == "BTCUSDT" and batch.candles[0].open_time_ms == t and batch.candles[0].close == "1.5"
        assert actor.proc.poll() is None
        log = wait_for(lambda: actor.stderr().count("event=malformed_event") >= 2 and actor.stderr(), 20,
                       what="malformed_event log lines")
        assert "dropped_total=2" in log and "action=dropped" in log
    finally:
        actor.stop()
        peers.close()
        server.stop()


def test_decode_path_rejects_malformed_and_ignores_control_replies():
    with pytest.raises(PageError):
        decode_ws_event(b"not json")
    with pytest.raises(PageError):
        decode_ws_event(b'{"stream":"a","data":{"e":"kline","E":1,"k":{"t":"x"}}}')
    assert decode_ws_event(b'{"result":null,"id":1}') is None


# -- the symbol list changes: only the changed groups get a new connection -------------------------

def test_new_and_delisted_symbols_regroup_streams(sim_factory, workdir):
    sim = sim_factory(symbols=3, seed=5, ws_push_ms=100)
    config = make_config(workdir, exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
                         klines={"intervals": ["1m"]},
                         symbols={"rediscover_s": 0.5,
                                  "include": ["1000PEPEUSDT", "BTCUSDT", "ETHUSDT", "NEWCOINUSDT"]},
                         live={"ws_streams_per_connection": 2})
    peers = Peers(config)
    actor = ActorProcess("websocket", config, workdir)
    try:
        seen = lambda: {f.symbol for _, f in peers.feed_messages}
        first = peers.pump_until(actor, lambda: len(seen()) == 3 and sorted(seen()), 15, "feed for 3 symbols")
        assert sim.stats()["ws"]["opened"] == 2
        sim.list_symbol("NEWCOINUSDT", onboard_ms=int(time.time() * 1000) - 3_600_000)
        peers.pump_until(actor, lambda: "NEWCOINUSDT" in seen(), 15, "feed for the new symbol")
        # Streams [a, b] [c] -> [a, b] [c, new]: one replacement connection, the full group kept.
        peers.pump_until(actor, lambda: sim.stats()["ws"]["active"] == 2, 10, "old connection of group 1 closed")
        assert sim.stats()["ws"]["opened"] == 3
        sim.delist(first[0])
        peers.pump_until(actor, lambda: sim.stats()["ws"]["opened"] == 4 and sim.stats()["ws"]["active"] == 2, 15,
                         "group 0 regrouped without the delisted symbol")
        peers.feed_messages.clear()
        peers.pump_until(actor, lambda: seen() >= {first[1], first[2], "NEWCOINUSDT"}, 10, "feed after regroup")
        assert first[0] not in seen()
        log = actor.stderr()
        assert log.count("event=connection_renewed") == 2 and "reason=regroup" in log
    finally:
        actor.stop()
        peers.close()
