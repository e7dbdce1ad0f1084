"""The writer as a real process with real sockets and a real SQLite file.

The test plays the other actors: it binds a PULL on `control` (heartbeats), a SUB on `bus_pub`
and one on `feed_in` (where the broker's XSUBs would be), and connects a PUSH to `writer`.
"""

from __future__ import annotations

import calendar
import os
import signal
import time
from pathlib import Path

import apsw
import msgspec
import pytest

from kl_actors import messages
from kl_actors.config import EXIT_FATAL
from kl_actors.messages import Candle, KlineBatch
from kl_actors.store import Store
from harness import WriterProcess, candle, in_mount_namespace, wait_for

T0 = 1_700_000_040_000 - 1_700_000_040_000 % 60_000


def minutes(first: int, count: int, **kw) -> list[Candle]:
    return [candle(T0 + (first + i) * 60_000, **kw) for i in range(count)]


def row(c: Candle, source: str) -> tuple:
    return (*msgspec.structs.astuple(c)[:11], source)


@pytest.fixture
def writer_factory(workdir):
    started: list[WriterProcess] = []

    def start(**settings) -> WriterProcess:
        w = WriterProcess(workdir, **settings)
        started.append(w)
        return w

    yield start
    for w in started:
        w.close()


@pytest.fixture
def writer(writer_factory):
    return writer_factory()


def month(y: int, mo: int) -> int:
    return calendar.timegm((y, mo, 1, 0, 0, 0)) * 1000


def test_batches_end_up_exactly_in_the_file(writer):
    btc = minutes(0, 500)
    t5 = T0 - T0 % 300_000
    eth = [Candle(t5 + i * 300_000, "0.000000010", "0.000000020", "0.000000001", "0.000000015",
                  "123456789012345678.12345678901234567890", t5 + i * 300_000 + 299_999, "0", 0,
                  "0.0", "00.10") for i in range(3)]
    pepe_month = [candle(month(2024, m), "1M") for m in (1, 2, 3)]
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", btc, task_id="t-btc"))
    writer.send(KlineBatch("ETHUSDT", "5m", "rest", eth, task_id="t-eth"))
    writer.send(KlineBatch("1000PEPEUSDT", "1M", "rest", pepe_month, task_id="t-pepe"))
    committed = {}
    for task in ("t-btc", "t-eth", "t-pepe"):
        committed.update({(t.symbol, t.interval): t for t in writer.wait_committed(task).tables})
    assert committed[("BTCUSDT", "1m")] == messages.TableCommit("BTCUSDT", "1m", 500, T0, T0 + 499 * 60_000)
    assert committed[("1000PEPEUSDT", "1M")].rows == 3
    assert writer.rows("BTCUSDT", "1m") == [row(c, "rest") for c in btc]
    assert writer.rows("ETHUSDT", "5m") == [row(c, "rest") for c in eth]
    assert writer.rows("1000PEPEUSDT", "1M") == [row(c, "rest") for c in pepe_month]
    store = writer.reader()
    try:
        assert store.kline_tables() == {"BTCUSDT": {"1m": "k_btc_1m"}, "ETHUSDT": {"5m": "k_eth_5m"},
                                        "1000PEPEUSDT": {"1M": "k_1000pepe_1mo"}}
    finally:
        store.close()
    assert writer.feed_messages == []  # backfill (live=False) is never published


def test_same_batch_twice_leaves_file_unchanged(writer):
    batch = minutes(10, 50)
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", batch, task_id="a"))
    writer.wait_committed("a")
    before = writer.rows("BTCUSDT", "1m")
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", batch, task_id="b"))
    writer.wait_committed("b")
    assert writer.rows("BTCUSDT", "1m") == before == [row(c, "rest") for c in batch]


def test_ws_candle_never_overwrites_rest_and_is_not_published_as_stored(writer):
    rest = minutes(0, 2, close="100.5")
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", rest, task_id="rest", live=True))
    writer.wait_committed("rest")
    ws = minutes(1, 2, close="100.9")  # open times 1 (held by REST) and 2 (new)
    writer.send(KlineBatch("BTCUSDT", "1m", "ws", ws, live=True))
    committed = writer.wait_bus(lambda m: isinstance(m, messages.Committed) and not m.task_ids,
                                what="Committed for the ws batch")
    assert committed.tables == [messages.TableCommit("BTCUSDT", "1m", 1, ws[1].open_time_ms, ws[1].open_time_ms)]
    assert writer.rows("BTCUSDT", "1m") == [row(rest[0], "rest"), row(rest[1], "rest"), row(ws[1], "ws")]
    wait_for(lambda: writer.pump(0.05) or len(writer.feed_messages) >= 3, 20, interval=0, what="feed")
    writer.pump(0.3)
    published = [(t, f.source, f.candle) for t, f in writer.feed_messages]
    assert published == [(b"kline.BTCUSDT.1m", "rest", rest[0]), (b"kline.BTCUSDT.1m", "rest", rest[1]),
                         (b"kline.BTCUSDT.1m", "ws", ws[1])]
    assert all(f.stored and f.closed and f.seq == 0 for _, f in writer.feed_messages)
    # REST overwrites the ws candle.
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", [ws[0]], task_id="rest2"))
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", minutes(2, 1, close="100.7"), task_id="rest3"))
    writer.wait_committed("rest3")
    writer.wait_committed("rest2")
    assert [r[4] for r in writer.rows("BTCUSDT", "1m")] == ["100.5", "100.9", "100.7"]
    assert {r[-1] for r in writer.rows("BTCUSDT", "1m")} == {"rest"}


def test_invalid_batches_fail_alone_and_store_nothing(writer):
    misaligned = minutes(0, 3)
    misaligned[1] = Candle(misaligned[1].open_time_ms + 1, *msgspec.structs.astuple(misaligned[1])[1:])
    bad_decimal = minutes(0, 3)
    bad_decimal[2] = msgspec.structs.replace(bad_decimal[2], volume="1e5")
    bad_bounds = minutes(0, 2)
    bad_bounds[0] = msgspec.structs.replace(bad_bounds[0], high="100.2")  # below the close
    good = minutes(0, 3)
    writer.send(KlineBatch("ETHUSDT", "1m", "rest", misaligned, task_id="bad-align"))
    writer.send(KlineBatch("ETHUSDT", "1m", "rest", bad_decimal, task_id="bad-decimal"))
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", good, task_id="good"))
    writer.send(KlineBatch("BTC'); DROP TABLE x; --", "1m", "rest", good, task_id="bad-symbol"))
    writer.send(KlineBatch("ETHUSDT", "7m", "rest", good, task_id="bad-interval"))
    writer.send(KlineBatch("SOLUSDT", "1m", "rest", bad_bounds, task_id="bad-bounds"))
    errors = {t: writer.wait_failed(t).error for t in
              ("bad-align", "bad-decimal", "bad-symbol", "bad-interval", "bad-bounds")}
    assert "not aligned" in errors["bad-align"]
    assert "'1e5' is not a non-negative decimal" in errors["bad-decimal"]
    assert "invalid symbol" in errors["bad-symbol"]
    assert "unknown interval" in errors["bad-interval"]
    assert "high/low" in errors["bad-bounds"]
    writer.wait_committed("good")
    assert writer.rows("BTCUSDT", "1m") == [row(c, "rest") for c in good]
    store = writer.reader()
    try:
        assert store.kline_tables() == {"BTCUSDT": {"1m": "k_btc_1m"}}
    finally:
        store.close()
    assert not any(isinstance(m, messages.Committed) and set(m.task_ids) - {"good"}
                   for m in writer.bus_messages)
    log = writer.stderr()
    assert log.count("event=write_failed") == 5


def test_database_error_in_a_group_fails_only_the_culprit(writer_factory):
    writer = writer_factory(max_delay_ms=300)  # long enough that the three share a transaction
    # A table some other program made with a shape of its own: the batch passes validation, and
    # the database refuses its rows (trades beyond 64 bits, the old way here, is now refused by
    # validation: see test_hostile).
    outside = apsw.Connection(writer.db_path)
    outside.execute("CREATE TABLE IF NOT EXISTS k_xrp_1m (something_else TEXT)")
    outside.close()
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", minutes(0, 5), task_id="g1"))
    writer.send(KlineBatch("XRPUSDT", "1m", "rest", minutes(5, 2), task_id="culprit"))
    writer.send(KlineBatch("ETHUSDT", "1m", "rest", minutes(0, 2), task_id="g2"))
    writer.wait_failed("culprit")
    writer.wait_committed("g1")
    writer.wait_committed("g2")
    assert writer.rows("BTCUSDT", "1m") == [row(c, "rest") for c in minutes(0, 5)]
    assert writer.rows("ETHUSDT", "1m") == [row(c, "rest") for c in minutes(0, 2)]
    log = writer.stderr()
    assert "event=transaction_failed" in log and "retrying each batch alone" in log
    assert log.count("event=write_failed") == 1
    assert writer.proc.poll() is None


def test_malformed_frames_are_dropped_and_counted(writer):
    writer.send(os.urandom(64))
    writer.send(msgspec.msgpack.encode({"kind": "batch", "symbol": 5}))
    writer.send(msgspec.msgpack.encode([1, 2, 3]))
    writer.send(messages.DownloadTask("t", "BTCUSDT", "1m", T0, T0 + 60_000, 499))
    good = minutes(0, 4)
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", good, task_id="after"))
    writer.wait_committed("after")
    assert writer.rows("BTCUSDT", "1m") == [row(c, "rest") for c in good]
    beat = wait_for(lambda: writer.pump(0.05) or next(
        (h for h in reversed(writer.heartbeats) if h.dropped_malformed >= 4), None), 5, interval=0,
        what="heartbeat counting the drops")
    assert beat.actor == "writer" and beat.dropped_malformed == 4
    assert writer.proc.poll() is None
    log = writer.stderr()
    assert log.count("event=malformed_message") == 3 and "event=unexpected_message kind=DownloadTask" in log


def test_announce_after_commit_and_feed_after_announce(writer):
    store = writer.reader()
    try:
        for n in range(5):
            batch = minutes(n * 2, 2)
            writer.send(KlineBatch("BTCUSDT", "1m", "rest", batch, task_id=f"live-{n}", live=True))
        seen_feed = 0
        deadline = time.monotonic() + 5
        checked = 0
        while seen_feed < 10 and time.monotonic() < deadline:
            writer.pump(0.02)
            for kind, m in writer.events[checked:]:
                if kind == "bus":
                    # Committed only once its rows are in the file.
                    for t in m.tables:
                        assert store.count(t.symbol, t.interval) >= t.rows
                        rows = store.candles(t.symbol, t.interval, t.first_open_ms, t.last_open_ms)
                        assert len(rows) == t.rows
                else:
                    seen_feed += 1
                    assert store.candles("BTCUSDT", "1m", m.candle.open_time_ms, m.candle.open_time_ms)
                    task = f"live-{(m.candle.open_time_ms - T0) // 120_000}"
                    # The Committed of its batch was published first (on the other socket, so
                    # allow it a moment in flight).
                    writer.wait_committed(task, timeout=10.0)
            checked = len(writer.events)
        assert seen_feed == 10
    finally:
        store.close()
    announced = sorted(t for m in writer.bus_messages if isinstance(m, messages.Committed) for t in m.task_ids)
    assert announced == [f"live-{n}" for n in range(5)]
    assert [f.candle.open_time_ms for _, f in writer.feed_messages] == [c.open_time_ms for c in minutes(0, 10)]


def test_sigterm_commits_pending_batches_before_exit(writer_factory):
    writer = writer_factory(max_delay_ms=60_000, max_rows_per_txn=1_000_000)
    batches = [KlineBatch("BTCUSDT", "1m", "rest", minutes(i * 100, 100), task_id=f"p{i}") for i in range(5)]
    for b in batches:
        writer.send(b)
    handled_before = max((h.handled for h in writer.heartbeats), default=0)
    wait_for(lambda: writer.pump(0.05) or any(h.handled >= handled_before + 5 for h in writer.heartbeats),
             5, interval=0, what="writer to receive the batches")
    store = writer.reader()
    try:
        assert store.count("BTCUSDT", "1m") == 0  # still pending: the delay is a minute
    finally:
        store.close()
    writer.proc.send_signal(signal.SIGTERM)
    assert writer.proc.wait(timeout=10) == 0, writer.stderr()
    assert writer.rows("BTCUSDT", "1m") == [row(c, "rest") for b in batches for c in b.candles]
    assert "event=closed rows=500" in writer.stderr()


def test_symbols_and_exchange_holes_are_recorded(writer):
    writer.send(messages.SymbolsUpdate([messages.SymbolInfo("BTCUSDT", "TRADING", 123)], seen_at_ms=1000))
    writer.send(messages.ExchangeHole("BTCUSDT", "1m", T0 + 60_000, T0 + 120_000))
    writer.send(messages.ExchangeHole("BTC'); DROP TABLE x; --", "1m", T0, T0))  # dropped, logged
    batch = [c for i, c in enumerate(minutes(0, 6)) if i not in (1, 2, 4)]
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", batch, task_id="h"))
    writer.wait_committed("h")
    store = writer.reader()
    try:
        assert [tuple(s) for s in store.symbols()] == [("BTCUSDT", "TRADING", 123, 1000, 1000)]
        assert store.exchange_holes("BTCUSDT", "1m") == [(T0 + 60_000, T0 + 120_000)]
        assert store.holes("BTCUSDT", "1m") == [(T0 + 240_000, T0 + 240_000)]
    finally:
        store.close()
    assert "event=invalid_hole" in writer.stderr()


def test_tables_of_trading_symbols_are_made_before_their_first_batch(writer):
    """Made together, a few hundred per transaction, not one schema change per first batch."""
    trading = [messages.SymbolInfo(f"S{i}USDT", "TRADING", 1) for i in range(300)]
    writer.send(messages.SymbolsUpdate([*trading, messages.SymbolInfo("OLDUSDT", "SETTLING", 1),
                                        messages.SymbolInfo("币安人生USDT", "TRADING", 1)], seen_at_ms=5))
    configured = set(writer.config.klines.intervals)
    store = writer.reader()
    try:
        wait_for(lambda: len(store.kline_tables()) == 301, 30, what="301 symbols' tables")
        tables = store.kline_tables()
        assert all(set(tables[f"S{i}USDT"]) == configured for i in range(300))
        # A name outside [A-Z0-9] gets its hex-named tables like any other (issue 12).
        assert set(tables["币安人生USDT"]) == configured
        assert all(name.startswith("k_x_") for name in tables["币安人生USDT"].values())
        assert "OLDUSDT" not in tables
        assert store.count("S7USDT", "1m") == 0  # empty until a batch comes
    finally:
        store.close()
    assert writer.proc.poll() is None


class OutsideWriteLock:
    """Another process's write transaction on the file (here: this test's own connection)."""

    def __init__(self, db_path: str) -> None:
        import apsw
        self.conn = apsw.Connection(db_path)
        self.conn.setbusytimeout(30_000)  # between two of the writer's transactions, not during one
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def max_heartbeat_gap(writer: WriterProcess, since: float) -> float:
    times = [since] + [t for t in writer.heartbeat_times if t >= since] + [time.monotonic()]
    return max(b - a for a, b in zip(times, times[1:]))


def test_outside_write_lock_holds_every_batch_with_heartbeats_going_on(writer):
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", minutes(0, 10), task_id="before"))
    writer.wait_committed("before")
    writer.bus_messages.clear()
    lock = OutsideWriteLock(writer.db_path)
    locked_at = time.monotonic()
    try:
        # REST tasks, a WebSocket batch (no task id: nothing would ever ask for it again) and
        # meta rows, all while the file is locked for longer than the old 5 s busy timeout.
        sent = {f"held-{i}": minutes(10 + i * 20, 20) for i in range(6)}
        for task_id, candles in sent.items():
            writer.send(KlineBatch("BTCUSDT", "1m", "rest", candles, task_id=task_id))
        ws = minutes(200, 3, close="100.9")
        writer.send(KlineBatch("ETHUSDT", "1m", "ws", ws, live=True))
        writer.send(messages.SymbolsUpdate([messages.SymbolInfo("ETHUSDT", "TRADING", 7)], seen_at_ms=5))
        while time.monotonic() < locked_at + 8:
            writer.pump(0.1)
            assert writer.proc.poll() is None, writer.stderr()
        assert not any(isinstance(m, (messages.Committed, messages.WriteFailed)) for m in writer.bus_messages)
        # Heartbeats every 0.2 s: never a silence near the supervisor's timeout.
        assert max_heartbeat_gap(writer, locked_at) < 2.0, writer.heartbeat_times
    finally:
        lock.release()
    for task_id in sent:
        writer.wait_committed(task_id, timeout=10)
    writer.wait_bus(lambda m: isinstance(m, messages.Committed)
                    and messages.TableCommit("ETHUSDT", "1m", 3, ws[0].open_time_ms, ws[-1].open_time_ms)
                    in m.tables, what="the ws batch committed")
    assert writer.rows("BTCUSDT", "1m") == [row(c, "rest") for c in minutes(0, 130)]
    assert writer.rows("ETHUSDT", "1m") == [row(c, "ws") for c in ws]
    store = writer.reader()
    try:
        assert [s.symbol for s in store.symbols()] == ["ETHUSDT"]
    finally:
        store.close()
    log = writer.stderr()
    assert log.count("event=database_blocked") == 1 and "reason=busy" in log
    assert log.count("event=database_resumed") == 1
    blocked_s = float(log.split("event=database_resumed")[1].split("blocked_s=")[1].split()[0])
    assert blocked_s >= 7
    assert "event=write_failed" not in log and not any(
        isinstance(m, messages.WriteFailed) for m in writer.bus_messages)
    assert writer.proc.poll() is None


def test_writer_started_while_another_process_holds_the_write_lock(workdir, writer_factory):
    from kl_actors.config import DatabaseConfig
    Store.open_writer(DatabaseConfig(path=str(workdir / "db.sqlite"))).close()
    lock = OutsideWriteLock(str(workdir / "db.sqlite"))
    try:
        writer = writer_factory(wait=False)
        started = time.monotonic()
        while time.monotonic() < started + 8:
            writer.pump(0.1)
            assert writer.proc.poll() is None, writer.stderr()
        assert len(writer.heartbeats) >= 10 and max_heartbeat_gap(writer, started + 2) < 2.0
        assert "event=database_blocked reason=busy" in writer.stderr()
        assert "phase=opening" in writer.stderr()
        writer.send(KlineBatch("BTCUSDT", "1m", "rest", minutes(0, 5), task_id="queued"))
    finally:
        lock.release()
    writer.wait_committed("queued", timeout=10)
    writer.wait_connected()
    assert writer.rows("BTCUSDT", "1m") == [row(c, "rest") for c in minutes(0, 5)]
    assert "event=database_resumed" in writer.stderr() and "Traceback" not in writer.stderr()


def test_later_requested_rest_answer_wins_whatever_commits_last(writer):
    c = minutes(0, 1)[0]
    sent_at = c.close_time_ms + 1  # a boundary fetch, asked just after the close
    provisional, final, newer = (msgspec.structs.replace(c, close=v) for v in ("100.1", "100.2", "100.3"))
    # The re-check (asked 5 s later) commits first; the slow provisional answer arrives after it.
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", [final], task_id="recheck", live=True,
                           requested_at_ms=sent_at + 5000))
    writer.wait_committed("recheck")
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", [provisional], task_id="slow", live=True,
                           requested_at_ms=sent_at))
    slow = writer.wait_committed("slow")
    assert slow.tables == []  # done, nothing written
    assert [r[4] for r in writer.rows("BTCUSDT", "1m")] == ["100.2"]
    # The same two in one transaction, the stale one last: still the later request's values.
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", [newer], task_id="newer", live=True,
                           requested_at_ms=sent_at + 9000))
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", [final], task_id="late", live=True,
                           requested_at_ms=sent_at + 5000))
    writer.wait_committed("newer")
    writer.wait_committed("late")
    assert [r[4] for r in writer.rows("BTCUSDT", "1m")] == ["100.3"]
    writer.pump(0.3)
    # Only what was stored reached the feed, in the order stored.
    assert [f.candle.close for _, f in writer.feed_messages] == ["100.2", "100.3"]
    assert writer.stderr().count("event=stale_answer_refused") == 2
    assert not any(isinstance(m, messages.WriteFailed) for m in writer.bus_messages)


def test_wal_grown_by_a_long_reader_shrinks_back_after_it(writer):
    wal = Path(writer.db_path + "-wal")
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", minutes(0, 1), task_id="first"))
    writer.wait_committed("first")
    import apsw
    reader = apsw.Connection(writer.db_path, flags=apsw.SQLITE_OPEN_READONLY)
    reader.execute("BEGIN")
    assert list(reader.execute("SELECT count(*) FROM k_btc_1m")) == [(1,)]  # the snapshot is taken
    try:
        for i in range(200):
            writer.send(KlineBatch("BTCUSDT", "1m", "rest", minutes(1 + i * 1000, 1000), task_id=f"w{i}"))
        writer.wait_committed("w199", timeout=60)
        grown = wal.stat().st_size
        assert grown > 10 * 2 ** 20, grown  # nothing could be checkpointed past the reader
        assert list(reader.execute("SELECT count(*) FROM k_btc_1m")) == [(1,)]
    finally:
        reader.close()
    # The file shrinks a moment before the writer logs it: wait for both.
    wait_for(lambda: writer.pump(0.05) or (wal.stat().st_size < 2 ** 20 and "event=wal_truncated" in writer.stderr()),
             30, interval=0.2, what=f"the WAL ({grown} bytes) to shrink below 1 MiB, and its log line")
    store = writer.reader()
    try:
        assert store.count("BTCUSDT", "1m") == 200_001
    finally:
        store.close()
    assert "event=wal_truncated" in writer.stderr()


def test_read_only_database_is_one_line_and_exit_status_2(workdir, writer_factory):
    from kl_actors.config import DatabaseConfig
    data = workdir / "data"
    Store.open_writer(DatabaseConfig(path=str(data / "db.sqlite"))).close()
    wrap = in_mount_namespace(f"mount --bind {data} {data}\nmount -o remount,ro,bind {data}")
    writer = writer_factory(wait=False, wrap=wrap, database={"path": str(data / "db.sqlite")})
    assert writer.proc.wait(timeout=20) == EXIT_FATAL, writer.stderr()
    log = writer.stderr()
    assert log.count("event=database_unusable") == 1 and "read-only" in log, log
    assert "Traceback" not in log


@pytest.mark.slow
def test_full_disk_holds_the_batches_until_space_comes_back(workdir, writer_factory):
    data = workdir / "data"
    data.mkdir()
    # A 2 MiB file system, 1.5 MiB of it taken by a file the test removes later.
    wrap = in_mount_namespace(f"mount -t tmpfs -o size=2m tmpfs {data}\n"
                              f"dd if=/dev/zero of={data}/filler bs=1024 count=1536 2>/dev/null")
    writer = writer_factory(wrap=wrap, database={"path": str(data / "db.sqlite")})
    seen_from_here = Path(f"/proc/{writer.proc.pid}/root") / str(data).lstrip("/")
    assert (seen_from_here / "filler").exists()
    sent = {f"f{i}": minutes(i * 1000, 1000) for i in range(8)}  # ~1 MiB of rows: does not fit
    for task_id, candles in sent.items():
        writer.send(KlineBatch("BTCUSDT", "1m", "rest", candles, task_id=task_id))
    wait_for(lambda: writer.pump(0.05) or "event=database_blocked" in writer.stderr(), 20, interval=0,
             what="database_blocked logged")
    blocked_at = time.monotonic()
    while time.monotonic() < blocked_at + 3:
        writer.pump(0.1)
    assert writer.proc.poll() is None, writer.stderr()
    assert not any(isinstance(m, messages.WriteFailed) for m in writer.bus_messages)
    log = writer.stderr()
    assert log.count("event=database_blocked") == 1 and 'reason="disk full"' in log, log
    (seen_from_here / "filler").unlink()
    for task_id in sent:
        writer.wait_committed(task_id, timeout=20)
    # SQLite resolves /proc/<pid>/root to our own root, so read a copy, taken once the idle
    # writer has checkpointed everything into the main file (nothing is written after that).
    wait_for(lambda: (seen_from_here / "db.sqlite-wal").stat().st_size == 0, 20, what="idle checkpoint")
    copy = workdir / "copy.sqlite"
    copy.write_bytes((seen_from_here / "db.sqlite").read_bytes())
    store = Store.open_readonly(path=str(copy))
    try:
        assert store.candles("BTCUSDT", "1m") == [row(c, "rest") for c in minutes(0, 8000)]
    finally:
        store.close()
    assert "event=database_resumed" in writer.stderr() and "event=write_failed" not in writer.stderr()


def test_archive_rows_are_stored_as_archive_under_rest_and_over_ws(writer):
    """rest > archive > ws in the writer process: archive values kept as the file's strings."""
    ws = minutes(0, 2, close="100.1")
    writer.send(KlineBatch("BTCUSDT", "1m", "ws", ws, live=True))
    writer.wait_bus(lambda m: isinstance(m, messages.Committed) and not m.task_ids, what="ws commit")
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", minutes(1, 1, close="100.2"), task_id="rest"))
    writer.wait_committed("rest")
    # The file's decimal strings, trailing zeros and all.
    archived = [Candle(c.open_time_ms, "100.10", "101.000", "99.9", "100.30", "12.3400",
                       c.close_time_ms, "1234.56789012345678", 42, "6.00000001", "617.2", "0")
                for c in minutes(0, 3)]
    writer.send(KlineBatch("BTCUSDT", "1m", "archive", archived, task_id="arch"))
    writer.wait_committed("arch")
    assert writer.rows("BTCUSDT", "1m") == [row(archived[0], "archive"), row(minutes(1, 1, close="100.2")[0], "rest"),
                                           row(archived[2], "archive")]
    # ws never over archive; REST over archive.
    writer.send(KlineBatch("BTCUSDT", "1m", "ws", minutes(0, 1, close="100.4"), live=True))
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", minutes(2, 1, close="100.5"), task_id="rest2"))
    writer.wait_committed("rest2")
    writer.pump(0.2)
    rows = writer.rows("BTCUSDT", "1m")
    assert [(r[4], r[-1]) for r in rows] == [("100.30", "archive"), ("100.2", "rest"), ("100.5", "rest")]
    assert all(f.source != "archive" for _, f in writer.feed_messages)  # backfill is never published


def test_archive_batches_as_columns_stored_checked_and_ranked_as_archive(writer):
    """`ArchiveBatch` (an archive file's candles as columns), as the downloader sends them: a
    10,000-candle batch (the multi-row statements) stored exactly, its summary row right;
    rest > archive > ws as for any batch; a bad value or columns of unequal lengths refuse the
    whole batch with a WriteFailed naming the task, and nothing of it is stored."""
    from kl_actors.messages import ArchiveBatch, CandleColumns, columns_of

    big = [Candle(c.open_time_ms, "100.10", "101.000", "99.9", f"100.{i % 97}", "12.3400",
                  c.close_time_ms, "1234.56789012345678", i, "6.00000001", "617.2", "0")
           for i, c in enumerate(minutes(0, 10_003))]
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", minutes(5, 1, close="100.2"), task_id="rest"))
    writer.wait_committed("rest")
    writer.send(ArchiveBatch("BTCUSDT", "1m", columns_of(big[:10_000])))
    writer.send(ArchiveBatch("BTCUSDT", "1m", columns_of(big[10_000:]), task_id="arch"))
    writer.wait_committed("arch", timeout=20)
    stored = writer.rows("BTCUSDT", "1m")
    expected = [row(c, "archive") for c in big]
    expected[5] = row(minutes(5, 1, close="100.2")[0], "rest")  # REST is never replaced by the archive
    assert stored == expected
    store = writer.reader()
    try:
        summary = store.summaries()["k_btc_1m"]
    finally:
        store.close()
    assert (summary.rows, summary.ws_rows, summary.first_ms, summary.last_ms) == (10_003, 0, T0, T0 + 10_002 * 60_000)

    bad_value = columns_of(minutes(20_000, 3))
    bad_value.close[1] = "1..5"
    writer.send(ArchiveBatch("BTCUSDT", "1m", bad_value, task_id="bad-value"))
    assert "not a non-negative decimal" in writer.wait_failed("bad-value").error
    lists = list(columns_of(minutes(20_010, 3)).lists())
    lists[3] = lists[3][:2]
    writer.send(ArchiveBatch("BTCUSDT", "1m", CandleColumns(*lists), task_id="uneven"))
    assert "unequal lengths" in writer.wait_failed("uneven").error
    writer.send(KlineBatch("BTCUSDT", "1m", "rest", minutes(20_020, 1), task_id="after"))
    writer.wait_committed("after")
    assert len(writer.rows("BTCUSDT", "1m")) == 10_004  # neither bad batch left a row
