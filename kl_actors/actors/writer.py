"""The DB writer actor: the only process that writes the database.

Sockets:
- `inbox`  PULL bound on `endpoints.writer`: `KlineBatch`, `SymbolsUpdate`, `ExchangeHole`;
- `bus`    PUB connected to `endpoints.bus_pub`: `Committed` after COMMIT, `WriteFailed`;
- `feed`   PUB connected to `endpoints.feed_in`: stored closed candles of live batches, as
           `[feed_topic, FeedKline(seq=0)]` (the broker stamps sequence numbers).
- `clock`  SUB connected to `endpoints.bus_sub`, filtered to `ClockSync`: the exchange's clock,
           so nothing dated past it is stored (see below).

Order, always: COMMIT, then `Committed` on the bus, then candles on the feed. A task counts as done
only when the scheduler sees its id in a `Committed`, so nothing is announced before it is durable.

Batches are validated when they arrive; an invalid one is reported (`WriteFailed`) and never
joins a transaction. Once the exchange's clock is known (first `ClockSync`; time-sync repeats
it every few seconds), a batch holding a candle that closes past the exchange's now +
`FUTURE_TOLERANCE_MS` is invalid, and an `ExchangeHole` whose last candle closes past it is
dropped: neither a candle nor a confirmed hole can lie in the future. Valid ones are grouped into one transaction until `writer.max_rows_per_txn`
rows or `writer.max_delay_ms` after the first of the group. If the transaction fails because of
an item, it is rolled back and each item is retried alone, so only the culprit fails.

When the database refuses every write (another process holds the write lock, the disk is full,
the file turned read-only, an I/O error), no batch is at fault: the group is kept whole, the
inbox is no longer read (senders' queues fill up, so the pressure reaches them), heartbeats go
on, and the group is tried again every fraction of a second (busy) or every few seconds (the
rest). No attempt waits longer than `BUSY_SLICE_MS` for the lock. One line when it starts
(`database_blocked`), one when it ends (`database_resumed blocked_s=`). Opening the database
at start is retried the same way; a file that can never be written (read-only, not a database,
cannot be created) is one `database_unusable` line and exit status `EXIT_FATAL` (78), on which the
supervisor stops the service with exit 2 instead of restarting the writer.

A WebSocket candle refused by the upsert (its open time already holds a REST candle) is not
counted in `Committed` rows and not published as stored: live batches are written with RETURNING,
which yields exactly the rows the upsert wrote. Of two REST answers for a recent candle, the one
requested later wins even if it commits first (`KlineBatch.requested_at_ms`, remembered for
recent candles only; see `_newer_only`).

When idle, the writer checkpoints the WAL and truncates it, so a file an outside reader made
grow shrinks back; `database.wal_limit_mib` caps what a checkpoint leaves behind otherwise.
"""

from __future__ import annotations

import gc
import itertools
import operator
import re
import time
from collections import deque
from collections.abc import Collection
from typing import NamedTuple

import apsw
import msgspec
import zmq

from ..core import intervals
from .. import messages
from .base import Actor, now_ms
from ..core.clock import ServerClock
from ..config import EXIT_FATAL
from ..core.klines import MAX_SQL_INT, MAX_TIME_MS, PageError, check_candle
from ..messages import Candle, ClockSync, ExchangeHole, KlineBatch, SymbolsUpdate
from ..store import Store, StoreError
from ..core.symbols import SymbolError, table_name

INBOX_HWM = 1000
DRAIN_MAX = 500  # messages per poll round, so heartbeats and commits keep their timing
SUMMARY_EVERY_S = 10.0
GC_GEN0_THRESHOLD = 50_000
# The longest one attempt waits for another process's write lock (far below any heartbeat
# timeout); waits beyond it happen in the loop, with heartbeats.
BUSY_SLICE_MS = 250
HOLD_RETRY_S = 0.25        # busy: next attempt
BEACON_EVERY_S = 1.0       # an idle writer's "alive, nothing waiting" on the bus
CREATE_SLICE_S = 0.2       # tables made ahead of their first batch, per transaction
HOLD_RETRY_SLOW_S = 2.0    # disk full, read-only, I/O error: next attempt
TEARDOWN_RETRY_S = 3.0     # at stop, how long a blocked database may still be waited for
CHECKPOINT_EVERY_S = 5.0
CHECKPOINT_IDLE_S = 1.0    # no commit for this long: the WAL may be truncated
CHECKPOINT_BUSY_MS = 50    # how long a truncating checkpoint may wait for readers
WAL_NOTABLE_BYTES = 4 * 2 ** 20  # SQLite's own checkpoints keep the WAL near this (1000 pages)
RECENT_MS = 10 * 60_000    # a candle closed this recently when asked may still change
REMEMBER_MS = 20 * 60_000  # requests older than this (behind the newest) are forgotten
REMEMBER_MAX = 200_000     # (symbol, interval, open_time) entries at most
FUTURE_TOLERANCE_MS = 5_000  # clock error: a candle closing later than this past now is refused
_CLOSE_TIME = operator.itemgetter(6)
_HOLD_ERRORS = (apsw.BusyError, apsw.LockedError, apsw.FullError, apsw.ReadOnlyError,
                apsw.IOError, apsw.CantOpenError)
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
    if min(cols[8]) < 0 or max(cols[8]) > MAX_SQL_INT:
        return False
    if min(opens) < 0 or max(close_times) > MAX_TIME_MS:
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


class _Hold:
    """The database refuses writes for now (busy, full, read-only): nothing is read, nothing is
    dropped, the whole pending group is tried again at `next_try`."""

    __slots__ = ("reason", "error", "since", "next_try", "attempts")

    def __init__(self, reason: str, error: str, now: float, retry_s: float) -> None:
        self.reason = reason
        self.error = error
        self.since = now
        self.next_try = now + retry_s
        self.attempts = 1


class _Applied(NamedTuple):
    """What one item did inside its transaction."""

    rows: int                    # rows written
    opens: Collection[int]       # open times written (for the Committed ranges)
    stored: set[int] | None      # live batches: open times to publish as stored


_NOTHING = _Applied(0, (), None)


class Writer(Actor):

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
        self.hold: _Hold | None = None
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
        # (symbol, interval, open_time) -> server time the REST request that wrote the stored
        # copy was sent, for recent candles only (see _newer_only).
        self.requested_at: dict[tuple[str, str, int], int] = {}
        self.unexpected = 0
        self.stats = {"rows": 0, "txns": 0, "batches": 0, "failed": 0, "stale": 0}
        self.summary_at = time.monotonic() + SUMMARY_EVERY_S
        self.summary_rows = 0
        self.last_commit = time.monotonic()
        self.next_checkpoint = self.last_commit + CHECKPOINT_EVERY_S
        self.started_ms = now_ms()
        self.next_beacon = 0.0
        self.tables_wanted: deque[tuple[str, str]] = deque()
        self._open_store(time.monotonic())
        self.log.info("ready", database=self.config.database.path, inbox=e.writer,
                      max_rows_per_txn=self.settings.max_rows_per_txn,
                      max_delay_ms=self.settings.max_delay_ms, busy_slice_ms=self.busy_ms,
                      schema="ready" if self.store else "waiting")

    def _open_store(self, now: float) -> bool:
        try:
            self.store = Store.open_writer(self.config.database, busy_timeout_ms=self.busy_ms)
        except StoreError as exc:
            # The file can never be written as it is: restarting cannot help.
            self.log.error("database_unusable", error=str(exc)[:300],
                           action=f"exiting fatal ({EXIT_FATAL}): the supervisor stops the service")
            raise SystemExit(EXIT_FATAL) from None
        except _HOLD_ERRORS as exc:
            self._hold(exc, now, opening=True)
            return False
        return True

    # -- the loop -------------------------------------------------------------------------------
    def poll_timeout_ms(self) -> int:
        if self.hold is not None:
            return max(0, min(self.poll_ms, int((self.hold.next_try - time.monotonic()) * 1000) + 1))
        if self.group_deadline is None:
            return self.poll_ms
        return max(0, min(self.poll_ms, int((self.group_deadline - time.monotonic()) * 1000) + 1))

    def _wait(self, timeout_ms: int) -> dict:
        if self.hold is not None:
            # The inbox is not read while the database refuses writes: batches wait in the
            # senders' queues (bounded by their high-water marks), and the pending group here
            # stays as it is. Only heartbeats and retries go on.
            time.sleep(timeout_ms / 1000)
            return {}
        return super()._wait(timeout_ms)

    def tick(self, now: float) -> None:
        if self.hold is not None:
            if now >= self.hold.next_try:
                self._retry(now)
        elif self.group_deadline is not None and now >= self.group_deadline:
            self._commit()
        if self.tables_wanted and self.hold is None and not self.pending and self.store is not None:
            self._create_some(now)
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

    def _future_limit_ms(self) -> int | None:
        """Nothing may close after this (server time); None until the exchange's clock is known."""
        return self.clock.now_ms() + FUTURE_TOLERANCE_MS if self.clock.synced else None

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
            limit_ms = self._future_limit_ms()
            if rows and limit_ms is not None:
                last_close = max(map(_CLOSE_TIME, rows))
                if last_close >= limit_ms:
                    raise PageError(f"candle closing at {last_close} is in the future (server now "
                                    f"{limit_ms - FUTURE_TOLERANCE_MS})")
        except (SymbolError, PageError) as exc:
            self._fail([batch.task_id], f"invalid batch: {exc}", symbol=batch.symbol[:40],
                       interval=batch.interval[:10], rows=len(batch.candles), stored=0)
            return
        if not rows:
            # Nothing to store, but a task may wait for this answer.
            if batch.task_id:
                self.send(self.bus, messages.Committed(task_ids=[batch.task_id], tables=[],
                                                       committed_at_ms=now_ms(),
                                                       writer_started_ms=self.started_ms))
            return
        self._enqueue(_Pending(batch, rows), len(rows))

    def _accept_meta(self, message: SymbolsUpdate | ExchangeHole) -> None:
        if isinstance(message, ExchangeHole):
            try:
                table_name(message.symbol, message.interval)
                if message.end_ms < message.start_ms:
                    raise ValueError(f"end {message.end_ms} before start {message.start_ms}")
                if message.start_ms < 0 or message.end_ms > MAX_TIME_MS:
                    raise ValueError(f"range {message.start_ms}..{message.end_ms} out of range")
                limit_ms = self._future_limit_ms()
                # Compared as an open time first: no calendar arithmetic on an absurd end.
                if limit_ms is not None and (message.end_ms >= limit_ms or
                                             intervals.close_time(message.interval, message.end_ms) >= limit_ms):
                    raise ValueError(f"ends in the future: last open {message.end_ms}, server now "
                                     f"{limit_ms - FUTURE_TOLERANCE_MS}")
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

    # -- the database refusing writes -----------------------------------------------------------
    def _hold(self, exc: Exception, now: float, opening: bool = False) -> None:
        reason = _hold_reason(exc)
        retry_s = HOLD_RETRY_S if reason == "busy" else HOLD_RETRY_SLOW_S
        if self.hold is not None:
            self.hold.attempts += 1
            self.hold.next_try = now + retry_s
            return
        self.hold = _Hold(reason, _describe(exc), now, retry_s)
        self.log.warning("database_blocked", reason=reason, error=self.hold.error,
                         phase="opening" if opening else "commit", batches=len(self.pending),
                         rows=self.pending_rows,
                         action=f"holding the batches, inbox paused, retry every {retry_s}s")

    def _retry(self, now: float) -> None:
        if self.store is None and not self._open_store(now):
            return
        if self.pending:
            self._commit()
        else:
            self._resume()

    def _resume(self) -> None:
        if self.hold is None:
            return
        hold, self.hold = self.hold, None
        self.log.info("database_resumed", reason=hold.reason,
                      blocked_s=round(time.monotonic() - hold.since, 1), attempts=hold.attempts,
                      batches=len(self.pending))

    # -- committing -----------------------------------------------------------------------------
    def _apply(self, item, staged: dict) -> _Applied:
        """Write one item inside the open transaction."""
        if isinstance(item, _Pending):
            b = item.batch
            rows = item.rows
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

    def _create_tables(self, update: SymbolsUpdate) -> None:
        """Queue every table a trading symbol will need; `_create_some` makes them a few hundred
        per transaction. Created one by one as a bootstrap's batches arrive, each new table would
        make every reader (the scheduler's planning, a user's pandas) reload the whole schema
        (~0.1 s at 8,000 tables) on its next query; all in one transaction would take seconds."""
        for info in update.symbols:
            if info.status == "TRADING":
                self.tables_wanted.extend((info.symbol, interval) for interval in self.config.klines.intervals)

    def _create_some(self, now: float) -> None:
        deadline = now + CREATE_SLICE_S
        try:
            with self.store.transaction():
                while self.tables_wanted and time.monotonic() < deadline:
                    symbol, interval = self.tables_wanted.popleft()
                    try:
                        self.store.ensure_table(symbol, interval)
                    except SymbolError:
                        pass  # not a table-name symbol: its batches are refused with one line each
        except apsw.Error as exc:
            # Tables are also made by the first batch that needs them: nothing is lost.
            self.log.warning("tables_not_created", error=str(exc)[:200], left=len(self.tables_wanted),
                             action="each is created with its first batch instead")
            self.tables_wanted.clear()

    def _newer_only(self, batch: KlineBatch, rows: list[tuple], staged: dict) -> list[tuple]:
        """The rows of a REST batch minus candles whose stored copy came from a later request.

        A candle's values may still change for a moment after its close, so of two REST answers
        for it the later-requested one must win, whichever commits last. Only candles that were
        recent when asked (closed less than RECENT_MS before the request) are remembered: an
        older candle is final, so any answer for it is as good as another, and the memory stays
        bounded. A candle older than that for this request cannot be in the memory with a later
        request, so most backfill rows skip the lookup.
        """
        requested = batch.requested_at_ms
        recent_from = requested - RECENT_MS
        if max(map(_CLOSE_TIME, rows)) < recent_from:
            return rows
        kept = []
        refused: list[int] = []
        newest_seen = 0
        for row in rows:
            if row[6] < recent_from:
                kept.append(row)
                continue
            key = (batch.symbol, batch.interval, row[0])
            earlier = staged.get(key) or self.requested_at.get(key, 0)
            if earlier > requested:
                refused.append(row[0])
                newest_seen = max(newest_seen, earlier)
                continue
            staged[key] = requested
            kept.append(row)
        if refused:
            self.stats["stale"] += len(refused)
            self.log.info("stale_answer_refused", symbol=batch.symbol, interval=batch.interval,
                          candles=len(refused), first_open_ms=min(refused),
                          requested_at_ms=requested, stored_requested_at_ms=newest_seen,
                          task_id=batch.task_id or "-", action="kept the later-requested copy")
        return kept

    def _remember(self, staged: dict) -> None:
        if not staged:
            return
        self.requested_at.update(staged)
        if len(self.requested_at) > REMEMBER_MAX:
            self._forget_old()

    def _forget_old(self) -> None:
        if not self.requested_at:
            return
        newest = max(self.requested_at.values())
        keep = {k: v for k, v in self.requested_at.items() if v >= newest - REMEMBER_MS}
        if len(keep) > REMEMBER_MAX:  # a burst of recent candles beyond the cap: keep the newest
            keep = dict(sorted(keep.items(), key=operator.itemgetter(1))[-REMEMBER_MAX // 2:])
        self.requested_at = keep

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
        except _HOLD_ERRORS as exc:
            self._hold(exc, time.monotonic())
            return
        except Exception as exc:  # noqa: BLE001 - any failure: roll back, then isolate the culprit
            self._isolate(group, exc, started)
            return
        self._take_all()
        self._remember(staged)
        self._announce(group, results, started)
        self._resume()

    def _isolate(self, group: list, exc: Exception, started: float) -> None:
        """The group's transaction failed for one of its items: try each alone."""
        if len(group) > 1:
            self.log.warning("transaction_failed", items=len(group), error=_describe(exc),
                             action="rolled back; retrying each batch alone")
        for done, item in enumerate(group):
            staged: dict = {}
            try:
                if len(group) == 1:
                    raise exc
                with self.store.transaction():
                    result = self._apply(item, staged)
            except _HOLD_ERRORS as hold_exc:
                # Not this item's fault: keep it and the rest for the retry.
                self.pending = group[done:]
                self.pending_rows = sum(_rows_of(i) for i in self.pending)
                self._hold(hold_exc, time.monotonic())
                return
            except Exception as item_exc:  # noqa: BLE001
                self._item_failed(item, item_exc)
            else:
                self._remember(staged)
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

    # -- housekeeping ---------------------------------------------------------------------------
    def _checkpoint(self, now: float) -> None:
        """Between groups, when idle (or the WAL outgrew its limit): copy the WAL back and cut it
        to zero. Waits for readers at most CHECKPOINT_BUSY_MS; the next round tries again."""
        self.next_checkpoint = now + CHECKPOINT_EVERY_S
        if self.store is None or self.hold is not None or self.pending:
            return
        wal = self.store.wal_bytes()
        if wal == 0:
            return
        if now - self.last_commit < CHECKPOINT_IDLE_S and wal <= self.wal_limit_bytes:
            return
        started = time.perf_counter()
        try:
            truncated = self.store.checkpoint(CHECKPOINT_BUSY_MS)
        except apsw.Error as exc:
            self.log.debug("checkpoint_skipped", error=_describe(exc))
            return
        ms = round((time.perf_counter() - started) * 1000, 1)
        if truncated and wal > WAL_NOTABLE_BYTES:
            self.log.info("wal_truncated", from_mib=round(wal / 2 ** 20, 1), ms=ms)
        else:
            self.log.debug("checkpoint", wal_bytes=wal, truncated=truncated, ms=ms)

    @property
    def wal_limit_bytes(self) -> int:
        return max(0, self.config.database.wal_limit_mib) * 2 ** 20

    def _summary(self, now: float) -> None:
        elapsed = now - (self.summary_at - SUMMARY_EVERY_S)
        if self.summary_rows or self.stats["failed"]:
            self.log.info("summary", rows=self.summary_rows,
                          rows_per_s=round(self.summary_rows / max(elapsed, 1e-9)),
                          txns_total=self.stats["txns"], rows_total=self.stats["rows"],
                          failed_batches_total=self.stats["failed"],
                          stale_refused_total=self.stats["stale"])
        self._forget_old()
        self.summary_rows = 0
        self.summary_at = now + SUMMARY_EVERY_S


def _rows_of(item) -> int:
    return len(item.rows) if isinstance(item, _Pending) else 1


def _hold_reason(exc: Exception) -> str:
    if isinstance(exc, (apsw.BusyError, apsw.LockedError)):
        return "busy"
    if isinstance(exc, apsw.FullError):
        return "disk full"
    if isinstance(exc, apsw.ReadOnlyError):
        return "read-only"
    return "I/O error"


def _describe(exc: Exception) -> str:
    if isinstance(exc, apsw.FullError):
        return f"disk full: {exc}"
    if isinstance(exc, apsw.ReadOnlyError):
        return f"read-only: {exc}"
    if isinstance(exc, apsw.IOError):
        return f"I/O error: {exc}"
    return f"{type(exc).__name__}: {exc}"[:300]
