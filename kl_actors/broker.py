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
"""

from __future__ import annotations

import zmq

from . import messages
from .actor import Actor

FEED_HWM = 200_000


class Broker(Actor):
    kind = "broker"

    def setup(self) -> None:
        e = self.config.endpoints
        self.bus_in = self.socket(zmq.XSUB, e.bus_pub, bind=True)
        self.bus_out = self.socket(zmq.XPUB, e.bus_sub, bind=True)
        self.feed_in = self.socket(zmq.XSUB, e.feed_in, bind=True, hwm=FEED_HWM)
        self.feed_out = self.socket(zmq.XPUB, e.feed, bind=True, hwm=FEED_HWM)
        self.feed_in.send(b"\x01")  # subscribe to every feed topic upstream
        self.seq_by_topic: dict[bytes, int] = {}
        self.feed_published = 0
        self.feed_dropped_malformed = 0
        self.feed_gaps = 0
        self.on(self.bus_in, lambda sock: self._forward(sock, self.bus_out))   # messages down
        self.on(self.bus_out, lambda sock: self._forward(sock, self.bus_in))   # subscriptions up
        self.on(self.feed_in, self._feed_down)
        self.on(self.feed_out, self._feed_subscription)
        self.log.info("bound", bus_pub=e.bus_pub, bus_sub=e.bus_sub, feed_in=e.feed_in, feed=e.feed)

    def _forward(self, sock: zmq.Socket, to: zmq.Socket) -> None:
        for _ in range(1000):
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
        for _ in range(5000):
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
        if topic != messages.feed_topic(kline.symbol, kline.interval):
            self._drop_feed(f"topic {topic[:60]!r} does not match its body")
            return
        seq = self.seq_by_topic.get(topic, 0) + 1
        self.seq_by_topic[topic] = seq
        kline.seq = seq
        self.feed_out.send_multipart([topic, messages.encode(kline)])
        self.feed_published += 1

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
            topic = name.encode("ascii", "replace")
            self.seq_by_topic[topic] = self.seq_by_topic.get(topic, 0) + 1
        self.feed_gaps += 1
        self.log.info("feed_gap", topics=len(gap.topics), reason=gap.reason, gaps_total=self.feed_gaps)

    def _drop_feed(self, reason: str) -> None:
        self.feed_dropped_malformed += 1
        self.dropped_malformed += 1
        self.log.warning("malformed_feed_message", reason=reason,
                         dropped_total=self.feed_dropped_malformed, action="dropped")
