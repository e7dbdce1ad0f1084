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

Split by idea, as mixins of `Writer`: `writer_commit.py` (the transaction, each item alone after a
failure, then `Committed` and the feed), `writer_hold.py` (the database refusing writes: the group
held whole, the inbox paused, retries; an unusable file is a fatal exit) and `writer_upkeep.py`
(tables made ahead, WAL checkpoints, the summary line, old tables' `meta_tables` rows). This
module: sockets, state, the loop, accepting messages.
"""

from __future__ import annotations

import gc
import time
from collections import deque

import zmq

from .. import messages
from ..core import batches
from ..core.clock import ServerClock
from ..core.klines import PageError
from ..core.symbols import SymbolError
from ..messages import ArchiveBatch, ClockSync, ExchangeHole, KlineBatch, SymbolsUpdate
from ..store import Store
from .base import Actor, now_ms
from .writer_hold import BUSY_SLICE_MS, HOLD_RETRY_S, DatabaseHold, Hold
from .writer_commit import BEACON_EVERY_S, Committing, _Pending
from .writer_upkeep import CHECKPOINT_EVERY_S, SUMMARY_EVERY_S, Upkeep

INBOX_HWM = 1000
DRAIN_MAX = 500  # messages per poll round, so heartbeats and commits keep their timing
GC_GEN0_THRESHOLD = 50_000
TEARDOWN_RETRY_S = 3.0     # at stop, how long a blocked database may still be waited for


class Writer(Committing, DatabaseHold, Upkeep, Actor):

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
