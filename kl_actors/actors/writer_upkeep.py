"""The writer's upkeep between commits (a part of the writer actor, by idea): tables made ahead
of their first batch, WAL checkpoints, the periodic summary line, and the `meta_tables` rows of
tables made before summaries existed (summed once, in slices: `Store.summarize_step`).

Tables: a `SymbolsUpdate` queues every table a trading symbol will need, made a few hundred per
transaction while nothing waits to be committed (readers reload the schema once per batch of
tables, not once per table). WAL: when idle, the writer checkpoints the WAL and truncates it, so
a file an outside reader made grow shrinks back; `database.wal_limit_mib` caps what a checkpoint
leaves behind otherwise.

A mixin of `Writer`: it uses the writer's state and never runs on its own; none of it ever
delays a pending batch (each step runs only when nothing is pending, or is skipped).
"""

from __future__ import annotations

import time

import apsw

from ..core.symbols import SymbolError
from ..messages import SymbolsUpdate
from .writer_hold import describe

SUMMARY_EVERY_S = 10.0
CREATE_SLICE_S = 0.2       # tables made ahead of their first batch, per transaction
CHECKPOINT_EVERY_S = 5.0
CHECKPOINT_IDLE_S = 1.0    # no commit for this long: the WAL may be truncated
CHECKPOINT_BUSY_MS = 50    # how long a truncating checkpoint may wait for readers
WAL_NOTABLE_BYTES = 4 * 2 ** 20  # SQLite's own checkpoints keep the WAL near this (1000 pages)
SUMMARIZE_SLICE_S = 0.05   # summing old tables' rows, per tick while idle (far below a heartbeat)


class Upkeep:
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

    def _summarize_some(self, now: float) -> None:
        """Sum a slice of the tables that have no `meta_tables` row (a file from before summaries):
        at most SUMMARIZE_SLICE_S per tick, only while nothing is pending."""
        try:
            finished = self.store.summarize_step(now + SUMMARIZE_SLICE_S, time.monotonic)
        except apsw.Error as exc:
            self.log.warning("summarize_failed", error=describe(exc), action="trying again next tick")
            return
        for table in finished:
            self.summarized_tables += 1
            self.log.debug("table_summarized", table=table)
        if not self.store.summaries_pending and self.summarized_tables:
            self.log.info("summaries_done", tables=self.summarized_tables)
            self.summarized_tables = 0

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
            self.log.debug("checkpoint_skipped", error=describe(exc))
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
        self.requests.forget_old()
        self.summary_rows = 0
        self.summary_at = now + SUMMARY_EVERY_S
