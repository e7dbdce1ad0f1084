"""The DB writer actor: the only process that writes the database.

Sockets:
- `inbox`  PULL bound on `endpoints.writer`: `KlineBatch`, `SymbolsUpdate`, `ExchangeHole`;
- `bus`    PUB connected to `endpoints.bus_pub`: `Committed` after COMMIT, `WriteFailed`;
- `feed`   PUB connected to `endpoints.feed_in`: stored closed candles of live batches, as
           `[feed_topic, FeedKline(seq=0)]` (the broker stamps sequence numbers).

Order, always: COMMIT, then `Committed` on the bus, then candles on the feed. A task counts as done
only when the scheduler sees its id in a `Committed`, so nothing is announced before it is durable.

Batches are validated when they arrive; an invalid one is reported (`WriteFailed`) and never
joins a transaction. Valid ones are grouped into one transaction until `writer.max_rows_per_txn`
rows or `writer.max_delay_ms` after the first of the group. If the transaction fails, it is rolled
back and each item is retried alone, so only the culprit fails. A full disk or an I/O error is
logged and the actor keeps running; later batches are tried again.

A WebSocket candle refused by the upsert (its open time already holds a REST candle) is not
counted in `Committed` rows and not published as stored: live batches are written with RETURNING,
which yields exactly the rows the upsert wrote.
"""

from __future__ import annotations

import gc
import itertools
import operator
import re
import sys
import time

import apsw
import msgspec
import zmq

from . import intervals, messages
from .actor import Actor, now_ms
from .config import EXIT_FATAL
from .klines import PageError, check_candle
from .messages import Candle, ExchangeHole, KlineBatch, SymbolsUpdate
from .store import Store
from .symbols import SymbolError, table_name

FEED_HWM = 100_000
INBOX_HWM = 1000
DRAIN_MAX = 500  # messages per poll round, so heartbeats and commits keep their timing
SUMMARY_EVERY_S = 10.0
GC_GEN0_THRESHOLD = 50_000
_DECIMAL_COLUMNS = (1, 2, 3, 4, 5, 7, 9, 10)
_TWO_DOTS_RE = re.compile(rb"\.[0-9]*\.")


def check_batch(interval: str, candles: list[Candle]) -> list[tuple]:
    """Validate every candle as `klines.check_candle` does, returning the upsert rows.

    The fast path checks a whole batch column-wise at C speed (no Python code per candle). When
    anything looks wrong or unusual, and for months, each candle goes through `check_candle`
    itself, so the rules and the error message are exactly its own. Raises PageError.
    """
    rows = list(map(msgspec.structs.astuple, candles))
    if rows and (interval == intervals.MONTH or not _fast_ok(interval, rows)):
        for c in candles:
            check_candle(interval, c)
    return rows


def _fast_ok(interval: str, rows: list[tuple]) -> bool:
    """True only if every candle certainly passes `check_candle` (False: ask it)."""
    cols = list(zip(*rows))
    opens, close_times = cols[0], cols[6]
    step_ms = intervals.nominal_ms(interval)
    origin = intervals.align(interval, 0)  # 0 except for weeks (Monday-aligned)
    shifted = map(operator.sub, opens, itertools.repeat(origin)) if origin else opens
    if any(map(operator.mod, shifted, itertools.repeat(step_ms))):
        return False
    if set(map(operator.sub, close_times, opens)) != {step_ms - 1}:
        return False
    if min(cols[8]) < 0:
        return False
    # Decimals: ASCII digits and dots only, no empty value, no leading, trailing or second dot,
    # at most 20 characters (so each part has at most 20 digits).
    values = list(itertools.chain.from_iterable(cols[i] for i in _DECIMAL_COLUMNS))
    joined = "\n".join(values)
    if not joined.isascii() or joined.count("\n") != len(values) - 1:
        return False  # non-ASCII digits, or a value containing the separator: ask check_candle
    raw = joined.encode("ascii")
    if (raw.translate(None, b"0123456789.\n") or b"\n\n" in raw or b".\n" in raw
            or b"\n." in raw or raw[:1] in (b".", b"\n") or raw[-1:] in (b".", b"\n")
            or _TWO_DOTS_RE.search(raw)):
        return False
    ohlc_count = 4 * len(rows)  # values holds open, high, low, close first
    # Floats order decimals of at most 15 digits exactly (rounding is monotonic, and distinct
    # decimals of 15 digits stay distinct), so the bounds check below is exact.
    if (max(map(len, itertools.islice(values, ohlc_count))) > 15
            or max(map(len, itertools.islice(values, ohlc_count, None))) > 20):
        return False
    o, h, low, c = (list(map(float, cols[i])) for i in (1, 2, 3, 4))
    return (all(map(operator.ge, h, o)) and all(map(operator.ge, h, c))
            and all(map(operator.le, low, o)) and all(map(operator.le, low, c)))


class _Pending:
    """A validated batch waiting for its transaction."""

    __slots__ = ("batch", "rows")

    def __init__(self, batch: KlineBatch, rows: list[tuple]) -> None:
        self.batch = batch
        self.rows = rows


class Writer(Actor):
    kind = "writer"

    # -- sockets and state ----------------------------------------------------------------------
    def setup(self) -> None:
        # A batch makes thousands of short-lived tuples; the default gen-0 threshold (700) runs
        # the collector many times per batch for nothing (measured: ~10% of the hot path).
        gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
        e = self.config.endpoints
        self.settings = self.config.writer
        try:
            self.store = Store.open_writer(self.config.database)
        except (apsw.ReadOnlyError, apsw.CantOpenError, apsw.PermissionsError) as exc:
            # A restart cannot make the file writable: exit fatal, the supervisor stops (exit 2).
            self.log.error("database_unwritable", path=self.config.database.path, error=str(exc),
                           action="exiting fatal")
            sys.exit(EXIT_FATAL)
        self.inbox = self.socket(zmq.PULL, e.writer, bind=True, hwm=INBOX_HWM)
        self.bus = self.socket(zmq.PUB, e.bus_pub)
        self.feed = self.socket(zmq.PUB, e.feed_in, hwm=FEED_HWM)
        self.on(self.inbox, self._on_inbox)
        self.pending: list[_Pending | SymbolsUpdate | ExchangeHole] = []
        self.pending_rows = 0
        self.group_deadline: float | None = None  # monotonic time the pending group must commit
        self.unexpected = 0
        self.stats = {"rows": 0, "txns": 0, "batches": 0, "failed": 0}
        self.summary_at = time.monotonic() + SUMMARY_EVERY_S
        self.summary_rows = 0
        self.log.info("ready", database=self.config.database.path, inbox=e.writer,
                      max_rows_per_txn=self.settings.max_rows_per_txn,
                      max_delay_ms=self.settings.max_delay_ms)

    # -- the loop -------------------------------------------------------------------------------
    def poll_timeout_ms(self) -> int:
        if self.group_deadline is None:
            return self.poll_ms
        return max(0, min(self.poll_ms, int((self.group_deadline - time.monotonic()) * 1000) + 1))

    def tick(self, now: float) -> None:
        if self.group_deadline is not None and now >= self.group_deadline:
            self._commit()
        if now >= self.summary_at:
            self._summary(now)

    def teardown(self) -> None:
        # Accepted means delivered to this process: take what is queued, then commit it all.
        self._drain(self.inbox, limit=None)
        if self.pending:
            self._commit()
        self.store.close()
        self.log.info("closed", rows=self.stats["rows"], txns=self.stats["txns"],
                      failed_batches=self.stats["failed"])

    # -- handlers -------------------------------------------------------------------------------
    def _on_inbox(self, sock: zmq.Socket) -> None:
        self._drain(sock, limit=DRAIN_MAX)

    def _drain(self, sock: zmq.Socket, limit: int | None) -> None:
        taken = 0
        while (limit is None or taken < limit) and sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            taken += 1
            message = self.receive(sock)
            if message is None:
                continue
            if isinstance(message, KlineBatch):
                self._accept_batch(message)
            elif isinstance(message, (SymbolsUpdate, ExchangeHole)):
                self._accept_meta(message)
            else:
                self.unexpected += 1
                self.dropped_malformed += 1
                self.log.warning("unexpected_message", kind=type(message).__name__,
                                 unexpected_total=self.unexpected, action="dropped")
            if self.pending_rows >= self.settings.max_rows_per_txn:
                self._commit()

    def _accept_batch(self, batch: KlineBatch) -> None:
        try:
            table_name(batch.symbol, batch.interval)
            rows = check_batch(batch.interval, batch.candles)
        except (SymbolError, PageError) as exc:
            self._fail([batch.task_id], f"invalid batch: {exc}", symbol=batch.symbol[:40],
                       interval=batch.interval[:10], rows=len(batch.candles), stored=0)
            return
        if not rows:
            # Nothing to store, but a task may wait for this answer.
            if batch.task_id:
                self.send(self.bus, messages.Committed(task_ids=[batch.task_id], tables=[],
                                                       committed_at_ms=now_ms()))
            return
        self._enqueue(_Pending(batch, rows), len(rows))

    def _accept_meta(self, message: SymbolsUpdate | ExchangeHole) -> None:
        if isinstance(message, ExchangeHole):
            try:
                table_name(message.symbol, message.interval)
                if message.end_ms < message.start_ms:
                    raise ValueError(f"end {message.end_ms} before start {message.start_ms}")
            except (SymbolError, ValueError) as exc:
                self.log.warning("invalid_hole", symbol=message.symbol[:40], error=str(exc),
                                 action="dropped")
                return
        self._enqueue(message, 1)

    def _enqueue(self, item, rows: int) -> None:
        if not self.pending:
            self.group_deadline = time.monotonic() + self.settings.max_delay_ms / 1000
        self.pending.append(item)
        self.pending_rows += rows

    # -- committing -----------------------------------------------------------------------------
    def _apply(self, item) -> tuple[int, set[int] | None]:
        """Write one item inside the open transaction: (rows written, stored open times or None)."""
        if isinstance(item, _Pending):
            b = item.batch
            if b.live:
                stored = self.store.upsert_stored(b.symbol, b.interval, b.source, b.candles)
                return len(stored), stored
            return self.store.upsert_rows(b.symbol, b.interval, b.source, item.rows), None
        if isinstance(item, SymbolsUpdate):
            self.store.record_symbols(item.symbols, item.seen_at_ms)
        else:
            self.store.record_hole(item.symbol, item.interval, item.start_ms, item.end_ms, now_ms())
        return 0, None

    def _commit(self) -> None:
        group, self.pending = self.pending, []
        self.pending_rows = 0
        self.group_deadline = None
        if not group:
            return
        started = time.perf_counter()
        try:
            with self.store.transaction():
                results = [self._apply(item) for item in group]
        except Exception as exc:  # noqa: BLE001 - any failure: roll back, then isolate the culprit
            if len(group) == 1:
                self._item_failed(group[0], exc)
                return
            self.log.warning("transaction_failed", items=len(group), error=_describe(exc),
                             action="rolled back; retrying each batch alone")
            for item in group:
                try:
                    with self.store.transaction():
                        result = self._apply(item)
                except Exception as item_exc:  # noqa: BLE001
                    self._item_failed(item, item_exc)
                else:
                    self._announce([item], [result], started)
            return
        self._announce(group, results, started)

    def _announce(self, group: list, results: list[tuple[int, set[int] | None]], started: float) -> None:
        """After COMMIT: Committed on the bus, then stored live candles on the feed."""
        task_ids: list[str] = []
        tables: dict[tuple[str, str], list[int]] = {}
        written = 0
        for item, (rows, stored) in zip(group, results):
            if not isinstance(item, _Pending):
                continue
            b = item.batch
            if b.task_id:
                task_ids.append(b.task_id)
            written += rows
            if rows:
                opens = stored if stored is not None else [r[0] for r in item.rows]
                entry = tables.setdefault((b.symbol, b.interval), [0, min(opens), max(opens)])
                entry[0] += rows
                entry[1] = min(entry[1], min(opens))
                entry[2] = max(entry[2], max(opens))
        if task_ids or tables:
            commits = [messages.TableCommit(s, i, n, lo, hi) for (s, i), (n, lo, hi) in tables.items()]
            self.send(self.bus, messages.Committed(task_ids=task_ids, tables=commits,
                                                   committed_at_ms=now_ms()))
        for item, (_, stored) in zip(group, results):
            if stored and isinstance(item, _Pending):
                self._publish_feed(item.batch, stored)
        self.stats["rows"] += written
        self.stats["txns"] += 1
        self.stats["batches"] += sum(isinstance(i, _Pending) for i in group)
        self.summary_rows += written
        self.log.debug("committed", rows=written, items=len(group), tables=len(tables),
                       tasks=len(task_ids), ms=round((time.perf_counter() - started) * 1000, 2))

    def _publish_feed(self, batch: KlineBatch, stored: set[int]) -> None:
        topic = messages.feed_topic(batch.symbol, batch.interval)
        for candle in batch.candles:
            if candle.open_time_ms in stored:
                body = messages.encode(messages.FeedKline(
                    symbol=batch.symbol, interval=batch.interval, seq=0, closed=True,
                    source=batch.source, stored=True, candle=candle))
                try:
                    self.feed.send_multipart([topic, body], zmq.NOBLOCK)
                except zmq.Again:
                    pass  # PUB drops at its high-water mark; consumers see the gap in seq

    def _item_failed(self, item, exc: Exception) -> None:
        what = _describe(exc)
        if isinstance(item, _Pending):
            b = item.batch
            self._fail([b.task_id], what, symbol=b.symbol, interval=b.interval,
                       rows=len(item.rows), stored=0)
        else:
            self.log.error("write_failed", kind=type(item).__name__, error=what,
                           stored=0, action="dropped")

    def _fail(self, task_ids: list[str], error: str, **context: object) -> None:
        """One log line and, for tasks, a WriteFailed on the bus; nothing of it is stored."""
        self.stats["failed"] += 1
        ids = [t for t in task_ids if t]
        self.log.error("write_failed", task_id=",".join(ids) or "-", error=error, **context,
                       action="nothing stored; reported" if ids else "nothing stored; dropped")
        if ids:
            self.send(self.bus, messages.WriteFailed(task_ids=ids, error=error))

    def _summary(self, now: float) -> None:
        elapsed = now - (self.summary_at - SUMMARY_EVERY_S)
        if self.summary_rows or self.stats["failed"]:
            self.log.info("summary", rows=self.summary_rows,
                          rows_per_s=round(self.summary_rows / max(elapsed, 1e-9)),
                          txns_total=self.stats["txns"], rows_total=self.stats["rows"],
                          failed_batches_total=self.stats["failed"])
        self.summary_rows = 0
        self.summary_at = now + SUMMARY_EVERY_S


def _describe(exc: Exception) -> str:
    if isinstance(exc, apsw.FullError):
        return f"disk full: {exc}"
    if isinstance(exc, apsw.IOError):
        return f"I/O error: {exc}"
    return f"{type(exc).__name__}: {exc}"[:300]
