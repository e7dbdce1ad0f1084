"""The scheduler's dispatch (a part of the scheduler actor, by idea).

It hands ready tasks to the egress groups whose downloaders can take one, each within its
group's weight budget and never taking what this minute's own boundary fetches need; archive
files go first, outside the budget, up to `archive.concurrency`. It holds release back while
results wait for a stalled writer, re-issues tasks after a failure or an expired lease, and keeps
a lease whose page waits only for the writer. A mixin of `Scheduler`: it uses the scheduler's
state and never runs on its own.
"""

from __future__ import annotations

import time

import zmq

from ..core import boundaries, intervals
from ..core.budget import weight_for_limit
from ..core.tasks import TaskState
from ..messages import TaskResult

# A writer not heard for this long (no commit, no beacon) is stalled or dead: fetched pages it
# has not committed are waited for, not fetched again; a restarted writer gets them again.
WRITER_SILENT_S = 3.0
LEASES_KEPT_MAX = 10  # then a page waiting for a silent writer is fetched again anyway


class Dispatch:
    def _open_groups(self) -> list[int]:
        """Groups with a downloader ready to take a task (its socket would not block)."""
        return [i for i, sock in enumerate(self.tasks_out) if sock.getsockopt(zmq.EVENTS) & zmq.POLLOUT]

    def _dispatch(self) -> None:
        if self.archive is not None:
            self._dispatch_archive()
        while open_groups := self._open_groups():
            server_now = self.clock.now_ms()
            st = self.book.next_ready(server_now)
            if st is None:
                return
            if self._hold(st):
                return
            weight = weight_for_limit(st.task.limit)
            window = server_now - server_now % intervals.MINUTE_MS
            reserve = 0
            if self.mode != "once" and (st.task.priority != "boundary" or st.boundary_ms < window):
                # Older work never takes what this minute's own closes will need (the queue
                # ranks those first, so nothing fresh waits behind a task held back here).
                reserve = boundaries.reserve(window, self.next_boundary_ms or 0, self.unreleased.get(window, 0),
                                             len(self.trading), self.config.klines.intervals,
                                             self.alignment.all_phases())
            group = self.budgets.pick([self.groups[i] for i in open_groups], weight, reserve, server_now)
            if group is None:
                return
            if not self.send(self.tasks_out[self.groups.index(group)], st.task, block=False):
                return
            self.budgets.try_spend(group, weight, server_now, st.task.task_id)
            self.book.dispatched(st.task.task_id, server_now)
            if st.task.priority == "boundary":
                self._released(st.boundary_ms, weight)

    def _dispatch_archive(self) -> None:
        """Archive files: no weight, their own limit; a downloader takes them without a REST slot."""
        while open_groups := self._open_groups():
            task = self.archive.next_ready(self.clock.now_ms())
            if task is None:
                return
            if not self.send(self.tasks_out[open_groups[0]], task, block=False):
                # Not out: back to the queue through its lease (a moment), never lost.
                return

    def _archive_result(self, r: TaskResult) -> None:
        outcome = self.archive.result(r, self.clock.now_ms())
        # A file of a symbol delisted while it was out: its range is not asked over REST either.
        rest = [x for x in outcome.rest if x.symbol in self.trading or x.symbol in self.halted]
        if rest:
            self.backfill_total += self.backlog.add(rest)
        if not outcome.event:
            return
        fields = dict(file=outcome.file, status=r.status, detail=r.detail[:200], action=outcome.action)
        if outcome.event == "archive_file_gap":
            fields["missing"] = ",".join(f"{a}-{b}" for a, b in r.missing[:10])
            fields.pop("detail")
        if outcome.event == "archive_absent_fallback":
            self.log.info(outcome.event, **fields)
        else:
            self.log.warning(outcome.event, **fields)

    def _hold(self, st: TaskState) -> bool:
        """Backpressure: while `max_uncommitted` released tasks wait for the writer, release no more
        backfill (boundary fetches, one candle each, get four times the room). Memory stays bounded
        by pages that exist, not by how long the writer is away."""
        cap = self.config.downloader.max_uncommitted
        return len(self.book.in_flight) >= (cap if st.task.priority == "backfill" else 4 * cap)

    def _note_holding(self) -> None:
        """One line when release stops for the writer, one when it may go on (every tick: the
        stall can end with nothing left to release)."""
        cap = self.config.downloader.max_uncommitted
        out = len(self.book.in_flight)
        if not self.holding and out >= cap:
            self.holding = True
            self.log.warning("release_held", uncommitted=out, limit=cap, action="waiting for the writer to commit")
        elif self.holding and out < cap // 2:  # hysteresis: one line per stall, not per task
            self.holding = False
            self.log.info("release_resumed", uncommitted=out)

    def _released(self, boundary_ms: int, weight: int) -> None:
        left = self.unreleased.get(boundary_ms, 0) - weight
        if left > 0:
            self.unreleased[boundary_ms] = left
        else:
            self.unreleased.pop(boundary_ms, None)

    def _retry(self, task_id: str, server_now: int, delay_ms: int, error: str,
               count_attempt: bool = True) -> TaskState | None:
        """`book.retry`, keeping the count of boundary weight waiting to be released true."""
        was_out = task_id in self.book.in_flight
        st = self.book.retry(task_id, server_now, delay_ms, error, count_attempt=count_attempt)
        if st is not None and was_out and st.task.priority == "boundary":
            self.unreleased[st.boundary_ms] += weight_for_limit(st.task.limit)
        return st

    def _expire_leases(self) -> None:
        server_now = self.clock.now_ms()
        writer_silent = time.monotonic() - self.writer_heard > WRITER_SILENT_S
        if self.archive is not None:
            for task_id in self.archive.expired(server_now):
                self.log.warning("lease_expired", task_id=task_id, action="archive file sent again")
        for task_id in self.book.expired(server_now):
            st = self.book.states[task_id]
            if st.result_ok and writer_silent and st.leases_kept < LEASES_KEPT_MAX:
                st.leases_kept += 1  # its page waits in the writer's queue: fetching it again adds a copy
                st.lease_until_ms = server_now + self.book.lease_ms
                continue
            self.budgets.settle(task_id, 0, server_now)
            st = self._retry(task_id, server_now, 0, "lease expired", count_attempt=True)
            self.log.warning("lease_expired", task_id=task_id,
                             action="re-issued" if st else "given up")
            if st is None:
                self._given_up(self.book.failed[task_id])
