"""The DB writer actor: the only process that writes the database.

Sockets:
- `inbox`  PULL bound on `endpoints.writer`: `KlineBatch`, `ArchiveBatch` (an archive file's
           candles as columns), `SymbolsUpdate`, `ExchangeHole`;
- `bus`    PUB connected to `endpoints.bus_pub`: `Committed` after COMMIT, `WriteFailed`;
- `feed`   PUB connected to `endpoints.feed_in`: stored closed candles of live batches, as
           `[feed_topic, FeedKline(seq=0)]` (the broker stamps sequence numbers).
- `clock`  SUB connected to `endpoints.bus_sub`, filtered to `ClockSync`: the exchange's clock,
           so nothing dated past it is stored (see below).

Order, always: COMMIT, then `Committed` on the bus, then candles on the feed. A task counts as done
only when the scheduler sees its id in a `Committed`, so nothing is announced before it is durable.

Batches are checked when they arrive (`core/batches.py`: candles, symbol, nothing closing past
the exchange's now + `FUTURE_TOLERANCE_MS` once its clock is known from the first `ClockSync`,
holes likewise); an invalid batch is reported (`WriteFailed`) and never joins a transaction, an
invalid hole is one line and dropped. Valid ones are grouped into one transaction until
`writer.max_rows_per_txn` rows or `writer.max_delay_ms` after the first of the group. If the
transaction fails because of an item, it is rolled back and each item is retried alone, so only
the culprit fails.

A WebSocket candle refused by the upsert (its open time already holds a REST candle) is not
counted in `Committed` rows and not published as stored: live batches are written with RETURNING,
which yields exactly the rows the upsert wrote. Of two REST answers for a recent candle, the one
requested later wins even if it commits first (`KlineBatch.requested_at_ms`, remembered for
recent candles only: `batches.RequestMemory`).

Split by idea, as mixins of `Writer`: `writer_hold.py` (the database refusing writes: the group
held whole, the inbox paused, retries; an unusable file is a fatal exit) and `writer_upkeep.py`
(tables made ahead, WAL checkpoints, the summary line, old tables' `meta_tables` rows). This module: sockets, state, the loop,
accepting messages, committing and announcing.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Collection
from typing import NamedTuple

import zmq

from .. import messages
from ..core import batches
from ..core.clock import ServerClock
from ..core.klines import PageError
from ..core.symbols import SymbolError
from ..messages import ArchiveBatch, ClockSync, ExchangeHole, KlineBatch, SymbolsUpdate
from ..store import Store
from .base import Actor, now_ms
from .writer_hold import BUSY_SLICE_MS, HOLD_ERRORS, HOLD_RETRY_S, DatabaseHold, Hold, describe
from .writer_upkeep import CHECKPOINT_EVERY_S, SUMMARY_EVERY_S, Upkeep

INBOX_HWM = 1000
DRAIN_MAX = 500  # messages per poll round, so heartbeats and commits keep their timing
GC_GEN0_THRESHOLD = 50_000
BEACON_EVERY_S = 1.0       # an idle writer's "alive, nothing waiting" on the bus
TEARDOWN_RETRY_S = 3.0     # at stop, how long a blocked database may still be waited for


class _Pending:
    """A validated batch waiting for its transaction: upsert rows (a `KlineBatch`) or the
    columns themselves (an `ArchiveBatch`)."""

    __slots__ = ("batch", "rows")

    def __init__(self, batch: KlineBatch | ArchiveBatch, rows: list[tuple] | messages.CandleColumns) -> None:
        self.batch = batch
        self.rows = rows


class _Applied(NamedTuple):
    """What one item did inside its transaction."""

    rows: int                    # rows written
    opens: Collection[int]       # open times written (for the Committed ranges)
    stored: set[int] | None      # live batches: open times to publish as stored


_NOTHING = _Applied(0, (), None)


class Writer(DatabaseHold, Upkeep, Actor):

    # -- sockets and state ----------------------------------------------------------------------
    def setup(self) -> None:
        # A batch makes thousands of short-lived tuples; the default gen-0 threshold (700) runs
        # the collector many times per batch for nothing (measured: ~10% of the hot path).
        gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
        e = self.config.endpoints
        self.settings = self.config.writer
        # Each attempt waits at most this long for another process's write lock; longer waits
        # happen in the loop, between heartbeats.
        self.busy_ms = max(0, min(self.config.database.busy_timeout_ms, BUSY_SLICE_MS))
        self.store: Store | None = None
        self.hold: Hold | None = None
        self.inbox = self.socket(zmq.PULL, e.writer, bind=True, hwm=INBOX_HWM)
        self.serve_remote(self.inbox, "writer")  # batches of downloaders on other hosts (curve.py)
        self.bus = self.socket(zmq.PUB, e.bus_pub)
        self.feed = self.socket(zmq.PUB, e.feed_in, hwm=messages.FEED_HWM)
        self.on(self.inbox, self._on_inbox)
        self.clock_in = self.socket(zmq.SUB, e.bus_sub, subscribe=messages.subscription(ClockSync))
        self.on(self.clock_in, self._on_clock)
        self.clock = ServerClock()
        self.pending: list[_Pending | SymbolsUpdate | ExchangeHole] = []
        self.pending_rows = 0
        self.group_deadline: float | None = None  # monotonic time the pending group must commit
        self.requests = batches.RequestMemory()  # which request wrote each recent candle
        self.unexpected = 0
        self.stats = {"rows": 0, "txns": 0, "batches": 0, "failed": 0, "stale": 0}
        self.summary_at = time.monotonic() + SUMMARY_EVERY_S
        self.summary_rows = 0
        self.last_commit = time.monotonic()
        self.next_checkpoint = self.last_commit + CHECKPOINT_EVERY_S
        self.started_ms = now_ms()
        self.next_beacon = 0.0
        self.tables_wanted: deque[tuple[str, str]] = deque()
        self.summarized_tables = 0
        self._open_store(time.monotonic())
        self.log.info("ready", database=self.config.database.path, inbox=e.writer,
                      max_rows_per_txn=self.settings.max_rows_per_txn,
                      max_delay_ms=self.settings.max_delay_ms, busy_slice_ms=self.busy_ms,
                      schema="ready" if self.store else "waiting")

    # -- the loop -------------------------------------------------------------------------------
    def poll_timeout_ms(self) -> int:
        if self.hold is not None:
            return max(0, min(self.poll_ms, int((self.hold.next_try - time.monotonic()) * 1000) + 1))
        if self.group_deadline is None:
            return self.poll_ms
        return max(0, min(self.poll_ms, int((self.group_deadline - time.monotonic()) * 1000) + 1))

    def tick(self, now: float) -> None:
        if self.hold is not None:
            if now >= self.hold.next_try:
                self._retry(now)
        elif self.group_deadline is not None and now >= self.group_deadline:
            self._commit()
        if self.tables_wanted and self.hold is None and not self.pending and self.store is not None:
            self._create_some(now)
        elif (self.store is not None and self.store.summaries_pending and self.hold is None
              and not self.pending):
            self._summarize_some(now)
        if self.hold is None and not self.pending and now >= self.next_beacon:
            self._beacon(now)
        if now >= self.next_checkpoint:
            self._checkpoint(now)
        if now >= self.summary_at:
            self._summary(now)

    def _beacon(self, now: float) -> None:
        """Tell the scheduler this writer is alive with nothing waiting: while it hears nothing,
        released work is not issued again (a stalled writer will still commit it)."""
        self.next_beacon = now + BEACON_EVERY_S
        self.send(self.bus, messages.Committed(task_ids=[], tables=[], committed_at_ms=now_ms(),
                                               writer_started_ms=self.started_ms), block=False)

    def teardown(self) -> None:
        # Accepted means delivered to this process: take what is queued, then commit it all.
        self._drain(self.inbox, limit=None)
        deadline = time.monotonic() + TEARDOWN_RETRY_S
        while self.pending:
            if self.hold is None:
                self._commit()
            elif time.monotonic() < deadline:
                time.sleep(HOLD_RETRY_S)
                self._retry(time.monotonic())
            else:
                break
        if self.pending:
            self.log.error("stopped_blocked", reason=self.hold.reason if self.hold else "-",
                           batches=len(self.pending), rows=self.pending_rows,
                           action="not stored; leases and boundary fetches bring them back")
        if self.store is not None:
            self.store.close()
        self.log.info("closed", rows=self.stats["rows"], txns=self.stats["txns"],
                      failed_batches=self.stats["failed"])

    # -- handlers -------------------------------------------------------------------------------
    def _on_clock(self, sock: zmq.Socket) -> None:
        self.take_clock(sock, self.clock)

    def _server_now_ms(self) -> int | None:
        """The exchange's now, None until its clock is known (nothing is then refused as future)."""
        return self.clock.now_ms() if self.clock.synced else None

    def _on_inbox(self, sock: zmq.Socket) -> None:
        self._drain(sock, limit=DRAIN_MAX)

    def _drain(self, sock: zmq.Socket, limit: int | None) -> None:
        taken = 0
        while (self.hold is None and (limit is None or taken < limit)
               and sock.getsockopt(zmq.EVENTS) & zmq.POLLIN):
            taken += 1
            message = self.receive(sock)
            if message is None:
                continue
            if isinstance(message, KlineBatch):
                self._accept_batch(message)
            elif isinstance(message, ArchiveBatch):
                self._accept_columns(message)
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
            rows = batches.accept_batch(batch.symbol, batch.interval, batch.candles, self._server_now_ms())
        except (SymbolError, PageError) as exc:
            self._fail([batch.task_id], f"invalid batch: {exc}", symbol=batch.symbol[:40],
                       interval=batch.interval[:10], rows=len(batch.candles), stored=0)
            return
        if not rows:
            self._committed_empty(batch.task_id)
            return
        self._enqueue(_Pending(batch, rows), len(rows))

    def _accept_columns(self, batch: ArchiveBatch) -> None:
        columns = batch.columns
        try:
            batches.accept_columns(batch.symbol, batch.interval, columns, self._server_now_ms())
        except (SymbolError, PageError) as exc:
            self._fail([batch.task_id], f"invalid batch: {exc}", symbol=batch.symbol[:40],
                       interval=batch.interval[:10], rows=len(columns.open_time_ms), stored=0)
            return
        if not len(columns):
            self._committed_empty(batch.task_id)
            return
        self._enqueue(_Pending(batch, columns), len(columns))

    def _committed_empty(self, task_id: str) -> None:
        """Nothing to store, but a task may wait for this answer."""
        if task_id:
            self.send(self.bus, messages.Committed(task_ids=[task_id], tables=[], committed_at_ms=now_ms(),
                                                   writer_started_ms=self.started_ms))

    def _accept_meta(self, message: SymbolsUpdate | ExchangeHole) -> None:
        if isinstance(message, ExchangeHole):
            try:
                batches.check_hole(message.symbol, message.interval, message.start_ms, message.end_ms,
                                   self._server_now_ms())
            except (SymbolError, ValueError) as exc:
                self.log.warning("invalid_hole", symbol=message.symbol[:40], error=str(exc)[:200],
                                 action="dropped")
                return
        self._enqueue(message, 1)

    def _enqueue(self, item, rows: int) -> None:
        if not self.pending:
            self.group_deadline = time.monotonic() + self.settings.max_delay_ms / 1000
        self.pending.append(item)
        self.pending_rows += rows

    # -- committing -----------------------------------------------------------------------------
    def _apply(self, item, staged: dict) -> _Applied:
        """Write one item inside the open transaction."""
        if isinstance(item, _Pending):
            b = item.batch
            rows = item.rows
            if isinstance(b, ArchiveBatch):
                written = self.store.upsert_columns(b.symbol, b.interval, b.source, rows)
                return _Applied(written, rows.open_time_ms if written else (), None)
            if b.source == "rest" and b.requested_at_ms > 0:
                rows = self._newer_only(b, rows, staged)
            if b.live:
                stored = self.store.upsert_rows_stored(b.symbol, b.interval, b.source, rows)
                return _Applied(len(stored), stored, stored)
            written = self.store.upsert_rows(b.symbol, b.interval, b.source, rows)
            return _Applied(written, [r[0] for r in rows] if written else (), None)
        if isinstance(item, SymbolsUpdate):
            self.store.record_symbols(item.symbols, item.seen_at_ms)
            self._create_tables(item)
        else:
            self.store.record_hole(item.symbol, item.interval, item.start_ms, item.end_ms, now_ms())
        return _NOTHING

    def _newer_only(self, batch: KlineBatch, rows: list[tuple], staged: dict) -> list[tuple]:
        """The rows of a REST batch minus candles whose stored copy came from a later request
        (`batches.RequestMemory`: of two answers for a recent candle, the later-requested wins)."""
        kept, refused, newest_seen = self.requests.newer_only(batch.symbol, batch.interval,
                                                              batch.requested_at_ms, rows, staged)
        if refused:
            self.stats["stale"] += len(refused)
            self.log.info("stale_answer_refused", symbol=batch.symbol, interval=batch.interval,
                          candles=len(refused), first_open_ms=min(refused),
                          requested_at_ms=batch.requested_at_ms, stored_requested_at_ms=newest_seen,
                          task_id=batch.task_id or "-", action="kept the later-requested copy")
        return kept

    def _commit(self) -> None:
        group = self.pending
        if not group:
            self.group_deadline = None
            return
        if self.store is None:
            return  # still opening: the hold's retry commits
        started = time.perf_counter()
        staged: dict = {}
        try:
            with self.store.transaction():
                results = [self._apply(item, staged) for item in group]
        except HOLD_ERRORS as exc:
            self._hold(exc, time.monotonic())
            return
        except Exception as exc:  # noqa: BLE001 - any failure: roll back, then isolate the culprit
            self._isolate(group, exc, started)
            return
        self.metrics.observe("writer_transaction_seconds", (), time.perf_counter() - started)
        self._take_all()
        self.requests.remember(staged)
        self._announce(group, results, started)
        self._resume()

    def _isolate(self, group: list, exc: Exception, started: float) -> None:
        """The group's transaction failed for one of its items: try each alone."""
        if len(group) > 1:
            self.log.warning("transaction_failed", items=len(group), error=describe(exc),
                             action="rolled back; retrying each batch alone")
        for done, item in enumerate(group):
            staged: dict = {}
            try:
                if len(group) == 1:
                    raise exc
                item_started = time.perf_counter()
                with self.store.transaction():
                    result = self._apply(item, staged)
                self.metrics.observe("writer_transaction_seconds", (), time.perf_counter() - item_started)
            except HOLD_ERRORS as hold_exc:
                # Not this item's fault: keep it and the rest for the retry.
                self.pending = group[done:]
                self.pending_rows = sum(_rows_of(i) for i in self.pending)
                self._hold(hold_exc, time.monotonic())
                return
            except Exception as item_exc:  # noqa: BLE001
                self._item_failed(item, item_exc)
            else:
                self.requests.remember(staged)
                self._announce([item], [result], started)
        self._take_all()
        self._resume()

    def _take_all(self) -> None:
        self.pending = []
        self.pending_rows = 0
        self.group_deadline = None
        self.last_commit = time.monotonic()

    def _announce(self, group: list, results: list[_Applied], started: float) -> None:
        """After COMMIT: Committed on the bus, then stored live candles on the feed."""
        task_ids: list[str] = []
        tables: dict[tuple[str, str], list[int]] = {}
        written = 0
        for item, result in zip(group, results):
            if not isinstance(item, _Pending):
                continue
            b = item.batch
            if b.task_id:
                task_ids.append(b.task_id)
            written += result.rows
            if result.rows:
                self.metrics.inc("candles_written_total", (b.interval, b.source), result.rows)
            if result.rows and result.opens:
                lo, hi = min(result.opens), max(result.opens)
                entry = tables.setdefault((b.symbol, b.interval), [0, lo, hi])
                entry[0] += result.rows
                entry[1] = min(entry[1], lo)
                entry[2] = max(entry[2], hi)
        if task_ids or tables:
            commits = [messages.TableCommit(s, i, n, lo, hi) for (s, i), (n, lo, hi) in tables.items()]
            self.send(self.bus, messages.Committed(task_ids=task_ids, tables=commits,
                                                   committed_at_ms=now_ms(),
                                                   writer_started_ms=self.started_ms))
            self.next_beacon = time.monotonic() + BEACON_EVERY_S
        for item, result in zip(group, results):
            if result.stored and isinstance(item, _Pending):
                self._publish_feed(item.batch, result.stored)
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
        what = describe(exc)
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


def _rows_of(item) -> int:
    return len(item.rows) if isinstance(item, _Pending) else 1
