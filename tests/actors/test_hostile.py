"""Hostile input from the exchange, with real processes (issue 9).

- a 429 with `Retry-After: inf` during a backfill: the service keeps running, the scheduler is
  never restarted and the database ends exact;
- the downloader against hostile Retry-After values and an oversized body (simulator faults);
- the capped body read against a loopback HTTP server (endless, declared-huge and trickling bodies);
- the WebSocket actor fed strange events by the simulator: it drops each one, logs a bounded
  number of lines, and keeps publishing the good events after them;
- a future candle and a future exchange hole refused by the WebSocket actor and the writer.
"""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import time

import msgspec
import pytest
import requests
import zmq
from exactness import assert_exact, run_once, trading_symbols
from harness import (ActorProcess, DownloaderProcess, Peers, WriterProcess, candle, make_config, server_ms,
                     wait_for)
from harness import backfill_config as service_config

from kl_actors import httpcap, messages
from kl_actors.core import intervals
from kl_actors.core.budget import MAX_BAN_S, UNTIL_NEXT_WINDOW
from kl_actors.messages import ClockSync, ExchangeHole, KlineBatch


MIN = 60_000
# Well inside every simulated symbol's history.
HISTORY = (time.time_ns() // 1_000_000 // MIN) * MIN - 6 * 3_600_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def rows(candles) -> list[list]:
    return [list(msgspec.structs.astuple(c)) for c in candles]


# -- Retry-After: inf during a backfill ------------------------------------------------------------

@pytest.mark.slow(85)
def test_retry_after_inf_during_backfill_pauses_to_next_window_and_ends_exact(workdir, sim_factory):
    sim = sim_factory(symbols=3, weight_limit=1_000_000)
    symbols = trading_symbols(sim)
    depth = {"1m": 1200, "1h": 600}
    # The first three klines requests of the run are answered 429 with `Retry-After: inf`.
    sim.set_faults(throttle_klines=3, retry_after_header="inf")
    config = service_config(workdir, sim, depth)
    started = server_ms(sim)
    code, err = run_once(config, workdir, timeout=200)
    assert code == 0, err[-3000:]
    assert sim.stats()["responses_by_status"]["429"] == 3
    assert_exact(workdir / "db.sqlite", sim, symbols, depth, started, server_ms(sim))
    throttled = [ln for ln in err.splitlines() if "event=throttled" in ln]
    # A task the downloader held back without a request (its own Retry-After hold still running)
    # is throttled too, with the time left; every answered 429 shows the header as received.
    answered = [ln for ln in throttled if "held back" not in ln]
    assert answered and all("retry_after_header='inf'" in ln for ln in answered), throttled
    assert all("retry_after_s=-1.0" in ln for ln in answered), throttled
    # Paused until the next minute window, not forever and not a crash.
    pauses = [float(ln.split("paused for ")[1].split("s")[0]) for ln in throttled]
    assert all(0 <= p <= 60 for p in pauses), pauses
    assert err.count("event=actor_started name=scheduler") == 1, (
        "the scheduler was restarted:\n" + "\n".join(ln for ln in err.splitlines()
                                                     if "name=scheduler" in ln or "level=error actor=scheduler" in ln
                                                     or "Traceback" in ln)[-3000:])
    assert "event=actor_exited" not in err and "Traceback" not in err, err[-3000:]


# -- the downloader ----------------------------------------------------------------------------------

@pytest.fixture
def downloader(workdir, sim_factory):
    made: list[DownloaderProcess] = []

    def start(sim) -> DownloaderProcess:
        d = DownloaderProcess(workdir, sim.rest_url)
        made.append(d)
        return d

    yield start
    for d in made:
        d.close()


def test_downloader_hostile_retry_after_values_are_bounded(sim_factory, downloader):
    sim = sim_factory(symbols=2, weight_limit=1_000_000)
    d = downloader(sim)
    d.clock(0)
    sim.set_faults(throttle_klines=1, retry_after_header="1e308")
    result, batch = d.run(HISTORY, HISTORY + 9 * MIN)
    assert (result.status, result.http_status, batch) == ("rate_limited", 429, None)
    assert result.retry_after_s == UNTIL_NEXT_WINDOW and "retry_after_header='1e308'" in result.detail
    # Held back until the next minute window at most: never for good.
    held, _ = d.run(HISTORY, HISTORY + 9 * MIN)
    assert held.status == "rate_limited" and held.http_status == 0 and 0 < held.retry_after_s <= 60.0
    assert d.proc.poll() is None
    assert "retry_after_header='1e308'" in d.stderr()


def test_downloader_ban_capped_at_three_days(sim_factory, downloader):
    sim = sim_factory(symbols=2, weight_limit=1_000_000)
    d = downloader(sim)
    d.clock(0)
    sim.set_faults(ban_klines=1, retry_after_header="99999999")
    result, _ = d.run(HISTORY, HISTORY + 9 * MIN)
    assert (result.status, result.retry_after_s) == ("banned", MAX_BAN_S)
    held, _ = d.run(HISTORY, HISTORY + 9 * MIN)
    assert held.http_status == 0 and MAX_BAN_S - 60 < held.retry_after_s <= MAX_BAN_S


def test_downloader_oversized_body_is_invalid_and_not_read_whole(sim_factory, downloader):
    sim = sim_factory(symbols=2, weight_limit=1_000_000)
    d = downloader(sim)
    d.clock(0)
    cap = httpcap.klines_cap_bytes(10)
    sim.set_faults(oversize_klines_bytes=50 * 1024 * 1024)
    result, batch = d.run(HISTORY, HISTORY + 9 * MIN, limit=10)
    assert (result.status, result.http_status, batch) == ("invalid", 200, None)
    assert result.detail == f"body too large: over {cap} bytes" and result.weight_used_1m > 0
    # Just under the cap the same page is good: the cap is not in the way of real pages.
    sim.set_faults(oversize_klines_bytes=cap - 4096)
    result, batch = d.run(HISTORY, HISTORY + 9 * MIN, limit=10)
    assert result.status == "ok" and rows(batch.candles) == sim.truth("BTCUSDT", "1m", HISTORY, HISTORY + 9 * MIN)
    assert d.proc.poll() is None


# -- the capped read against a loopback HTTP server ----------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        try:
            if self.path == "/endless":  # chunked, never ends
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"[" * 65536
                for _ in range(10_000):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            elif self.path == "/declared":  # claims 1 GiB, sends little
                self.send_response(200)
                self.send_header("Content-Length", str(2**30))
                self.end_headers()
                self.wfile.write(b"[]")
            elif self.path == "/trickle":  # one byte every 0.3 s: no read timeout ever fires
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                for _ in range(100):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.3)
            elif self.path.startswith("/gzip"):  # small on the wire, large decoded
                body = gzip.compress(b"[" + b" " * (10 * 2**20 if self.path == "/gzip-bomb" else 10) + b"]")
                self.send_response(200)
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: the point of the cap


@pytest.fixture
def loopback_http():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_capped_read_stops_endless_declared_and_trickling_bodies(loopback_http):
    with requests.Session() as session:
        response, body = httpcap.get_capped(session, loopback_http + "/small", cap_bytes=1024, timeout_s=2.0)
        assert response.status_code == 200 and json.loads(body) == {"ok": True}
        started = time.monotonic()
        with pytest.raises(httpcap.BodyTooLarge, match="over 1048576 bytes") as info:
            httpcap.get_capped(session, loopback_http + "/endless", cap_bytes=1 << 20, timeout_s=2.0)
        assert info.value.status == 200 and time.monotonic() - started < 5
        with pytest.raises(httpcap.BodyTooLarge):
            httpcap.get_capped(session, loopback_http + "/declared", cap_bytes=1 << 20, timeout_s=2.0)
        started = time.monotonic()
        with pytest.raises(requests.Timeout, match="body not complete"):
            httpcap.get_capped(session, loopback_http + "/trickle", cap_bytes=1 << 20, timeout_s=0.5)
        assert time.monotonic() - started < 3
        # Compressed bodies are counted decoded: a small gzip bomb is stopped at the cap.
        _, body = httpcap.get_capped(session, loopback_http + "/gzip", cap_bytes=1024, timeout_s=2.0)
        assert json.loads(body) == []
        with pytest.raises(httpcap.BodyTooLarge):
            httpcap.get_capped(session, loopback_http + "/gzip-bomb", cap_bytes=1 << 20, timeout_s=2.0)
        # The session is still usable afterwards.
        _, body = httpcap.get_capped(session, loopback_http + "/small", cap_bytes=1024, timeout_s=2.0)
        assert json.loads(body) == {"ok": True}


def test_websocket_discovery_refuses_an_endless_exchange_info(loopback_http, workdir):
    config = make_config(workdir, exchange={"rest_url": loopback_http + "/endless#", "ws_url": "ws://127.0.0.1:9/x"},
                         klines={"intervals": ["1m"]})
    peers = Peers(config)
    actor = ActorProcess("websocket", config, workdir)
    try:
        log = peers.pump_until(actor, lambda: "event=discovery_failed" in actor.stderr() and actor.stderr(), 30,
                               "discovery_failed")
        assert "body too large" in log
    finally:
        actor.stop()
        peers.close()


# -- the WebSocket actor against strange events ------------------------------------------------------

def _event(symbol: str, interval: str, open_ms: int, closed: bool, **k_over) -> dict:
    try:
        close_ms = intervals.close_time(interval, open_ms)
    except (ValueError, OSError, OverflowError):
        close_ms = open_ms + MIN - 1
    k = {"t": open_ms, "T": close_ms, "s": symbol, "i": interval, "f": 1,
         "L": 2, "o": "1.0", "c": "1.5", "h": "2.0", "l": "0.5", "v": "10", "n": 2, "x": closed, "q": "15",
         "V": "5", "Q": "7.5", "B": "0"}
    k.update(k_over)
    return {"stream": f"{symbol.lower()}@kline_{interval}", "data": {"e": "kline", "E": open_ms, "s": symbol, "k": k}}


def _strange_frames(now: int) -> list[str]:
    minute = now - now % MIN
    good_open = minute - MIN
    events = [
        _event("BTCUSDT", "7m", good_open, True),                        # unknown interval
        _event("BTCUSDT", "5m", good_open - good_open % 300_000, True),  # interval not subscribed
        _event("DOGEUSDT", "1m", good_open, True),                       # symbol not subscribed
        _event("BTCUSDТ", "1m", good_open, True),                        # Cyrillic Т: non-ASCII
        _event("btcusdt", "1m", good_open, True),                        # lower case: not our topic
        _event("ÄÖÜUSDT", "1m", good_open, True),
        _event("BTCUSDT", "1m", good_open, True, o=1.0),                 # wrong type
        _event("BTCUSDT", "1m", good_open, True, n="many"),
        _event("BTCUSDT", "1m", good_open, True, n=2**70),               # huge numbers
        _event("BTCUSDT", "1m", 2**62 - 2**62 % MIN, True),
        _event("BTCUSDT", "1M", 10**19 - 1, True),
        _event("BTCUSDT", "1m", good_open, True, o="NaN", c="nan", h="inf", l="-inf"),
        _event("BTCUSDT", "1m", good_open, True, o="١٢", h="١٢"),       # Arabic-Indic digits
        _event("BTCUSDT", "1m", good_open, True, v="1e400"),
        _event("BTCUSDT", "1m", good_open, True, o="9" * 5000),
    ]
    missing = _event("BTCUSDT", "1m", good_open, True)
    del missing["data"]["k"]["o"]
    events.append(missing)
    frames = [json.dumps(e) for e in events]
    frames += ["not json at all", "{", "[]", "null", '"kline"', '{"data": 5}', '{"stream": 1, "data": {"e": "kline"}}',
               '{"e":"kline","E":1,"k":{}}', "\x00\x01\x02", "{}" * 10]
    return frames


@pytest.mark.slow
def test_websocket_actor_drops_strange_events_and_keeps_publishing(sim_factory, workdir):
    sim = sim_factory(symbols=3, seed=4, weight_limit=1_000_000, ws_push_ms=100)
    config = make_config(workdir, exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
                         klines={"intervals": ["1m"]}, symbols={"include": ["BTCUSDT", "ETHUSDT"]})
    peers = Peers(config)
    bus = peers.ctx.socket(zmq.PUB)
    bus.setsockopt(zmq.LINGER, 0)
    bus.bind(config.endpoints.bus_sub)
    actor = ActorProcess("websocket", config, workdir)
    try:
        peers.pump_until(actor, lambda: {f.symbol for _, f in peers.feed_messages} >= {"BTCUSDT", "ETHUSDT"}, 20,
                         "the first good events")
        # The exchange's clock, as time-sync would publish it (repeated: PUB drops until joined).
        peers.pump_until(actor, lambda: bus.send(messages.encode(ClockSync(offset_ms=0.0, rtt_ms=1.0,
                                                                           measured_at_ms=now_ms())))
                         or "event=clock_known" in actor.stderr(), 10, "clock known")
        frames = _strange_frames(now_ms())
        future_open = now_ms() - now_ms() % MIN + 3 * MIN
        future = [json.dumps(_event("BTCUSDT", "1m", future_open, True)),   # closes in 4 minutes
                  json.dumps(_event("BTCUSDT", "1m", future_open, False)),  # would poison the dedupe
                  json.dumps(_event("ETHUSDT", "1m", future_open + 60 * MIN, True))]
        flood = frames * 20  # a format change: hundreds of bad events a second
        answer = sim.admin("ws/inject", {"text": flood + future, "binary_hex": ["00ff10", b"{}".hex()],
                                         "big_text_bytes": 2 * 1024 * 1024})
        assert answer["connections"] == 1
        injected_at = len(peers.feed_messages)
        log = peers.pump_until(actor, lambda: actor.stderr().count("event=future_candle") >= 3 and actor.stderr(),
                               15, "future candles refused")
        # The actor lives on and keeps publishing good live events of both symbols after the flood.
        peers.pump_until(actor, lambda: {f.symbol for _, f in peers.feed_messages[injected_at:]
                                         if f.candle.open_time_ms < future_open} >= {"BTCUSDT", "ETHUSDT"},
                         10, "good events after the strange ones")
        # No strange or future event reached the feed or the writer.
        for topic, f in peers.feed_messages:
            assert f.symbol in ("BTCUSDT", "ETHUSDT") and f.interval == "1m" and f.candle.open_time_ms < future_open
            assert topic == messages.feed_topic(f.symbol, f.interval)
            if f.closed:
                truth = sim.truth(f.symbol, "1m", f.candle.open_time_ms, f.candle.open_time_ms)
                assert list(msgspec.structs.astuple(f.candle)) == truth[0]
        for _, b in peers.batches:
            assert b.symbol in ("BTCUSDT", "ETHUSDT") and b.candles[0].open_time_ms < future_open
        assert actor.proc.poll() is None
        # Bounded log: the flood (about 550 bad frames) wrote at most 5 lines per event name,
        # then one count line once the 10 s window passed.
        assert log.count("event=malformed_event") <= 5, log.count("event=malformed_event")
        summary = peers.pump_until(actor, lambda: "event=log_suppressed suppressed=malformed_event" in actor.stderr()
                                   and actor.stderr(), 15, "the log_suppressed line")
        line = next(ln for ln in summary.splitlines() if "suppressed=malformed_event" in ln)
        suppressed = int(line.split("count=")[1].split()[0])
        assert suppressed >= len(flood) - 5, line
        assert summary.count("event=malformed_event") <= 5
        assert summary.count("\n") < 200, "the log is not bounded"
    finally:
        actor.stop()
        bus.close()
        peers.close()


# -- the writer refuses future candles and future holes ----------------------------------------------

def test_writer_refuses_future_candles_and_future_holes(workdir):
    w = WriterProcess(workdir)
    bus = w.ctx.socket(zmq.PUB)
    bus.setsockopt(zmq.LINGER, 0)
    bus.bind(w.config.endpoints.bus_sub)
    try:
        def clock_known():
            bus.send(messages.encode(ClockSync(offset_ms=0.0, rtt_ms=1.0, measured_at_ms=now_ms())))
            w.pump(0.05)
            return "event=clock_known" in w.stderr()
        wait_for(clock_known, 10, interval=0, what="the writer knows the exchange's clock")
        now = now_ms()
        last_closed = now - now % MIN - MIN
        future = now - now % MIN + 2 * MIN
        w.send(KlineBatch("BTCUSDT", "1m", "ws", [candle(future)], live=True))
        w.send(KlineBatch("BTCUSDT", "1m", "rest", [candle(last_closed), candle(future)], task_id="t-future"))
        w.send(KlineBatch("BTCUSDT", "1m", "rest", [candle(last_closed - MIN), candle(last_closed)], task_id="t-good"))
        w.send(ExchangeHole("BTCUSDT", "1m", last_closed - 30 * MIN, future))            # ends in the future
        w.send(ExchangeHole("BTCUSDT", "1d", intervals.last_closed_open("1d", now), intervals.last_closed_open("1d", now)
                            + intervals.nominal_ms("1d")))                               # the open day: not closed
        w.send(ExchangeHole("BTCUSDT", "1m", 2**63 - 1, 2**63 - 1))
        w.send(ExchangeHole("BTCUSDT", "1m", last_closed - 30 * MIN, last_closed - 20 * MIN))  # a real one
        assert "in the future" in w.wait_failed("t-future").error
        w.wait_committed("t-good")
        wait_for(lambda: (w.pump(0.05) or True) and "event=invalid_hole" in w.stderr(), 20, interval=0,
                 what="holes handled")
        w.pump(0.5)
        assert [r[0] for r in w.rows("BTCUSDT", "1m")] == [last_closed - MIN, last_closed]
        store = w.reader()
        try:
            holes = list(store.conn.execute("SELECT symbol, interval, start_ms, end_ms FROM meta_holes"))
        finally:
            store.close()
        assert holes == [("BTCUSDT", "1m", last_closed - 30 * MIN, last_closed - 20 * MIN)]
        log = w.stderr_path.read_text()
        assert log.count("event=invalid_hole") == 3 and "ends in the future" in log
        assert not [f for _, f in w.feed_messages if f.candle.open_time_ms == future]
        assert w.proc.poll() is None
    finally:
        w.close()
