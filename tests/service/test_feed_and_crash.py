"""The consumer feed through the real broker, and a writer killed while batches stream in."""

from __future__ import annotations

import os
import signal
import threading
import time

import apsw
import zmq

from kl_actors import messages
from kl_actors.messages import Candle, Committed, FeedKline, KlineBatch
from harness import make_config, wait_for

MIN = 60_000
T0 = 1_789_478_160_000  # a minute boundary


def candle(open_ms: int, price: str = "100.0") -> Candle:
    return Candle(open_ms, price, "101.5", "99.5", "100.5", "12.345", open_ms + MIN - 1, "1240.50000", 7,
                  "6.000", "600.00000", "0")


def test_consumer_receives_exactly_its_prefix_with_sequence(workdir, service_factory):
    service = service_factory(make_config(workdir), ["--actors", "broker"])
    service.wait_running(["broker"])
    e = service.config.endpoints
    ctx = zmq.Context()
    try:
        btc = ctx.socket(zmq.SUB)
        btc.connect(e.feed)
        btc.setsockopt(zmq.SUBSCRIBE, b"kline.BTCUSDT.")
        everything = ctx.socket(zmq.SUB)
        everything.connect(e.feed)
        everything.setsockopt(zmq.SUBSCRIBE, b"kline.")
        pub = ctx.socket(zmq.PUB)
        pub.connect(e.feed_in)
        topics = [("BTCUSDT", "1m"), ("BTCUSDT", "5m"), ("ETHUSDT", "1m"), ("BTCUSDTX", "1m")]
        time.sleep(0.5)  # subscriptions travel to the broker before anything is published

        def publish(n):
            for i in range(n):
                for symbol, interval in topics:
                    body = FeedKline(symbol, interval, 0, False, "ws", False, candle(T0 + i * MIN))
                    pub.send_multipart([messages.feed_topic(symbol, interval), messages.encode(body)])
            pub.send_multipart([b"kline.BTCUSDT.1m", b"not msgpack"])  # dropped by the broker

        publish(20)
        got_btc = _drain(btc, 40, 5)
        got_all = _drain(everything, 80, 5)
        # "kline.BTCUSDT." matches BTCUSDT's topics only, not BTCUSDTX (the trailing dot matters).
        assert sorted({(k.symbol, k.interval) for k in got_btc}) == [("BTCUSDT", "1m"), ("BTCUSDT", "5m")]
        assert len(got_btc) == 40 and len(got_all) == 80
        for symbol, interval in topics:
            seqs = [k.seq for k in got_all if (k.symbol, k.interval) == (symbol, interval)]
            assert seqs == list(range(1, 21))
            opens = [k.candle.open_time_ms for k in got_all if (k.symbol, k.interval) == (symbol, interval)]
            assert opens == [T0 + i * MIN for i in range(20)]
        assert btc.poll(300) == 0  # the malformed message never reached a consumer

        # A reported upstream loss: the named topics skip one seq; the gap message itself and a
        # malformed one are never forwarded; other topics keep counting without a jump.
        gap = messages.FeedGap(topics=["kline.BTCUSDT.1m", "kline.ETHUSDT.1m"], reason="test")
        pub.send_multipart([messages.FEED_GAP_TOPIC, messages.encode(gap)])
        pub.send_multipart([messages.FEED_GAP_TOPIC, b"\x01\x02"])
        bad = messages.FeedGap(topics=["kline.BTCUSDT.5m", "control"], reason="test")  # dropped whole
        pub.send_multipart([messages.FEED_GAP_TOPIC, messages.encode(bad)])
        for symbol, interval in topics:
            body = FeedKline(symbol, interval, 0, False, "ws", False, candle(T0 + 20 * MIN))
            pub.send_multipart([messages.feed_topic(symbol, interval), messages.encode(body)])
        after = {(k.symbol, k.interval): k.seq for k in _drain(everything, 4, 5)}
        assert after == {("BTCUSDT", "1m"): 22, ("ETHUSDT", "1m"): 22, ("BTCUSDT", "5m"): 21, ("BTCUSDTX", "1m"): 21}
        assert everything.poll(300) == 0
    finally:
        ctx.destroy(linger=0)


def _drain(sock, count, timeout):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        if sock.poll(100):
            topic, body = sock.recv_multipart()
            k = messages.decode_feed(body)
            assert not isinstance(k, messages.DecodeError)
            assert topic == messages.feed_topic(k.symbol, k.interval)
            out.append(k)
    return out


def test_kill9_writer_while_batches_stream_in(workdir, service_factory):
    service = service_factory(make_config(workdir), ["--actors", "broker,writer"])
    status = service.wait_running(["broker", "writer"])
    e = service.config.endpoints
    ctx = zmq.Context()
    committed: set[str] = set()
    stop = threading.Event()
    listener = None
    try:
        bus = ctx.socket(zmq.SUB)
        bus.connect(e.bus_sub)
        bus.setsockopt(zmq.SUBSCRIBE, b"")
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, 100)
        push.connect(e.writer)
        time.sleep(0.5)

        def listen():
            while not stop.is_set():
                if bus.poll(50):
                    msg = messages.decode(bus.recv())
                    if isinstance(msg, Committed):
                        committed.update(msg.task_ids)

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        sent = 0

        def send_batch(i):
            rows = [candle(T0 + (i * 50 + j) * MIN, f"100.{i:03d}{j:02d}") for j in range(50)]
            push.send(messages.encode(KlineBatch("BTCUSDT", "1m", "rest", rows, task_id=f"t{i}")))

        for i in range(200):
            send_batch(i)
            sent += 1
        wait_for(lambda: len(committed) > 20, timeout=10, what="first commits")
        killed_at = time.monotonic()
        os.kill(status["writer"]["pid"], signal.SIGKILL)
        for i in range(200, 400):
            send_batch(i)
        new = wait_for(lambda: (p := service.pid("writer")) not in (None, status["writer"]["pid"]) and p,
                       timeout=5, what="writer restarted")
        assert time.monotonic() - killed_at < 1.5, "restart took longer than a second and a half"
        assert new
        wait_for(lambda: "t399" in committed, timeout=20, what="commits after the restart")
    finally:
        stop.set()
        if listener is not None:
            listener.join(timeout=2)
        ctx.destroy(linger=0)
    code, _ = service.stop()
    assert code == 0
    with apsw.Connection(str(workdir / "db.sqlite"), flags=apsw.SQLITE_OPEN_READONLY) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = {row[0]: row[1] for row in db.execute("SELECT open_time, open FROM k_btc_1m")}
    assert service.status()["writer"]["restarts"] == 1
    # Every batch announced as committed is in the file, exactly.
    for task_id in committed:
        i = int(task_id[1:])
        for j in range(50):
            assert stored[T0 + (i * 50 + j) * MIN] == f"100.{i:03d}{j:02d}"
