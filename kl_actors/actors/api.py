"""The read API actor: an exchange-compatible REST API over the database, so programs that speak
the exchange's API (ccxt, freqtrade, binance-futures-connector) only change their base URL.

Sockets:
- SUB connected to `endpoints.feed` (the consumer feed, topics `kline.`): the live open candle of
  every stream, kept in `LiveCandles` (the newest not-yet-closed candle per symbol and interval);
- SUB connected to `endpoints.bus_sub`, filtered to `ClockSync`: the exchange's clock, for
  `/fapi/v1/time`, the weight minute and "is this open candle the current one";
- the HTTP listener on `api.listen` (loopback unless `api.allow_public_api`), served by aiohttp
  on its own event loop in one thread of this process (`api_http.ApiServer`), while this loop
  (heartbeat, feed, clock) goes on.
State: the open candles, the clock; the HTTP thread keeps its own read-only connection.
Log: `api_listening`, `api_summary` once a minute while clients are served (requests, 429s,
read errors), `api_read_failed`, `api_listen_failed`, `malformed_feed_message`.
Loop: read the feed and the clock; check that the HTTP thread is alive and turning (a stuck or
dead one ends the process with status 1: the supervisor restarts it).

Never writes the database (it is opened read-only: WAL readers never block the writer), never
talks to the exchange, never fakes a candle: a range the database does not fully hold is
answered from what it holds, with `X-KL-Complete: false`.
"""

from __future__ import annotations

import time

import zmq

from .. import messages
from ..core.api_rules import LiveCandles
from ..core.clock import ServerClock
from ..messages import ClockSync
from .api_http import ApiServer
from .base import Actor

# The HTTP loop turns at least every 0.5 s; this long without a turn means it is stuck.
STUCK_S = 10.0
FEED_BATCH = 2000  # messages read per loop turn, so the heartbeat never waits on a busy feed
SUMMARY_S = 60.0


class ApiActor(Actor):

    def setup(self) -> None:
        e = self.config.endpoints
        self.clock = ServerClock()
        self.live = LiveCandles()
        self.feed = self.socket(zmq.SUB, e.feed, subscribe=b"kline.")
        self.bus = self.socket(zmq.SUB, e.bus_sub, subscribe=messages.subscription(ClockSync))
        self.on(self.feed, self._on_feed)
        self.on(self.bus, lambda sock: self.take_clock(sock, self.clock))
        self.feed_malformed = 0
        self.server = ApiServer(self.config, self.clock, self.live, self.log)
        self.server.start()
        self.next_summary = time.monotonic() + SUMMARY_S
        self.summarized = (0, 0, 0)

    def tick(self, now: float) -> None:
        if not self.server.is_alive():
            self.log.error("api_thread_died", action="exiting for a restart")
            self.exit_code = 1
            self.stop()
        elif time.monotonic() - self.server.alive_at > STUCK_S:
            self.log.error("api_thread_stuck", silent_s=round(time.monotonic() - self.server.alive_at, 1),
                           action="exiting for a restart")
            self.exit_code = 1
            self.stop()
        if now >= self.next_summary:
            self.next_summary = now + SUMMARY_S
            self._summary()

    def _summary(self) -> None:
        """One line a minute while clients are served: what the API did since the last one."""
        s = self.server
        totals = (s.requests, s.refused, s.errors)
        if totals[0] != self.summarized[0]:
            requests, refused, errors = (a - b for a, b in zip(totals, self.summarized))
            self.log.info("api_summary", requests=requests, refused_429=refused, read_errors=errors,
                          live_streams=len(self.live.latest), requests_total=s.requests)
        self.summarized = totals

    def teardown(self) -> None:
        self.server.stop()
        self.log.info("api_stopped", requests=self.server.requests, read_errors=self.server.errors)

    def _on_feed(self, sock: zmq.Socket) -> None:
        for _ in range(FEED_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            body = messages.decode_feed(frames[-1]) if len(frames) == 2 else None
            if not isinstance(body, messages.FeedKline):
                self.feed_malformed += 1
                self.log.warning("malformed_feed_message", frames=len(frames), dropped_total=self.feed_malformed,
                                 action="dropped")
                continue
            if body.stored:
                continue  # a committed candle: the database serves it
            self.live.update(body.symbol, body.interval, body.closed, exchange_row(body.candle))


def exchange_row(candle: messages.Candle) -> tuple:
    """The candle as the exchange's REST row, like the database's (`ignore` is "0" there)."""
    return (candle.open_time_ms, candle.open, candle.high, candle.low, candle.close, candle.volume,
            candle.close_time_ms, candle.quote_volume, candle.trades, candle.taker_buy_volume,
            candle.taker_buy_quote_volume, "0")
