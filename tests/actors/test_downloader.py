"""The downloader as a real process against the real simulator, with real sockets.

The test plays the other actors: it binds a PUSH on `tasks` (the scheduler), a PULL on `results`,
a PULL on `writer` (stand-in for the writer, to read the pages), a PUB on `bus_sub` (where the
broker's XPUB would be, for `ClockSync`) and a PULL on `control` (heartbeats = ready).
"""

from __future__ import annotations

import signal
import time

import msgspec
import pytest
from harness import DownloaderProcess, free_port, wait_for

from kl_actors import messages

MIN = 60_000
_HOUR = 3_600_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def current_open() -> int:
    t = now_ms()
    return t - t % MIN


def clear_of_boundary(margin_ms: int = 1500) -> None:
    """Tests about the open candle must not straddle a minute boundary: wait one out if close."""
    left = MIN - now_ms() % MIN
    if left < margin_ms:
        time.sleep((left + 100) / 1000)


HISTORY = current_open() - 6 * _HOUR  # well inside every simulated symbol's history
DEEP = current_open() - 48 * _HOUR


def rows(candles) -> list[list]:
    return [list(msgspec.structs.astuple(c)) for c in candles]


@pytest.fixture
def downloader_factory(workdir):
    started: list[DownloaderProcess] = []

    def start(rest_url: str, **kw) -> DownloaderProcess:
        sub = workdir / f"d{len(started)}"
        sub.mkdir()
        d = DownloaderProcess(sub, rest_url, **kw)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


def test_pages_equal_truth_empty_range_limit_and_boundary(sim, downloader_factory):
    d = downloader_factory(sim.rest_url)
    # A page equals the simulator's truth candle by candle, decimal strings exactly.
    start, end = HISTORY, HISTORY + 99 * MIN
    result, batch = d.run(start, end)
    truth = sim.truth("BTCUSDT", "1m", start, end)
    assert len(truth) == 100
    assert result.status == "ok" and result.http_status == 200 and result.weight_used_1m > 0
    assert (result.candles, result.first_open_ms, result.last_open_ms) == (100, start, end)
    assert (batch.symbol, batch.interval, batch.source, batch.live) == ("BTCUSDT", "1m", "rest", False)
    assert rows(batch.candles) == truth
    # Another symbol and interval.
    h_start = HISTORY - HISTORY % _HOUR - 48 * _HOUR
    result, batch = d.run(h_start, h_start + 23 * _HOUR, symbol="ETHUSDT", interval="1h")
    assert result.status == "ok" and rows(batch.candles) == sim.truth("ETHUSDT", "1h", h_start, h_start + 23 * _HOUR)
    # `limit` is respected: the oldest `limit` candles of the range.
    result, batch = d.run(start, end, limit=7)
    assert result.status == "ok" and result.candles == 7
    assert rows(batch.candles) == truth[:7]
    # An empty range (years before any listing): an empty batch with the task id, then ok.
    result, batch = d.run(1_420_070_400_000, 1_420_070_400_000 + 99 * MIN)
    assert (result.status, result.candles, result.first_open_ms) == ("ok", 0, 0)
    assert batch is not None and batch.candles == [] and batch.task_id == result.task_id
    # A boundary fetch of the last closed candle goes to the writer as live.
    last_closed = current_open() - MIN
    result, batch = d.run(last_closed, last_closed, priority="boundary", limit=1)
    assert result.status == "ok" and batch.live is True
    assert rows(batch.candles) == sim.truth("BTCUSDT", "1m", last_closed, last_closed)


def test_open_candle_is_not_final_and_server_clock_decides(sim, downloader_factory):
    d = downloader_factory(sim.rest_url)
    clear_of_boundary()
    # The range reaches the open candle: nothing stored.
    result, batch = d.run(current_open() - 2 * MIN, current_open() + MIN - 1)
    assert result.status == "not_final" and batch is None and result.http_status == 200
    # The server clock (from ClockSync on the bus) says a candle that closed locally < 60 s ago
    # is still open when the server is 90 s behind; offset 0 makes it final again.
    last_closed = current_open() - MIN
    deadline = time.monotonic() + 5
    while True:
        d.clock(-90_000)
        time.sleep(0.1)
        result, batch = d.run(last_closed, last_closed, limit=1)
        if result.status == "not_final" or time.monotonic() > deadline:
            break
    assert result.status == "not_final" and batch is None
    d.clock(0)
    time.sleep(0.2)
    result, batch = d.run(last_closed, last_closed, limit=1)
    assert result.status == "ok" and rows(batch.candles) == sim.truth("BTCUSDT", "1m", last_closed, last_closed)


def test_malformed_frames_are_dropped_and_actor_keeps_working(sim, downloader_factory):
    d = downloader_factory(sim.rest_url)
    d.tasks.send(b"\x00garbage")
    d.tasks.send(messages.encode(messages.Heartbeat(actor="x", pid=1, sent_at_ms=1)))  # wrong kind
    d.tasks.send(msgspec.msgpack.encode({"kind": "task", "task_id": 5}))  # wrong field type
    result, batch = d.run(HISTORY, HISTORY + 9 * MIN)
    assert result.status == "ok" and rows(batch.candles) == sim.truth("BTCUSDT", "1m", HISTORY, HISTORY + 9 * MIN)
    assert d.proc.poll() is None
    log = d.stderr()
    assert log.count("event=malformed_message") == 2 and "event=unexpected_message" in log
    assert d.results.poll(100) == 0  # nothing reported for the dropped frames


def test_rate_limited_then_held_back_without_requests(sim_factory, downloader_factory):
    tight = sim_factory(symbols=5, seed=3, weight_limit=10)
    d = downloader_factory(tight.rest_url)
    seen = []
    for _ in range(8):  # limit 1000 weighs 5: the third request in one minute is over 10
        result, batch = d.run(DEEP, DEEP + 999 * MIN, limit=1000)
        seen.append(result.status)
        if result.status != "ok":
            break
        assert batch is not None and len(batch.candles) == 1000
    assert result.status == "rate_limited", seen
    assert batch is None and result.http_status == 429 and result.retry_after_s > 0
    assert result.weight_used_1m == 10  # the header as sent: two pages of weight 5; the 429 is not charged
    requests_before = tight.stats()["requests_by_path"]["/fapi/v1/klines"]
    held, batch = d.run(HISTORY, HISTORY + 9 * MIN)
    assert held.status == "rate_limited" and batch is None
    assert held.http_status == 0 and 0 < held.retry_after_s <= result.retry_after_s
    assert tight.stats()["requests_by_path"]["/fapi/v1/klines"] == requests_before
    assert tight.stats()["responses_by_status"]["429"] == 1


def test_faults_give_statuses_and_never_a_batch(sim_factory, downloader_factory):
    faulty = sim_factory(symbols=5, seed=4, weight_limit=1_000_000)
    d = downloader_factory(faulty.rest_url, timeout_s=0.5)
    cases = [
        ({"error_5xx_rate": 1.0}, "http_error", 503),
        ({"reset_rate": 1.0}, "network", 0),
        ({"malformed_rate": 1.0}, "network", 200),
        ({"timeout_rate": 1.0, "timeout_s": 2.0}, "network", 0),
    ]
    off = {"error_5xx_rate": 0.0, "reset_rate": 0.0, "malformed_rate": 0.0, "timeout_rate": 0.0}
    for faults, status, http in cases:
        faulty.set_faults(**{**off, **faults})
        result, batch = d.run(HISTORY, HISTORY + 9 * MIN)
        assert (result.status, result.http_status, batch) == (status, http, None), (faults, result)
        assert result.detail
    assert "Timeout" in result.detail
    faulty.set_faults(**off)
    result, batch = d.run(HISTORY, HISTORY + 9 * MIN)
    assert result.status == "ok" and rows(batch.candles) == faulty.truth("BTCUSDT", "1m", HISTORY, HISTORY + 9 * MIN)
    assert d.stderr().count("event=task_failed") == 4


def test_four_in_flight_forty_tasks(sim_factory, downloader_factory):
    slow = sim_factory(symbols=5, seed=5, weight_limit=1_000_000, latency_ms=200)
    d = downloader_factory(slow.rest_url, concurrency=4)
    symbols = [s.symbol for s in slow.market().specs.values()
               if s.quote_asset == "USDT" and s.onboard_ms < DEEP][:4]
    assert len(symbols) == 4
    sent = {}
    t0 = time.monotonic()
    for i in range(40):
        start = DEEP + i * 20 * MIN
        t = d.task(start, start + 9 * MIN, symbol=symbols[i % 4])
        sent[t.task_id] = t
    results = [d.result(10) for _ in range(40)]
    elapsed = time.monotonic() - t0
    assert sorted(r.task_id for r in results) == sorted(sent)
    assert all(r.status == "ok" and r.candles == 10 for r in results)
    # 40 requests of >= 200 ms: 4 at a time take >= 2.0 s; 5 at a time could take 1.6 s, and one at
    # a time could not take less than 8 s (both bounds are physical: a busy machine only adds time).
    assert 1.95 <= elapsed < 7.9, elapsed
    batches = [d.batch() for _ in range(40)]
    assert d.batch(0.1) is None
    for b in batches:
        t = sent[b.task_id]
        assert rows(b.candles) == slow.truth(t.symbol, "1m", t.start_ms, t.end_ms)


def test_clean_stop_reports_request_in_flight(sim_factory, downloader_factory):
    slow = sim_factory(symbols=5, seed=6, weight_limit=1_000_000, latency_ms=700)
    d = downloader_factory(slow.rest_url)
    t = d.task(HISTORY, HISTORY + 9 * MIN)
    # In flight: the simulator counts a request when it arrives, then answers 700 ms later.
    wait_for(lambda: slow.stats()["requests_by_path"].get("/fapi/v1/klines", 0) >= 1, 10, what="request in flight")
    d.proc.send_signal(signal.SIGTERM)
    result = d.result(15)
    assert result.task_id == t.task_id and result.status == "ok"
    assert d.batch() is not None
    assert d.proc.wait(30) == 0  # bounds catch a hang; a busy machine may take seconds


def test_configured_proxy_is_used(sim, downloader_factory):
    # Nothing listens on the proxy's port: the request must fail there, not reach the simulator.
    d = downloader_factory(sim.rest_url, proxy=f"http://127.0.0.1:{free_port()}")
    result, batch = d.run(HISTORY, HISTORY + 9 * MIN)
    assert (result.status, batch) == ("network", None)
    assert "ProxyError" in result.detail


# --- archive tasks ----------------------------------------------------------------------------

class _ArchiveFiles:
    """A loopback HTTP server with a dict of path -> bytes (404 otherwise), counting requests.

    Stands in for the simulator's archive until it serves one; real sockets, real HTTP."""

    def __init__(self) -> None:
        import http.server
        import threading
        files = self.files = {}
        self.requests: list[str] = []
        requests_seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                requests_seen.append(self.path)
                body = files.get(self.path)
                self.send_response(200 if body is not None else 404)
                body = body if body is not None else b"<Error><Code>NoSuchKey</Code></Error>"
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def put(self, f, zip_bytes: bytes, checksum: bytes | None = None) -> None:
        import hashlib
        self.files["/" + f.path] = zip_bytes
        self.files["/" + f.path + ".CHECKSUM"] = checksum if checksum is not None else (
            f"{hashlib.sha256(zip_bytes).hexdigest()}  {f.name}\n".encode())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _zip_of(text: str) -> bytes:
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.csv", text)
    return buf.getvalue()


def _day_csv(interval: str, day_ms: int, header: bool) -> tuple[str, list[list]]:
    from kl_actors.core import intervals
    lines, expect = [], []
    t = day_ms
    i = 0
    while t < day_ms + 86_400_000:
        close = intervals.close_time(interval, t)
        row = [t, f"1.{i:04d}0", "2.5", "0.5", "1.5", "10.000", close, "15.00", i, "5.0", "7.50", "0"]
        lines.append(",".join(map(str, row)))
        expect.append(row)
        t = intervals.next_open(interval, t)
        i += 1
    head = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
            "taker_buy_volume,taker_buy_quote_volume,ignore\n") if header else ""
    return head + "\n".join(lines) + "\n", expect


@pytest.fixture
def archive_files():
    server = _ArchiveFiles()
    yield server
    server.close()


def _send_archive(d: DownloaderProcess, f, task_id: str, attempt: int = 1) -> None:
    d.tasks.send(messages.encode(messages.ArchiveTask(task_id=task_id, symbol=f.symbol, interval=f.interval,
                                                      year=f.year, month=f.month, day=f.day, attempt=attempt)))


def test_archive_files_verified_parsed_and_sent_as_archive_batches(archive_files, downloader_factory):
    from kl_actors.core.archive import ArchiveFile
    good = ArchiveFile("BTCUSDT", "1m", 2024, 3, 5)
    headed = ArchiveFile("BTCUSDT", "1h", 2021, 1, 2)
    csv_1m, truth_1m = _day_csv("1m", good.start_ms, header=True)
    csv_1h, truth_1h = _day_csv("1h", headed.start_ms, header=False)
    archive_files.put(good, _zip_of(csv_1m))
    archive_files.put(headed, _zip_of(csv_1h))
    bad_sum = ArchiveFile("BTCUSDT", "1m", 2024, 3, 6)
    archive_files.put(bad_sum, _zip_of(_day_csv("1m", bad_sum.start_ms, True)[0]),
                      checksum=b"0" * 64 + f"  {bad_sum.name}".encode())
    truncated = ArchiveFile("BTCUSDT", "1m", 2024, 3, 7)
    whole = _zip_of(_day_csv("1m", truncated.start_ms, True)[0])
    # Cut short after publishing: its CHECKSUM (of the whole file) fails first.
    archive_files.put(truncated, whole)
    archive_files.files["/" + truncated.path] = whole[: len(whole) // 2]
    # Published truncated (the CHECKSUM fits the cut bytes): the zip itself is refused.
    broken = ArchiveFile("BTCUSDT", "1m", 2024, 3, 9)
    archive_files.put(broken, _zip_of(_day_csv("1m", broken.start_ms, True)[0])[:-300])
    missing = ArchiveFile("BTCUSDT", "1m", 2024, 3, 8)

    d = downloader_factory("http://127.0.0.1:9", archive_url=archive_files.url)
    _send_archive(d, good, "a-good")
    candles: list[list] = []
    while True:
        batch = d.batch(10.0)
        assert batch is not None, d.stderr()
        assert isinstance(batch, messages.ArchiveBatch)  # columns, not one struct per candle
        assert (batch.symbol, batch.interval, batch.source, batch.live) == ("BTCUSDT", "1m", "archive", False)
        candles += rows(batch.columns.candles())
        if batch.task_id:
            assert batch.task_id == "a-good"
            break
    assert candles == truth_1m and len(candles) == 1440  # the file's strings, exactly
    result = d.result(10.0)
    assert (result.task_id, result.status, result.candles) == ("a-good", "ok", 1440)
    assert (result.first_open_ms, result.last_open_ms) == (good.start_ms, good.start_ms + 1439 * MIN)
    assert result.weight_used_1m == -1 and result.requested_at_ms == 0  # no REST weight

    _send_archive(d, headed, "a-1h")
    batch = d.batch(10.0)
    assert batch.task_id == "a-1h" and rows(batch.columns.candles()) == truth_1h
    assert d.result(10.0).status == "ok"

    for f, task_id, status in ((bad_sum, "a-sum", "bad_file"), (truncated, "a-trunc", "bad_file"),
                               (broken, "a-broken", "bad_file"), (missing, "a-missing", "absent")):
        _send_archive(d, f, task_id)
        result = d.result(10.0)
        assert (result.task_id, result.status) == (task_id, status), result
        assert f.name in result.detail
        assert d.batch(0.3) is None  # nothing of a bad or absent file is sent
    # The missing file's zip was never asked: its CHECKSUM's 404 decided.
    assert "/" + missing.path not in archive_files.requests
    assert "/" + missing.path + ".CHECKSUM" in archive_files.requests
    log = d.stderr()
    failed = [line for line in log.splitlines() if "event=archive_file_failed" in line]
    assert len(failed) == 3, log
    assert bad_sum.name in failed[0] and "does not match" in failed[0]
    assert truncated.name in failed[1] and "does not match" in failed[1]
    assert broken.name in failed[2] and "broken zip" in failed[2]


def test_archive_task_with_the_archive_off_is_answered_absent(downloader_factory):
    from kl_actors.core.archive import ArchiveFile
    d = downloader_factory("http://127.0.0.1:9")  # REST elsewhere, no archive named: off
    _send_archive(d, ArchiveFile("BTCUSDT", "1m", 2024, 3, 5), "a-off")
    result = d.result(5.0)
    assert (result.status, result.detail) == ("absent", "archive is off in this configuration")
