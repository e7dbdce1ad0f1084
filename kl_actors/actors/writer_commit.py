"""The writer's transaction (a part of the writer actor, by idea).

A group of checked items is applied in one transaction (`Store.upsert_*`, RETURNING for live
batches, REST answers for recent candles kept only if no later request was stored), then
COMMIT, then `Committed` on the bus, then the stored live candles on the feed: nothing is
announced before it is durable. If the transaction fails, it is rolled back and each item is
tried alone, so only the culprit fails (`WriteFailed`); a database that refuses writes is the
hold's (`writer_hold.py`). A mixin of `Writer`: it uses the writer's state and never runs on its own.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import NamedTuple

import zmq

from .. import messages
from ..messages import ArchiveBatch, KlineBatch, SymbolsUpdate
from .base import now_ms
from .writer_hold import HOLD_ERRORS, describe

BEACON_EVERY_S = 1.0       # an idle writer's "alive, nothing waiting" on the bus


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


class Committing:
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
