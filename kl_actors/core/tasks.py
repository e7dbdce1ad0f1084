"""Task bookkeeping for the scheduler (pure: `now` is passed in): queue, leases, completion.

A task is done only when the writer has announced its rows committed; the downloader's own "ok"
only extends the lease while the commit is on its way. A lease that expires puts the task back in
the queue (a downloader died, a message was lost): upserts are idempotent, so a duplicate is
harmless. Failed attempts go back with a delay, and after `max_attempts` the task is given up and
reported. Boundary tasks go ahead of backfill, in the order `boundaries.rank` gives.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field

import msgspec

from . import boundaries
from ..messages import DownloadTask

FAILED_KEPT = 1000  # given-up tasks kept for the report; older ones are only counted


@dataclass
class TaskState:
    task: DownloadTask
    kind: str = "backfill"               # new / tail / hole / boundary / recheck / single
    boundary_ms: int = 0
    not_before_ms: int = 0
    lease_until_ms: int = 0
    result_ok: bool = False
    candles: int = 0
    empty_answers: int = 0
    last_error: str = ""
    created_ms: int = 0
    leases_kept: int = 0                 # lease renewed while the writer was silent


@dataclass
class TaskBook:
    lease_ms: int
    max_attempts: int
    ready: list = field(default_factory=list)               # heap of (rank, seq, task_id)
    delayed: list = field(default_factory=list)             # heap of (not_before_ms, seq, task_id)
    states: dict[str, TaskState] = field(default_factory=dict)
    in_flight: set[str] = field(default_factory=set)
    done: int = 0
    failed: OrderedDict[str, TaskState] = field(default_factory=OrderedDict)  # the latest given up
    failed_total: int = 0
    _seq: itertools.count = field(default_factory=itertools.count)

    @staticmethod
    def _rank(st: TaskState) -> tuple:
        t = st.task
        return boundaries.rank(t.priority, st.boundary_ms, t.interval, t.symbol)

    def _queue(self, st: TaskState) -> None:
        entry_id = st.task.task_id
        if st.not_before_ms > 0:
            heapq.heappush(self.delayed, (st.not_before_ms, next(self._seq), entry_id))
        else:
            heapq.heappush(self.ready, (self._rank(st), next(self._seq), entry_id))

    def add(self, state: TaskState) -> None:
        self.states[state.task.task_id] = state
        self._queue(state)

    def open_count(self) -> int:
        return len(self.states)

    def _promote(self, now_ms: int) -> None:
        while self.delayed and self.delayed[0][0] <= now_ms:
            _, _, task_id = heapq.heappop(self.delayed)
            st = self.states.get(task_id)
            if st is not None and task_id not in self.in_flight:
                heapq.heappush(self.ready, (self._rank(st), next(self._seq), task_id))

    def next_ready(self, now_ms: int) -> TaskState | None:
        """The best task whose time has come; it stays queued until `dispatched`."""
        self._promote(now_ms)
        while self.ready:
            task_id = self.ready[0][2]
            if task_id in self.states and task_id not in self.in_flight:
                return self.states[task_id]
            heapq.heappop(self.ready)  # given up, committed or already out: a stale entry
        return None

    def dispatched(self, task_id: str, now_ms: int) -> None:
        if self.ready and self.ready[0][2] == task_id:
            heapq.heappop(self.ready)
        self.in_flight.add(task_id)
        self.states[task_id].lease_until_ms = now_ms + self.lease_ms

    def result_ok(self, task_id: str, candles: int, now_ms: int) -> TaskState | None:
        st = self.states.get(task_id)
        if st is None:
            return None
        st.result_ok = True
        st.candles = candles
        st.lease_until_ms = now_ms + self.lease_ms  # waiting for the writer's commit
        return st

    def committed(self, task_id: str) -> TaskState | None:
        st = self.states.pop(task_id, None)
        if st is None:
            return None
        self.in_flight.discard(task_id)
        self.done += 1
        return st

    def retry(self, task_id: str, now_ms: int, delay_ms: int, error: str,
              count_attempt: bool = True) -> TaskState | None:
        """Put a task back after `delay_ms`; returns its state, or None if given up (or unknown)."""
        st = self.states.get(task_id)
        if st is None:
            return None
        self.in_flight.discard(task_id)
        st.last_error = error
        st.result_ok = False
        attempt = st.task.attempt + (1 if count_attempt else 0)
        if attempt > self.max_attempts:
            self.states.pop(task_id)
            self.failed[task_id] = st
            self.failed_total += 1
            while len(self.failed) > FAILED_KEPT:
                self.failed.popitem(last=False)
            return None
        st.task = msgspec.structs.replace(st.task, attempt=attempt)
        st.not_before_ms = now_ms + delay_ms
        self._queue(st)
        return st

    def expired(self, now_ms: int) -> list[str]:
        return [tid for tid in self.in_flight if self.states[tid].lease_until_ms <= now_ms]

    def drop_symbol(self, symbol: str) -> int:
        """Forget queued tasks of a symbol (delisted); in-flight ones finish."""
        gone = [tid for tid, st in self.states.items() if st.task.symbol == symbol and tid not in self.in_flight]
        for tid in gone:
            self.states.pop(tid)
        return len(gone)
