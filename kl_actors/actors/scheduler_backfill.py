"""The scheduler's backfill planning (a part of the scheduler actor, by idea).

A planning pass walks every table a slice at a time (`PLAN_SLICE_S` per loop turn), proves history
complete incrementally (`core/backlog.Coverage`), keeps what is missing as ranges
(`core/backlog.Backlog`) and cuts pages off them only as the queue drains; an empty answer inside
history is asked again later before it becomes an exchange hole. A mixin of `Scheduler`: it uses
the scheduler's state and never runs on its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator


from ..core import backlog, intervals, planner
from ..messages import DownloadTask, ExchangeHole
from ..store import Store, StoreError
from ..core.tasks import TaskState

# Planning runs a slice at a time between the loop's other work, so heartbeats, results and
# boundaries never wait for it however large the database.
PLAN_SLICE_S = 0.05
# Backfill tasks kept queued in the book; the rest waits as ranges in the backlog.
QUEUED_BACKFILL = 2000


class BackfillPlanning:
    def _open_store(self) -> Store | None:
        path = self.config.database.path
        if not os.path.exists(path):
            return None
        try:
            return Store.open_readonly(self.config.database, path)
        except StoreError as exc:
            self.log.warning("inventory_unreadable", path=path, error=str(exc)[:200], action="planning as empty")
            return None

    def _advance_planning(self) -> None:
        started = self.slice_started = time.monotonic()
        deadline = started + PLAN_SLICE_S
        try:
            while time.monotonic() < deadline:
                next(self.planning)
        except StopIteration:
            self.planning = None
            if self.plan_again:
                self.plan_again, self.next_plan = False, 0.0
        finally:
            self.plan_busy_s += time.monotonic() - started

    def _planning_pass(self) -> Iterator[None]:
        """One look at every table, a slice per tick: what is missing goes to the backlog as ranges.

        A table already being filled is skipped (its gaps are planned once it is done); a table's
        history proven complete by an earlier pass is not read again (`backlog.Coverage`)."""
        server_now = self.pass_now_ms = self.clock.now_ms()
        tail_from = self.tail_from_ms  # planned on a clock the first ClockSync corrected
        k = self.config.klines
        started = time.monotonic()
        self.plan_busy_s = self.pass_slowest_s = 0.0
        self.generation += 1
        tables_planned = rows_checked = pages = 0
        store = self._open_store()
        try:
            tables = store.kline_tables() if store else {}
            yield
            # A halted symbol's history is fetched once (a new table); its tail waits until it
            # trades again, so a halt never costs a request per pass (once per process, even when
            # the exchange has nothing in the window and no table appears).
            fresh_halted = {s: info for s, info in self.halted.items()
                            if s not in tables and s not in self.halted_planned}
            self.halted_planned.update(fresh_halted)
            plannable = [*self.trading.items(), *fresh_halted.items()]
            for symbol, info in plannable:
                for interval in k.intervals:
                    if symbol not in self.trading and symbol not in self.halted:
                        break  # delisted while this pass ran
                    if not self.alignment.usable(interval):
                        continue  # the exchange's candles do not open where we would ask (`_learn`)
                    if ((symbol, interval) in self.open_backfill or self.backlog.has(symbol, interval)
                            or (self.archive is not None and self.archive.has(symbol, interval))):
                        # Still being filled, up to where an earlier pass planned; a pass on a
                        # clock that was behind the exchange's stopped short of now.
                        if tail_from is not None:
                            pages += self._queue(self._tail_since(symbol, interval, tail_from, server_now), server_now)
                        continue
                    first = last = None
                    holes: list[tuple[int, int]] = []
                    known: list[tuple[int, int]] = []
                    # One query per step: while the writer creates tables, each query of this
                    # reader may reload the whole schema (~0.1 s at 8,000 tables).
                    if store is not None and interval in tables.get(symbol, {}):
                        first, last = store.first_last(symbol, interval)
                        yield
                    if last is not None:
                        found = []
                        for lo, hi in backlog.chunks(interval, self.coverage.scan_from(symbol, interval, first), last):
                            expected = intervals.count_between(interval, lo, hi)
                            short = store.count_between(symbol, interval, lo, hi) < expected
                            yield
                            if short:
                                found.extend(store.gaps_between(symbol, interval, lo, hi))
                                yield
                            rows_checked += expected
                        known = store.exchange_holes(symbol, interval)
                        yield
                        holes = planner.minus_known(interval, planner.merge_adjacent(interval, found), known)
                        self.coverage.proven(symbol, interval, first, last, holes)
                    # A table's own candles say where its 3d or 1w candles open.
                    phase = intervals.phase_of(interval, last) if last is not None else self.alignment.phase(interval)
                    ranges = planner.plan_table(
                        symbol, interval, now_ms=server_now, onboard_ms=info.onboard_ms,
                        depth=k.depth.get(interval, 1000), since_listing=k.since_listing,
                        last_stored_ms=last, holes=holes, first_stored_ms=first, exchange_holes=known,
                        phase_ms=phase)
                    pages += self._queue(ranges, server_now)
                    tables_planned += 1
                    yield
        finally:
            if store:
                store.close()
        if tail_from is not None and self.tail_from_ms == tail_from:
            self.tail_from_ms = None
        self.planned_once = True
        self.backfill_total += pages
        if pages and not self.backfill_started:
            self.backfill_started = time.monotonic()
        busy_ms = (self.plan_busy_s + time.monotonic() - self.slice_started) * 1000
        self.log.info("planned", tasks=pages, symbols=len(self.trading), intervals=",".join(k.intervals),
                      tables=tables_planned, rows_checked=rows_checked, busy_ms=round(busy_ms, 1),
                      per_table_ms=round(busy_ms / max(tables_planned, 1), 3),
                      seconds=round(time.monotonic() - started, 2),
                      slowest_tick_ms=round(self.pass_slowest_s * 1000, 1))

    def _queue(self, ranges: list, server_now: int) -> int:
        """Ranges to the backlog (the archive's part to the archive); returns the pages added."""
        if ranges and self.archive is not None:
            ranges = [rest for r in ranges for rest in self.archive.split(r, server_now)]
        return self.backlog.add(ranges) if ranges else 0

    def _tail_since(self, symbol: str, interval: str, planned_ms: int, server_now: int) -> list:
        """The closed candles after those a pass at server time `planned_ms` asked for."""
        phase = self.alignment.phase(interval)
        first = intervals.next_open(interval, intervals.last_closed_open(interval, planned_ms, phase))
        last = intervals.last_closed_open(interval, server_now, phase)
        return [planner.Range(symbol, interval, first, last, "tail")] if first <= last else []

    def _refill(self) -> None:
        """Cut pages off the backlog while the queue is short: tasks exist only shortly before
        they are released, whatever the plan's size."""
        want = QUEUED_BACKFILL - self.backfill_open
        if want <= 0 or not len(self.backlog):
            return
        for kind, symbol, interval, start, end in self.backlog.take(want):
            # Each page asks for exactly its candles: a short tail costs weight 1 (planner.page_limit).
            self._add_backfill(kind, symbol, interval, start, end, planner.page_limit(interval, start, end))

    def _add_backfill(self, kind: str, symbol: str, interval: str, start: int, end: int, limit: int,
                      empty_answers: int = 0, not_before_ms: int = 0) -> None:
        task_id = f"{kind}:{symbol}:{interval}:{start}-{end}:{self.generation}.{empty_answers}"
        task = DownloadTask(task_id=task_id, symbol=symbol, interval=interval, start_ms=start, end_ms=end,
                            limit=limit, priority="backfill")
        self.book.add(TaskState(task=task, kind=kind, empty_answers=empty_answers, not_before_ms=not_before_ms,
                                created_ms=self.clock.now_ms()))
        self.open_backfill[(symbol, interval)] += 1
        self.backfill_open += 1

    def _empty_hole(self, st: TaskState) -> None:
        """The exchange answered nothing for a range inside our history: confirm later, then record."""
        t = st.task
        if st.empty_answers >= 1:
            self.send(self.writer, ExchangeHole(symbol=t.symbol, interval=t.interval, start_ms=t.start_ms,
                                                end_ms=t.end_ms))
            self.log.info("exchange_hole_confirmed", symbol=t.symbol, interval=t.interval,
                          start_ms=t.start_ms, end_ms=t.end_ms, action="recorded, not requested again")
        else:
            # Asked again later, not at once: a blip of the exchange lasts seconds, and a hole once
            # recorded is never asked again.
            delay_ms = int(self.config.klines.hole_confirm_s * 1000)
            self._add_backfill("hole", t.symbol, t.interval, t.start_ms, t.end_ms, t.limit, empty_answers=1,
                               not_before_ms=self.clock.now_ms() + delay_ms)
            self.log.info("hole_empty_once", symbol=t.symbol, interval=t.interval, start_ms=t.start_ms,
                          end_ms=t.end_ms, action=f"asking again in {delay_ms / 1000:.0f}s before recording it")

    def _page_gaps(self, t: DownloadTask, missing: list[tuple[int, int]]) -> None:
        """A page with candles that skipped open times inside its range: the exchange has none
        there (maintenance, a closed market session). Recorded, so never asked again."""
        for start_ms, end_ms in missing:
            self.send(self.writer, ExchangeHole(symbol=t.symbol, interval=t.interval, start_ms=start_ms,
                                                end_ms=end_ms))
        self.log.info("exchange_hole_confirmed", symbol=t.symbol, interval=t.interval,
                      start_ms=missing[0][0], end_ms=missing[-1][1], ranges=len(missing),
                      source="page", action="recorded, not requested again")

