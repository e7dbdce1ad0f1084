"""The websocket actor: live candles from the exchange's kline streams to the feed and the writer.

Sockets (actor thread only; zmq sockets are not thread-safe):
- PUB connected to `endpoints.feed_in`: every new event as `[kline.<SYMBOL>.<interval>, FeedKline]`;
- PUSH connected to `endpoints.writer`: every closed candle that passes `check_candle`, as a
  one-candle `KlineBatch(source="ws", live=True)`, sent at once (lowest latency; a stream closes
  one candle per interval, so there is nothing to group);
- SUB connected to `endpoints.bus_sub`, filtered to `ClockSync` only: the exchange's clock;
- a wake-up pipe: connection threads put raw frames on a queue and write one byte to the pipe,
  which the poll loop watches next to the zmq sockets.

State: the symbol list (from exchangeInfo at start and every `symbols.rediscover_s`, fetched in a
worker thread so the loop never blocks; the last list is kept on failure), the connection slots
(`core/slots.py`, pure: one slot per stream group of at most `live.ws_streams_per_connection`,
streams in the URL so no SUBSCRIBE flood), the connections' threads by id, the per-stream dedupe
tracker.

Connections (`websocket_link.Link`: one websocket-client `WebSocketApp` per thread, no automatic
reconnect inside). What to open, renew, regroup, retire or reconnect, and which streams lost
events, is decided by `core/slots.Slots`; this actor carries it out and logs it:
- any close or error -> reconnect after exponential backoff with jitter
  (`ws_reconnect_initial_s` .. `ws_reconnect_max_s`), reset by the first message after it;
- `ws_renew_before_s` before `ws_lifetime_s` runs out a replacement opens for the same group;
  when a group's streams change (new or delisted symbols) a replacement opens with the new set.
  The old connection is closed only after the replacement delivered its first message, and not
  before the closes of the last minute boundary had time to arrive on it
  (`streams.handover_wait_ms`). Events seen on both are deduplicated (`StreamTracker`).
- streams that lost events (an active connection lost without an open replacement, or every
  stream after a restart) are published to the broker as a `FeedGap`, so consumers see a seq
  jump instead of silence.

Hostile events: any one event is either used or dropped with a (rate-limited) warning, never
stops the actor. Dropped: frames over `MAX_FRAME_BYTES`, anything that is not a well-formed kline
event, an event for a (symbol, interval) the connection did not subscribe (unknown interval,
other or non-ASCII symbol), a candle failing `check_candle`, and, once the exchange's clock is
known (first `ClockSync`), a candle dated in the future: a closed one whose close time is past
the exchange's now + `klines.FUTURE_TOLERANCE_MS`, a live one opening after it. A future candle would
otherwise be stored, and would also poison the dedupe tracker for that stream.

The actor never writes to the database and never decides what is final: REST boundary fetches
are the authority for closed candles; WebSocket closes are a fast first copy.
"""

from __future__ import annotations

import os
import queue
import random
import time
from concurrent.futures import Future, ThreadPoolExecutor

import requests
import websocket as wsclient
import zmq

from .. import config as cfg
from .. import exchange, messages
from ..core import slots
from ..core.clock import ServerClock
from ..core.discovery import Discovered, DiscoveryError
from ..core.klines import PageError, check_candle, decode_ws_event, in_future
from ..core.streams import StreamTracker, backoff_s, combined_url, parse_proxy, stream_names
from ..messages import ClockSync, FeedKline, KlineBatch
from .base import Actor
from .websocket_link import MAX_FRAME_BYTES, Link

SUMMARY_EVERY_S = 10.0
DISCOVERY_RETRY_INITIAL_S = 1.0
DISCOVERY_RETRY_MAX_S = 60.0
WRITER_HWM = 10_000
MAX_DRAIN = 5_000


class WebSocketActor(Actor):

    # -- sockets and state ---------------------------------------------------------------------
    def setup(self) -> None:
        e, x, live = self.config.endpoints, self.config.exchange, self.config.live
        self.feed = self.socket(zmq.PUB, e.feed_in, hwm=messages.FEED_HWM)
        self.writer = self.socket(zmq.PUSH, e.writer, hwm=WRITER_HWM)
        self.bus = self.socket(zmq.SUB, e.bus_sub, subscribe=messages.subscription(ClockSync))
        self.on(self.bus, self._on_bus)
        self.clock = ServerClock()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.on(self.wake_r, self._drain)  # zmq's poller watches plain file descriptors too
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        wsclient.setdefaulttimeout(x.request_timeout_s)
        self.proxy = parse_proxy(x.proxy)
        self.stream_kind = x.stream_kind

        self.session = exchange.session(x, cfg.egress_groups(self.config)[0])  # the first way out
        self.discovery = ThreadPoolExecutor(max_workers=1, thread_name_prefix="discovery")
        self.discovery_future: Future | None = None
        self.next_discovery = time.monotonic()
        self.discovery_failures = 0
        self.symbols: list[str] = []

        self.slots = slots.Slots(
            per_connection=max(1, min(200, live.ws_streams_per_connection)), lifetime_s=live.ws_lifetime_s,
            renew_before_s=live.ws_renew_before_s, reconnect_initial_s=live.ws_reconnect_initial_s,
            reconnect_max_s=live.ws_reconnect_max_s, stuck_after_s=x.request_timeout_s * 2,
            restarted=self.restarts > 0)
        self.links: dict[int, Link] = {}  # connection id -> its thread and socket
        self.tracker = StreamTracker()
        self.random = random.Random()

        self.events_total = 0
        self.closed_total = 0
        self.duplicates_total = 0
        self.malformed_total = 0
        self.future_total = 0
        self.writer_dropped_total = 0
        self.gaps_reported_total = 0
        self._window_events = 0
        self._window_closed = 0
        self._window_latency_ms: list[int] = []
        self.next_summary = time.monotonic() + SUMMARY_EVERY_S
        self.summary_started = time.monotonic()

    # -- the loop ------------------------------------------------------------------------------
    def poll_timeout_ms(self) -> int:
        return 0 if not self.inbox.empty() else self.poll_ms

    def tick(self, now: float) -> None:
        if not self.inbox.empty():
            self._drain(None)
        self._discover(now)
        for action in self.slots.tend(now):
            if isinstance(action, slots.Open):
                self._open(action.conn, action.reason)
            else:
                self._close(action)
        if now >= self.next_summary:
            self._summary(now)

    def teardown(self) -> None:
        for link in list(self.links.values()):
            link.close()
        deadline = time.monotonic() + 2.0
        for link in list(self.links.values()):
            link.thread.join(max(0.0, deadline - time.monotonic()))
        self.discovery.shutdown(wait=False, cancel_futures=True)
        self.session.close()
        self._summary(time.monotonic())
        os.close(self.wake_r)
        os.close(self.wake_w)

    # -- symbols and groups --------------------------------------------------------------------
    def _discover(self, now: float) -> None:
        future = self.discovery_future
        if future is None:
            if now >= self.next_discovery:
                self.discovery_future = self.discovery.submit(self._fetch_exchange_info)
            return
        if not future.done():
            return
        self.discovery_future = None
        try:
            found: Discovered = future.result()
        except (requests.RequestException, DiscoveryError, ValueError) as exc:
            self.discovery_failures += 1
            delay = backoff_s(self.discovery_failures, DISCOVERY_RETRY_INITIAL_S, DISCOVERY_RETRY_MAX_S,
                              self.random.random())
            self.next_discovery = now + delay
            self.log.warning("discovery_failed", error=str(exc)[:200], failures=self.discovery_failures,
                             symbols_kept=len(self.symbols), action=f"retry in {delay:.1f}s")
            return
        self.discovery_failures = 0
        self.next_discovery = now + self.config.symbols.rediscover_s
        self._apply_symbols([s.symbol for s in found.trading])

    def _fetch_exchange_info(self) -> Discovered:
        """Runs in the discovery thread: HTTP and parsing only, no actor state."""
        return exchange.read_exchange_info(self.session, self.config.exchange, self.config.symbols)[1]

    def _apply_symbols(self, symbols: list[str]) -> None:
        if symbols == self.symbols and self.slots.slots:
            return
        wanted = stream_names(symbols, self.config.klines.intervals, self.stream_kind)
        changed, connections = self.slots.regroup(wanted)
        added = len(set(symbols) - set(self.symbols))
        removed = len(set(self.symbols) - set(symbols))
        self.symbols = symbols
        self.log.info("symbols_discovered", symbols=len(symbols), added=added, removed=removed,
                      streams=len(wanted), connections=connections, groups_changed=changed)

    # -- connections ---------------------------------------------------------------------------
    def _open(self, conn: slots.Conn, why: str) -> None:
        link = Link(conn, combined_url(self.config.exchange.ws_url, conn.streams), self.inbox, self.wake_w,
                    self.proxy)
        self.links[link.id] = link
        self.log.info("connection_opening", slot=conn.slot, link=link.id, streams=len(link.streams), reason=why)
        link.start()

    def _close(self, action: slots.Close) -> None:
        link = self.links.get(action.conn.id)
        if link is None:
            return
        if action.reason == "stuck":
            self.log.warning("connection_stuck", slot=link.slot, link=link.id, action="closing")
        elif action.reason == "no streams left":
            self.log.info("connection_retiring", slot=link.slot, link=link.id, reason=action.reason)
        link.close()

    def _on_open(self, link: Link, now: float) -> None:
        self.slots.opened(link.id, now)
        self.log.info("connection_opened", slot=link.slot, link=link.id, streams=len(link.streams),
                      connections=self.slots.open_count())

    def _on_first_event(self, link: Link, event_time_ms: int, now: float) -> None:
        gap, handover = self.slots.first_event(link.id, event_time_ms, now)
        if gap:
            # Its closed candles come by REST anyway.
            self._send_gap(gap, f"websocket restarted ({self.restarts})")
        if handover is not None:
            self.log.info("connection_renewed", slot=handover.slot, old_link=handover.old.id,
                          new_link=handover.new.id, streams=len(handover.new.streams),
                          old_closes_in_ms=handover.old_closes_in_ms)

    def _on_end(self, link: Link, reason: str, now: float) -> None:
        self.links.pop(link.id, None)
        ended = self.slots.ended(link.id, now, self.random.random())
        if ended is None:
            return
        conn = ended.conn
        lived = f"{now - conn.opened_at:.1f}" if conn.opened_at is not None else "never opened"
        if ended.gap:
            self._send_gap(ended.gap, f"websocket link {link.id} closed: {reason}")
        if ended.outcome == "retired":
            self.log.info("connection_closed", slot=conn.slot, link=link.id, streams=len(link.streams),
                          reason=reason, lived_s=lived, action="retired")
        elif ended.outcome == "taken over":
            self.log.warning("connection_closed", slot=conn.slot, link=link.id, streams=len(link.streams),
                             reason=reason, lived_s=lived, action=f"replacement {ended.successor.id} takes over")
        else:
            self.log.warning("connection_closed", slot=conn.slot, link=link.id, streams=len(link.streams),
                             reason=reason, lived_s=lived, failures=ended.failures,
                             action=f"reconnect in {ended.delay_s:.2f}s")

    def _send_gap(self, streams, reason: str) -> None:
        """Tell the broker these topics lost events, so consumers see a seq jump, not silence.
        The closed candles of the gap reach the database (and the feed) by REST regardless."""
        topics = slots.gap_topics(streams, self.symbols, self.config.klines.intervals, self.stream_kind)
        gap = messages.FeedGap(topics=topics, reason=reason[:200])
        try:
            self.feed.send_multipart([messages.FEED_GAP_TOPIC, messages.encode(gap)], zmq.NOBLOCK)
        except zmq.Again:
            pass
        self.gaps_reported_total += 1

    # -- events --------------------------------------------------------------------------------
    def _drain(self, _fd) -> None:
        try:
            os.read(self.wake_r, 65536)
        except (BlockingIOError, OSError):
            pass
        now = time.monotonic()
        for _ in range(MAX_DRAIN):
            try:
                link_id, what, payload, received_ms = self.inbox.get_nowait()
            except queue.Empty:
                return
            link = self.links.get(link_id)
            if link is None:
                continue
            if what == "msg":
                self._on_message(link, payload, received_ms, now)
            elif what == "open":
                self._on_open(link, now)
            elif what == "end":
                self._on_end(link, str(payload), now)
            elif what == "big":
                self._drop(link, f"frame of {payload} bytes, over {MAX_FRAME_BYTES}")

    def _on_bus(self, sock: zmq.Socket) -> None:
        self.take_clock(sock, self.clock)

    def _drop(self, link: Link, reason: str) -> None:
        self.malformed_total += 1
        self.dropped_malformed += 1
        self.log.warning("malformed_event", link=link.id, reason=reason[:200],
                         dropped_total=self.malformed_total, action="dropped")

    def _on_message(self, link: Link, raw: bytes | str, received_ms: int, now: float) -> None:
        try:
            self._on_event(link, raw, received_ms, now)
        except Exception as exc:  # noqa: BLE001 - one strange event must never stop the actor
            self._drop(link, f"{type(exc).__name__}: {exc}")

    def _on_event(self, link: Link, raw: bytes | str, received_ms: int, now: float) -> None:
        try:
            event = decode_ws_event(raw)
            if event is None:
                return  # a control reply
            if (event.symbol, event.interval) not in link.keys:
                raise PageError(f"not subscribed on this connection: {event.symbol[:30]!r} "
                                f"{event.interval[:10]!r}")
            check_candle(event.interval, event.candle)
        except PageError as exc:
            self._drop(link, str(exc))
            return
        if self._in_future(link, event):
            return
        if link.conn.first_event_at is None:
            self._on_first_event(link, event.event_time_ms, now)
        candle = event.candle
        if not self.tracker.accept(event.symbol, event.interval, candle.open_time_ms, event.closed,
                                   event.event_time_ms):
            self.duplicates_total += 1
            return
        self.handled += 1
        self.events_total += 1
        self.metrics.inc("websocket_events_total")
        self._window_events += 1
        body = FeedKline(symbol=event.symbol, interval=event.interval, seq=0, closed=event.closed,
                         source="ws", stored=False, candle=candle)
        try:
            self.feed.send_multipart([messages.feed_topic(event.symbol, event.interval), messages.encode(body)],
                                     zmq.NOBLOCK)
        except zmq.Again:
            pass  # PUB drops rather than blocks; the broker's seq shows the gap
        if not event.closed:
            return
        self.closed_total += 1
        self._window_closed += 1
        self._window_latency_ms.append(received_ms - (candle.close_time_ms + 1))
        batch = KlineBatch(symbol=event.symbol, interval=event.interval, source="ws", candles=[candle], live=True)
        if not self.send(self.writer, batch, block=False):
            self.writer_dropped_total += 1
            self.log.warning("writer_busy", symbol=event.symbol, interval=event.interval,
                             open_time_ms=candle.open_time_ms, dropped_total=self.writer_dropped_total,
                             action="dropped; the boundary REST fetch stores it")

    def measure(self) -> None:
        self.metrics.set("websocket_connections", (), self.slots.open_count())

    def _in_future(self, link: Link, event) -> bool:
        """A candle dated past the exchange's clock (checked once that clock is known)."""
        if not self.clock.synced:
            return False
        server_now_ms = self.clock.now_ms()
        candle = event.candle
        if not in_future(candle, event.closed, server_now_ms):
            return False
        self.future_total += 1
        self.dropped_malformed += 1
        self.log.warning("future_candle", link=link.id, symbol=event.symbol, interval=event.interval,
                         open_time_ms=candle.open_time_ms, closed=event.closed,
                         server_now_ms=server_now_ms, dropped_total=self.future_total,
                         action="dropped: not stored, not published")
        return True

    def _summary(self, now: float) -> None:
        elapsed = max(1e-3, now - self.summary_started)
        latencies = sorted(self._window_latency_ms)
        fields: dict[str, object] = {
            "events_per_s": round(self._window_events / elapsed, 1), "closed": self._window_closed,
            "connections": self.slots.open_count(),
            "streams": len(self.slots.streams()), "events_total": self.events_total,
            "closed_total": self.closed_total, "duplicates_total": self.duplicates_total,
            "malformed_total": self.malformed_total, "future_total": self.future_total,
            "reconnects_total": self.slots.reconnects,
            "gaps_reported_total": self.gaps_reported_total,
        }
        if latencies:
            fields["close_to_receive_ms_p50"] = latencies[len(latencies) // 2]
            fields["close_to_receive_ms_max"] = latencies[-1]
        self.log.info("summary", **fields)
        self._window_events = self._window_closed = 0
        self._window_latency_ms = []
        self.summary_started = now
        self.next_summary = now + SUMMARY_EVERY_S
