"""The api actor as a real process: a database file made here, a feed and a control socket owned by
the test. The open candle from the feed, hostile feed frames, a database that appears late, a
port that is taken."""

from __future__ import annotations

import socket
from pathlib import Path

import msgspec
import requests
import zmq

from harness import ActorProcess, candle, free_port, make_config, now_ms, wait_for
from kl_actors import messages
from kl_actors.core import intervals
from kl_actors.messages import FeedKline, SymbolInfo
from kl_actors.store import Store

M = intervals.MINUTE_MS


class Around:
    """The api process with the sockets of its peers (feed PUB, control PULL), owned by the test."""

    def __init__(self, workdir, port: int | None = None) -> None:
        self.port = port or free_port()
        self.config = make_config(workdir, api={"listen": f"127.0.0.1:{self.port}"}, log={"level": "DEBUG"})
        (workdir / "rt").mkdir(mode=0o700, exist_ok=True)
        self.ctx = zmq.Context()
        self.feed = self.ctx.socket(zmq.PUB)
        self.feed.bind(self.config.endpoints.feed)
        self.control = self.ctx.socket(zmq.PULL)
        self.control.bind(self.config.endpoints.control)
        self.actor = ActorProcess("api", self.config, workdir)
        self.base = f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **params):
        return requests.get(self.base + path, params=params, timeout=5)

    def answering(self) -> bool:
        assert self.actor.proc.poll() is None, self.actor.stderr()
        try:
            return self.get("/fapi/v1/ping").status_code == 200
        except requests.ConnectionError:
            return False

    def publish(self, symbol: str, c: messages.Candle, closed: bool = False, stored: bool = False) -> None:
        body = FeedKline(symbol=symbol, interval="1m", seq=1, closed=closed, source="ws", stored=stored, candle=c)
        self.feed.send_multipart([messages.feed_topic(symbol, "1m"), messages.encode(body)])

    def close(self) -> None:
        self.actor.stop()
        self.ctx.destroy(linger=0)


def make_db(config, opens) -> None:
    db = Store.open_writer(config.database)
    with db.transaction():
        db.record_symbols([SymbolInfo("BTCUSDT", "TRADING", opens[0], '{"symbol":"BTCUSDT","status":"TRADING"}')],
                          now_ms())
        db.upsert("BTCUSDT", "1m", "rest", [candle(o) for o in opens])
    db.close()


def test_the_open_candle_from_the_feed_and_hostile_frames(workdir):
    around = Around(workdir)
    try:
        # No database yet: the actor runs and knows no symbol (it never creates the file).
        wait_for(around.answering, 15, what="the api answering")
        answer = around.get("/fapi/v1/klines", symbol="BTCUSDT", interval="1m")
        assert (answer.status_code, answer.json()["code"]) == (400, -1121)
        assert around.get("/fapi/v1/exchangeInfo").json()["symbols"] == []
        assert not Path(around.config.database.path).exists()
        last_closed = intervals.last_closed_open("1m", now_ms())
        opens = [intervals.step("1m", last_closed, -i) for i in range(200, 0, -1)]
        make_db(around.config, opens)
        wait_for(lambda: around.get("/fapi/v1/klines", symbol="BTCUSDT", interval="1m").status_code == 200, 10,
                 what="the file found")
        assert around.get("/fapi/v1/exchangeInfo").json()["symbols"] == [{"symbol": "BTCUSDT", "status": "TRADING"}]

        # Garbage on the feed: dropped with a line, the actor goes on.
        around.feed.send_multipart([b"kline.BTCUSDT.1m", b"\xc1 not msgpack"])
        around.feed.send_multipart([b"kline.BTCUSDT.1m"])

        def served_open_candle():
            now = now_ms()
            current = intervals.align("1m", now)
            around.publish("BTCUSDT", candle(current, open="7.77"))
            around.publish("BTCUSDT", candle(current - 5 * M, open="6.66"))  # an old one: never served
            rows = around.get("/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=3).json()
            return rows if rows[-1][0] == current and rows[-1][1] == "7.77" else None

        rows = wait_for(served_open_candle, 15, interval=0.1, what="the open candle served")
        # Before it, the newest stored candles, as stored.
        assert rows[:-1] == [list(msgspec.structs.astuple(candle(o))) for o in opens[-2:]]
        assert "event=malformed_feed_message" in around.actor.stderr()
        # A stored candle on the feed is the database's to serve: it never stands in as the open one.
        around.publish("ETHUSDT", candle(intervals.align("1m", now_ms())), stored=True)
        assert around.answering()
    finally:
        around.close()


def test_a_taken_port_is_one_line_and_no_crash_loop(workdir):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    around = Around(workdir, port=holder.getsockname()[1])
    try:
        wait_for(lambda: "event=api_listen_failed" in around.actor.stderr(), 15, what="the bind failure logged")
        beats = around.control.poll(20_000)
        assert beats and around.actor.proc.poll() is None  # heartbeats go on: the supervisor keeps it
        holder.close()
        wait_for(around.answering, 15, what="serving once the port is free")
    finally:
        holder.close()
        around.close()
