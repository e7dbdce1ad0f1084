"""The consumer feed through the real broker, and a writer killed while batches stream in."""

from __future__ import annotations

import os
import signal
import threading
import time

import apsw
import zmq

from kl_actors import messages
from kl_actors.messages import Committed, FeedKline, KlineBatch
from harness import candle, make_config, wait_for

MIN = 60_000
T0 = 1_789_478_160_000  # a minute boundary


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
        _until_subscribed(pub, [btc, everything])

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


def _until_subscribed(pub, subs, timeout=30.0):
    """PUB/SUB drops what is sent before a subscription reaches the broker: send BTCUSDT 3m markers
    (a topic the test does not count) until every subscriber got one, then one last marker that
    each must receive, so nothing of the warm-up is left in their queues."""
    def marker(n):
        body = FeedKline("BTCUSDT", "3m", 0, False, "ws", False, candle(T0 + n * 3 * MIN, "3m"))
        pub.send_multipart([messages.feed_topic("BTCUSDT", "3m"), messages.encode(body)])

    def received(sock):
        got = []
        while sock.poll(20):
            got.append(messages.decode_feed(sock.recv_multipart()[1]).candle.open_time_ms)
        return got

    pending = set(subs)
    deadline = time.monotonic() + timeout
    n = 0
    while pending and time.monotonic() < deadline:
        n += 1
        marker(n)
        pending = {s for s in pending if not received(s)}
    assert not pending, "subscriptions never reached the broker"
    last = T0 + 10_000 * 3 * MIN
    marker(10_000)
    for sock in subs:
        wait_for(lambda: last in received(sock), timeout, interval=0, what="the last warm-up marker")


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
        # Subscribed once the idle writer's beacon (an empty Committed, each second) arrives.
        wait_for(lambda: bus.poll(100) and isinstance(messages.decode(bus.recv()), Committed), 15,
                 interval=0, what="the writer's beacon on the bus")

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
            rows = [candle(T0 + (i * 50 + j) * MIN, open=f"100.{i:03d}{j:02d}") for j in range(50)]
            push.send(messages.encode(KlineBatch("BTCUSDT", "1m", "rest", rows, task_id=f"t{i}")))

        for i in range(200):
            send_batch(i)
            sent += 1
        wait_for(lambda: len(committed) > 20, timeout=10, what="first commits")
        os.kill(status["writer"]["pid"], signal.SIGKILL)
        for i in range(200, 400):
            send_batch(i)
        new = wait_for(lambda: (p := service.pid("writer")) not in (None, status["writer"]["pid"]) and p,
                       timeout=5, what="writer restarted")
        assert new
        # Restarted because its exit was seen, not after a heartbeat timeout (how fast is bench work).
        log = service.log_text()
        assert 'event=actor_exited name=writer why="killed by SIGKILL"' in log, log[-2000:]
        assert "event=actor_silent name=writer" not in log
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
