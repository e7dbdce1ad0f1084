"""The broker actor: two XSUB/XPUB proxies, the internal bus and the consumer feed.

Bus: publishers (writer, scheduler, time-sync) connect PUB to `bus_pub`; subscribers connect SUB
to `bus_sub`; subscriptions travel upstream, messages downstream, untouched.

Feed: the writer and the WebSocket actor connect PUB to `feed_in`; outside consumers connect SUB to
`feed` (loopback unless configured otherwise). The broker subscribes to everything upstream and
stamps each message with a per-topic sequence number before publishing it, because it is the one
place that sees every feed message in order: a consumer that sees seq jump knows it lost messages
(slow consumer, or a restart of the broker, after which seq starts again at 1). The WebSocket
actor also reports losses it knows of upstream (a dropped connection): a `FeedGap` under topic
`gap` makes the broker skip one seq on each topic it names, so a consumer sees those as jumps too.

The broker must never carry internal control traffic on the feed, and never block on a slow
consumer: XPUB drops for a subscriber whose queue is full (the gap shows in seq).

Feed pressure must not reach the bus. Any local user can connect to the feed, so what one
subscriber may cost is bounded: `FEED_SUBSCRIBER_HWM` queued messages (about a minute of the
live feed at full size; an idle subscriber then costs under 1 MiB and loses the rest, seen as
seq jumps), a small kernel send buffer, `MAX_FEED_SUBSCRIBERS` connections (more are cut at
once, `feed_subscriber_refused`), and subscription frames of at most `MAX_SUBSCRIPTION_BYTES`.
In the loop the bus is served first, and the feed in slices of `FEED_SLICE` messages, so a
saturated feed delays a bus message by about one slice (~10 ms).
"""

from __future__ import annotations

import os
import socket

import zmq
from zmq.utils.monitor import recv_monitor_message

from .. import messages
from .base import Actor

FEED_SUBSCRIBER_HWM = 5_000     # queued messages per consumer; beyond: dropped for it
FEED_SNDBUF = 128 * 1024        # kernel send buffer per consumer connection
MAX_FEED_SUBSCRIBERS = 100
MAX_SUBSCRIPTION_BYTES = 256
FEED_SLICE = 500                # feed messages per poll round
BUS_SLICE = 1000


class Broker(Actor):

    def setup(self) -> None:
        e = self.config.endpoints
        self.bus_in = self.socket(zmq.XSUB, e.bus_pub, bind=True)
        self.bus_out = self.socket(zmq.XPUB, e.bus_sub, bind=True)
        self.serve_remote(self.bus_out, "bus_sub")  # the clock for downloaders on other hosts (curve.py)
        self.feed_in = self.socket(zmq.XSUB, e.feed_in, bind=True, hwm=messages.FEED_HWM)
        self.feed_out = self._feed_socket(e.feed)
        self.feed_in.send(b"\x01")  # subscribe to every feed topic upstream
        self.seq_by_topic: dict[bytes, int] = {}
        self.feed_published = 0
        self.feed_dropped_malformed = 0
        self.feed_gaps = 0
        self.feed_subscribers: set[int] = set()  # fds of accepted consumer connections
        self.feed_refused = 0
        # Registration order is service order in each round: the bus first.
        self.on(self.bus_in, lambda sock: self._forward(sock, self.bus_out))   # messages down
        self.on(self.bus_out, lambda sock: self._forward(sock, self.bus_in))   # subscriptions up
        self.on(self.feed_monitor, self._feed_connections)
        self.on(self.feed_in, self._feed_down)
        self.on(self.feed_out, self._feed_subscription)
        self.log.info("bound", bus_pub=e.bus_pub, bus_sub=e.bus_sub, feed_in=e.feed_in, feed=e.feed,
                      feed_subscriber_hwm=FEED_SUBSCRIBER_HWM, max_feed_subscribers=MAX_FEED_SUBSCRIBERS)

    def _feed_socket(self, endpoint: str) -> zmq.Socket:
        """The consumers' XPUB, its limits set before bind so every connection gets them."""
        assert self.context is not None
        sock = self.context.socket(zmq.XPUB)
        sock.setsockopt(zmq.LINGER, 0)  # what a consumer has not taken at our stop is lost anyway
        sock.setsockopt(zmq.SNDHWM, FEED_SUBSCRIBER_HWM)
        sock.setsockopt(zmq.SNDBUF, FEED_SNDBUF)
        sock.setsockopt(zmq.RCVHWM, 1000)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
        sock.setsockopt(zmq.XPUB_NODROP, 0)  # a full consumer loses messages, never blocks us
        self.feed_monitor = sock.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        sock.bind(endpoint)
        self._sockets.extend([sock, self.feed_monitor])  # closed by the base at exit
        return sock

    def _feed_connections(self, sock: zmq.Socket) -> None:
        """Count consumer connections; cut those beyond MAX_FEED_SUBSCRIBERS at once."""
        for _ in range(BUS_SLICE):
            try:
                event = recv_monitor_message(sock, zmq.NOBLOCK)
            except zmq.Again:
                return
            fd = event["value"]
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self.feed_subscribers.discard(fd)
            elif len(self.feed_subscribers) >= MAX_FEED_SUBSCRIBERS:
                self.feed_refused += 1
                # Shutting the connection down (not closing libzmq's descriptor) makes libzmq
                # see an ordinary disconnect and clean up the pipe itself.
                try:
                    with socket.socket(fileno=os.dup(fd)) as conn:
                        conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already gone
                self.log.warning("feed_subscriber_refused", subscribers=len(self.feed_subscribers),
                                 refused_total=self.feed_refused, action="connection closed")
            else:
                self.feed_subscribers.add(fd)

    def _forward(self, sock: zmq.Socket, to: zmq.Socket) -> None:
        for _ in range(BUS_SLICE):
            try:
                to.send_multipart(sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return

    def _feed_subscription(self, sock: zmq.Socket) -> None:
        # Consumers' (un)subscriptions: we already take everything upstream; just drain them.
        for _ in range(1000):
            try:
                sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _feed_down(self, sock: zmq.Socket) -> None:
        for _ in range(FEED_SLICE):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._stamp_and_publish(frames)

    def _stamp_and_publish(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self._drop_feed(f"expected 2 frames, got {len(frames)}")
            return
        topic, body = frames
        if topic == messages.FEED_GAP_TOPIC:
            self._skip_seq(body)
            return
        kline = messages.decode_feed(body)
        if isinstance(kline, messages.DecodeError):
            self._drop_feed(kline.reason)
            return
        try:
            expected = messages.feed_topic(kline.symbol, kline.interval)
        except UnicodeError:
            self._drop_feed(f"symbol or interval not encodable: {kline.symbol[:40]!r} {kline.interval[:10]!r}")
            return
        if topic != expected:
            self._drop_feed(f"topic {topic[:60]!r} does not match its body")
            return
        seq = self.seq_by_topic.get(topic, 0) + 1
        self.seq_by_topic[topic] = seq
        kline.seq = seq
        self.feed_out.send_multipart([topic, messages.encode(kline)])
        self.feed_published += 1
        self.metrics.inc("feed_messages_total", (kline.source,))

    def _skip_seq(self, body: bytes) -> None:
        gap = messages.decode_feed_gap(body)
        if isinstance(gap, messages.DecodeError):
            self._drop_feed(gap.reason)
            return
        for name in gap.topics:
            if not name.startswith("kline."):
                self._drop_feed(f"gap for a topic that is not a kline topic: {name[:60]!r}")
                return
        for name in gap.topics:
            topic = name.encode("utf-8", "replace")
            self.seq_by_topic[topic] = self.seq_by_topic.get(topic, 0) + 1
        self.feed_gaps += 1
        self.metrics.inc("feed_gaps_total", (), len(gap.topics))
        self.log.info("feed_gap", topics=len(gap.topics), reason=gap.reason, gaps_total=self.feed_gaps)

    def _drop_feed(self, reason: str) -> None:
        self.feed_dropped_malformed += 1
        self.dropped_malformed += 1
        self.log.warning("malformed_feed_message", reason=reason,
                         dropped_total=self.feed_dropped_malformed, action="dropped")
