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
worker thread so the loop never blocks; the last list is kept on failure), the stream groups
(`streams.plan_groups`: at most `live.ws_streams_per_connection` each, streams in the URL so no
SUBSCRIBE flood), one `Slot` per group and its connections, the per-stream dedupe tracker.

Connections (one websocket-client `WebSocketApp` per thread, no automatic reconnect inside):
- any close or error -> reconnect after exponential backoff with jitter
  (`ws_reconnect_initial_s` .. `ws_reconnect_max_s`), reset by the first message after it;
- `ws_renew_before_s` before `ws_lifetime_s` runs out a replacement opens for the same group;
  when a group's streams change (new or delisted symbols) a replacement opens with the new set.
  The old connection is closed only after the replacement delivered its first message, and not
  before the closes of the last minute boundary had time to arrive on it
  (`streams.handover_wait_ms`). Events seen on both are deduplicated (`StreamTracker`).

Hostile events: any one event is either used or dropped with a (rate-limited) warning, never
stops the actor. Dropped: frames over `MAX_FRAME_BYTES`, anything that is not a well-formed kline
event, an event for a (symbol, interval) the connection did not subscribe (unknown interval,
other or non-ASCII symbol), a candle failing `check_candle`, and, once the exchange's clock is
known (first `ClockSync`), a candle dated in the future: a closed one whose close time is past
the exchange's now + `FUTURE_TOLERANCE_MS`, a live one opening after it. A future candle would
otherwise be stored, and would also poison the dedupe tracker for that stream.

The actor never writes to the database and never decides what is final: REST boundary fetches
are the authority for closed candles; WebSocket closes are a fast first copy.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import requests
import websocket as wsclient
import zmq

from .. import exchange, messages
from .base import Actor, now_ms
from ..core.clock import ServerClock
from ..core.discovery import Discovered, DiscoveryError
from ..core.klines import PageError, check_candle, decode_ws_event
from ..messages import ClockSync, FeedKline, KlineBatch
from ..core.streams import (
    StreamTracker,
    backoff_s,
    combined_url,
    handover_wait_ms,
    parse_proxy,
    plan_groups,
    renew_due,
    stream_key,
    stream_names,
)

SUMMARY_EVERY_S = 10.0
CLIENT_PING_S = 60.0          # our own pings find dead TCP paths; 1/min is far below 10 msgs/s
CLIENT_PING_TIMEOUT_S = 20.0
DISCOVERY_RETRY_INITIAL_S = 1.0
DISCOVERY_RETRY_MAX_S = 60.0
WRITER_HWM = 10_000
MAX_DRAIN = 5_000
MAX_FRAME_BYTES = 64 * 1024   # one kline event is ~400 bytes; a bigger frame is not one
FUTURE_TOLERANCE_MS = 5_000   # clock error and exchange jitter; closes come 0.2-2 s after the close


class Link:
    """One websocket connection carrying one group's streams, run by its own thread.

    The thread only moves frames: (link id, what, payload, local receive ms) onto the actor's
    queue, plus one wake-up byte. All decisions are taken in the actor's thread.
    """

    def __init__(self, link_id: int, slot: int, streams: tuple[str, ...], url: str,
                 inbox: queue.SimpleQueue, wake_fd: int, proxy_settings) -> None:
        self.id = link_id
        self.slot = slot
        self.streams = streams
        # (SYMBOL, interval) this connection asked for: an event for anything else is dropped.
        self.keys = frozenset(stream_key(s) for s in streams)
        self.url = url
        self.started_at = time.monotonic()
        self.opened_at: float | None = None
        self.first_event_at: float | None = None
        self.closing = False
        self._inbox = inbox
        self._wake_fd = wake_fd
        self._proxy = proxy_settings
        self.app = wsclient.WebSocketApp(
            url, on_open=self._on_open, on_message=self._on_message, on_error=self._on_error,
            on_close=self._on_close)
        self._error = ""
        self._close = ""
        self.thread = threading.Thread(target=self._run, name=f"ws-{link_id}", daemon=True)

    def start(self) -> Link:
        self.thread.start()
        return self

    def close(self) -> None:
        """Ask the connection to close (from the actor's thread); "end" follows on the queue."""
        if not self.closing:
            self.closing = True
            # A half-open socket may fail to close; its thread ends (and reports) anyway.
            with contextlib.suppress(Exception):
                self.app.close()

    # -- the thread ------------------------------------------------------------------------
    def _put(self, what: str, payload: object) -> None:
        self._inbox.put((self.id, what, payload, now_ms()))
        try:
            os.write(self._wake_fd, b"\0")
        except (BlockingIOError, OSError):
            pass  # pipe full: the actor is awake anyway

    def _on_open(self, _app) -> None:
        self._put("open", None)

    def _on_message(self, _app, data) -> None:
        if len(data) > MAX_FRAME_BYTES:
            self._put("big", len(data))  # not queued: a flood of these must not fill memory
            return
        self._put("msg", data)

    def _on_error(self, _app, error) -> None:
        self._error = f"{type(error).__name__}: {error}"[:200]

    def _on_close(self, _app, code, reason) -> None:
        if code is not None or reason:
            self._close = f"{code} {reason.decode(errors='replace') if isinstance(reason, bytes) else reason}"

    def _run(self) -> None:
        try:
            p = self._proxy
            self.app.run_forever(
                ping_interval=CLIENT_PING_S, ping_timeout=CLIENT_PING_TIMEOUT_S,
                skip_utf8_validation=True, reconnect=0,
                http_proxy_host=p.host, http_proxy_port=p.port or None, http_proxy_auth=p.auth,
                proxy_type=p.kind if p.host else None)
        except Exception as exc:  # noqa: BLE001 - any failure is one "end" for the actor to handle
            self._error = self._error or f"{type(exc).__name__}: {exc}"[:200]
        self._put("end", self._close or self._error or "closed")


@dataclass
class Slot:
    """One group of streams: its current connection, a replacement on the way, backoff."""

    index: int
    wanted: tuple[str, ...]
    active: Link | None = None
    replacement: Link | None = None
    failures: int = 0
    not_before: float = 0.0   # no new connection for this slot before this (backoff)
    renewals: int = field(default=0)


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
        self.per_connection = max(1, min(200, live.ws_streams_per_connection))

        self.session = exchange.session(x)
        self.discovery = ThreadPoolExecutor(max_workers=1, thread_name_prefix="discovery")
        self.discovery_future: Future | None = None
        self.next_discovery = time.monotonic()
        self.discovery_failures = 0
        self.symbols: list[str] = []

        self.slots: list[Slot] = []
        self.links: dict[int, Link] = {}
        self.retiring: dict[int, float] = {}   # link id -> when to close it
        self.next_link_id = 1
        self.tracker = StreamTracker()
        self.random = random.Random()

        self.events_total = 0
        self.closed_total = 0
        self.duplicates_total = 0
        self.malformed_total = 0
        self.future_total = 0
        self.writer_dropped_total = 0
        self.reconnects_total = 0
        self.gaps_reported_total = 0
        self.restart_gap_reported = False
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
        for slot in self.slots:
            self._tend(slot, now)
        for link_id, close_at in list(self.retiring.items()):
            if now >= close_at:
                link = self.links.get(link_id)
                if link is not None:
                    link.close()
                del self.retiring[link_id]
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
        if symbols == self.symbols and self.slots:
            return
        wanted = stream_names(symbols, self.config.klines.intervals, self.stream_kind)
        groups = plan_groups([slot.wanted for slot in self.slots], wanted, self.per_connection)
        changed = 0
        for index, group in enumerate(groups):
            if index < len(self.slots):
                if self.slots[index].wanted != group:
                    self.slots[index].wanted = group
                    changed += 1
            else:
                self.slots.append(Slot(index=index, wanted=group))
                changed += 1
        added = len(set(symbols) - set(self.symbols))
        removed = len(set(self.symbols) - set(symbols))
        self.symbols = symbols
        self.log.info("symbols_discovered", symbols=len(symbols), added=added, removed=removed,
                      streams=len(wanted), connections=sum(1 for g in groups if g), groups_changed=changed)

    # -- connections ---------------------------------------------------------------------------
    def _tend(self, slot: Slot, now: float) -> None:
        live = self.config.live
        if slot.active is None and slot.replacement is None:
            if slot.wanted and now >= slot.not_before:
                slot.active = self._open(slot, "connect")
            return
        active = slot.active
        if active is None or slot.replacement is not None or now < slot.not_before:
            return
        if active.opened_at is None:
            if now - active.started_at > self.config.exchange.request_timeout_s * 2 and not active.closing:
                self.log.warning("connection_stuck", slot=slot.index, link=active.id, action="closing")
                active.close()
            return
        if not slot.wanted:
            if not active.closing:
                self.log.info("connection_retiring", slot=slot.index, link=active.id, reason="no streams left")
                active.close()
            return
        if active.streams != slot.wanted:
            slot.replacement = self._open(slot, "regroup")
        elif now >= renew_due(active.opened_at, live.ws_lifetime_s, live.ws_renew_before_s):
            slot.replacement = self._open(slot, "renew")

    def _open(self, slot: Slot, why: str) -> Link:
        link = Link(self.next_link_id, slot.index, slot.wanted, combined_url(self.config.exchange.ws_url, slot.wanted),
                    self.inbox, self.wake_w, self.proxy)
        self.next_link_id += 1
        self.links[link.id] = link
        self.log.info("connection_opening", slot=slot.index, link=link.id, streams=len(link.streams), reason=why)
        return link.start()

    def _on_open(self, link: Link, now: float) -> None:
        link.opened_at = now
        self.log.info("connection_opened", slot=link.slot, link=link.id, streams=len(link.streams),
                      connections=sum(1 for ln in self.links.values() if ln.opened_at is not None))

    def _on_first_event(self, link: Link, event_time_ms: int, now: float) -> None:
        link.first_event_at = now
        if self.restarts and not self.restart_gap_reported:
            # A restarted actor cannot know what its predecessor missed while it was down:
            # every topic it serves shows a jump (its closed candles come by REST anyway).
            self.restart_gap_reported = True
            self._send_gap([s for slot in self.slots for s in slot.wanted], f"websocket restarted ({self.restarts})")
        slot = self.slots[link.slot]
        if slot.active is link:
            slot.failures = 0
            return
        if slot.replacement is not link:
            return
        old = slot.active
        slot.active, slot.replacement = link, None
        slot.failures = 0
        if old is None:
            return
        wait_ms = handover_wait_ms(event_time_ms) if event_time_ms else 0
        self.retiring[old.id] = now + wait_ms / 1000
        slot.renewals += 1
        self.log.info("connection_renewed", slot=slot.index, old_link=old.id, new_link=link.id,
                      streams=len(link.streams), old_closes_in_ms=wait_ms)

    def _on_end(self, link: Link, reason: str, now: float) -> None:
        self.links.pop(link.id, None)
        self.retiring.pop(link.id, None)
        slot = self.slots[link.slot]
        lived = f"{now - link.opened_at:.1f}" if link.opened_at is not None else "never opened"
        if slot.active is not link and slot.replacement is not link:
            self.log.info("connection_closed", slot=slot.index, link=link.id, streams=len(link.streams),
                          reason=reason, lived_s=lived, action="retired")
            return
        if slot.active is link and slot.replacement is not None:
            slot.active, slot.replacement = slot.replacement, None
            if slot.active.opened_at is None:
                self._report_gap(link, reason)  # no overlap: events until it opens are lost
            self.log.warning("connection_closed", slot=slot.index, link=link.id, streams=len(link.streams),
                             reason=reason, lived_s=lived, action=f"replacement {slot.active.id} takes over")
            return
        was_active = slot.active is link
        if was_active:
            slot.active = None
        else:
            slot.replacement = None
        if link.closing and not slot.wanted:
            self.log.info("connection_closed", slot=slot.index, link=link.id, streams=len(link.streams),
                          reason=reason, lived_s=lived, action="retired")
            return
        if was_active and link.opened_at is not None:
            self._report_gap(link, reason)  # a failed replacement lost nothing: the active one carries on
        slot.failures += 1
        self.reconnects_total += 1
        delay = backoff_s(slot.failures, self.config.live.ws_reconnect_initial_s,
                          self.config.live.ws_reconnect_max_s, self.random.random())
        slot.not_before = now + delay
        self.log.warning("connection_closed", slot=slot.index, link=link.id, streams=len(link.streams),
                         reason=reason, lived_s=lived, failures=slot.failures,
                         action=f"reconnect in {delay:.2f}s")

    def _report_gap(self, link: Link, reason: str) -> None:
        self._send_gap(list(link.streams), f"websocket link {link.id} closed: {reason}")

    def _send_gap(self, streams: list[str], reason: str) -> None:
        """Tell the broker these topics lost events, so consumers see a seq jump, not silence.
        The closed candles of the gap reach the database (and the feed) by REST regardless."""
        # The symbol as listed (stream names are lower case: `BtcUSDT` and `BTCUSDT` share one).
        by_stream = {stream_names([sym], [i], self.stream_kind)[0]: (sym, i)
                     for sym in self.symbols for i in self.config.klines.intervals}
        topics = [messages.feed_topic(*by_stream.get(s, stream_key(s))).decode() for s in streams]
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
        if link.first_event_at is None:
            self._on_first_event(link, event.event_time_ms, now)
        candle = event.candle
        if not self.tracker.accept(event.symbol, event.interval, candle.open_time_ms, event.closed,
                                   event.event_time_ms):
            self.duplicates_total += 1
            return
        self.handled += 1
        self.events_total += 1
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

    def _in_future(self, link: Link, event) -> bool:
        """A candle dated past the exchange's clock (checked once that clock is known)."""
        if not self.clock.synced:
            return False
        limit_ms = self.clock.now_ms() + FUTURE_TOLERANCE_MS
        candle = event.candle
        if candle.close_time_ms < limit_ms if event.closed else candle.open_time_ms <= limit_ms:
            return False
        self.future_total += 1
        self.dropped_malformed += 1
        self.log.warning("future_candle", link=link.id, symbol=event.symbol, interval=event.interval,
                         open_time_ms=candle.open_time_ms, closed=event.closed,
                         server_now_ms=limit_ms - FUTURE_TOLERANCE_MS, dropped_total=self.future_total,
                         action="dropped: not stored, not published")
        return True

    def _summary(self, now: float) -> None:
        elapsed = max(1e-3, now - self.summary_started)
        latencies = sorted(self._window_latency_ms)
        fields: dict[str, object] = {
            "events_per_s": round(self._window_events / elapsed, 1), "closed": self._window_closed,
            "connections": sum(1 for ln in self.links.values() if ln.opened_at is not None),
            "streams": sum(len(s.wanted) for s in self.slots), "events_total": self.events_total,
            "closed_total": self.closed_total, "duplicates_total": self.duplicates_total,
            "malformed_total": self.malformed_total, "future_total": self.future_total,
            "reconnects_total": self.reconnects_total,
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
