"""The scheduler actor: what to fetch and when, within the weight budget of each egress IP.

It discovers the trading USDT perpetuals, compares them with the database (read-only), plans
backfill (new symbols, tails, holes), and at every interval boundary (server time) plans the
fetch of each just-closed candle, then once more after the finality window. It hands page tasks to
the downloader pool, holds a lease on each, and counts a task done only when the writer announces
its rows committed. It owns the request-weight budgets: one per egress group (`core/egress.py`),
each group's downloaders on their own tasks socket, so a task goes to a group whose IP has room
and a 429/418 holds only that group. Its state can always be rebuilt from the
database and the exchange: a restarted scheduler simply plans again.

History older than the archive horizon goes to the exchange's bulk archive when one is
configured (`core/archive_queue.py` keeps those files and says what falls back to REST): archive
tasks go out up to `archive.concurrency` at a time, ahead of REST work but outside the weight
budget, so they never take weight a boundary fetch needs.

Its ideas live in seven modules: this one (the loop, results and announcements),
`scheduler_dispatch.py` (release within the budgets, leases, retries), `scheduler_discovery.py`
(symbols, and where 3d, 1w and 1M candles open), `scheduler_backfill.py` (the planning pass),
`scheduler_live.py` (the boundaries), `scheduler_report.py` (progress and the end of `--once`)
and `scheduler_metrics.py` (boundary lag), the last six as mixins.

It never writes the database and never fetches klines itself.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import zmq

from .. import config as cfg
from .. import exchange
from ..core import backlog, boundaries
from ..core.alignment import Alignment
from ..core.archive_queue import ArchiveQueue
from .base import Actor
from .scheduler_backfill import BackfillPlanning
from .scheduler_discovery import Discovery
from .scheduler_dispatch import Dispatch
from .scheduler_live import LiveEdge
from .scheduler_metrics import SchedulerMetrics
from .scheduler_report import Reporting
from ..core.budget import reserved_weight
from ..core.egress import EgressBudgets
from ..core.clock import ServerClock, local_ms
from ..messages import ClockSync, Committed, SymbolInfo, TaskResult, WriteFailed
from ..core.tasks import TaskBook, TaskState

CLOCK_WAIT_S = 3.0
RESULT_WAIT_S = 10.0
MAX_NAMED_DOWNLOADERS = 256  # downloader names counted per result (they come over the wire)


class Scheduler(Dispatch, Discovery, BackfillPlanning, LiveEdge, Reporting, SchedulerMetrics, Actor):
    poll_ms = 20

    # -- sockets and state ---------------------------------------------------------------------
    def setup(self) -> None:
        e = self.config.endpoints
        self.groups = [g.name for g in cfg.egress_groups(self.config)]
        # One tasks socket per egress group: where a task goes decides whose IP pays for it.
        self.tasks_out = [self.socket(zmq.PUSH, cfg.tasks_endpoint(self.config, i), bind=True, hwm=1)
                          for i in range(len(self.groups))]
        self.results_in = self.socket(zmq.PULL, e.results, bind=True)
        # Downloaders on other hosts (curve.py) join their group's socket (`remote.egress` there),
        # so that group's budget counts them.
        for i, sock in enumerate(self.tasks_out):
            self.serve_remote(sock, "tasks", cfg.remote_tasks_port(self.config, i))
        self.serve_remote(self.results_in, "results")
        self.bus = self.socket(zmq.SUB, e.bus_sub, subscribe=b"")
        self.writer = self.socket(zmq.PUSH, e.writer, hwm=1000)
        self.on(self.results_in, self._on_result)
        self.on(self.bus, self._on_bus)

        c = self.config
        self.mode = c.mode
        self.clock = ServerClock()
        # Time-sync and exchangeInfo go out through the first group: its budget keeps their reserve.
        self.budgets = EgressBudgets(self.groups, c.weight.limit_per_minute or 2400, c.weight.usable_fraction,
                                     reserved_per_minute=reserved_weight(c.live.clock_samples, c.symbols.rediscover_s))
        self.book = TaskBook(lease_ms=int(c.downloader.lease_s * 1000), max_attempts=c.downloader.max_attempts)
        self.http = exchange.session(c.exchange, cfg.egress_groups(c)[0])
        self.trading: dict[str, SymbolInfo] = {}
        self.halted: dict[str, SymbolInfo] = {}  # suspended, not delisted: history only, nothing live
        self.halted_planned: set[str] = set()  # halted symbols whose history was planned once
        # Where 3d, 1w and 1M candles open: learned from stored candles or the exchange (`_learn`).
        self.alignment = Alignment(c.klines.intervals, c.klines.phase_3d_days)
        self.alignment_read_stored = False
        self.known_symbols = False
        self.started = time.monotonic()
        self.started_local_ms = local_ms()
        self.next_discovery = 0.0
        self.next_plan = 0.0
        self.next_progress = 0.0
        self.next_boundary_ms: int | None = None
        self.open_backfill: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.recently_done: OrderedDict[str, TaskState] = OrderedDict()
        self.tallies: dict[tuple[int, str], boundaries.BoundaryTally] = {}  # (boundary, interval)
        self.unreleased: defaultdict[int, int] = defaultdict(int)  # boundary -> queued fetch weight
        self.backfill_total = 0
        self.backfill_done = 0
        self.backfill_open = 0
        self.candles_done = 0
        self.backfill_started = 0.0
        self.planned_once = False
        self.generation = 0
        self.backlog = backlog.Backlog(c.downloader.page_limit)
        # None: no archive in this configuration (history over REST only).
        self.archive = (ArchiveQueue(concurrency=c.archive.concurrency, horizon_days=c.archive.horizon_days)
                        if cfg.archive_url(c) else None)
        self.coverage = backlog.Coverage()
        self.planning: Iterator[None] | None = None
        self.plan_again = False
        self.pass_now_ms = 0  # the server time the latest planning pass planned up to
        # Set when the first ClockSync corrects a clock that passes had planned on: the server
        # time those passes stopped at, so the next pass adds the tail of tables still being
        # filled (they are skipped, and boundaries restart from the exchange's time).
        self.tail_from_ms: int | None = None
        self.plan_busy_s = 0.0
        self.slice_started = 0.0
        self.discovery: Future | None = None
        self.discovery_pool = ThreadPoolExecutor(1, thread_name_prefix="discovery")
        self.results_by: dict[str, int] = {}  # downloader name -> results (here or on another host)
        self.holding = False  # release held back: too many results wait for the writer
        self.writer_heard = time.monotonic()
        self.writer_started_ms = 0
        self.results_due: dict[str, float] = {}  # task id -> when it was committed, result unread
        self.slowest_tick_s = 0.0  # since the last progress line
        self.latest_progress = None  # messages.Progress, sent in each heartbeat (scheduler_report.py)
        self.pass_slowest_s = 0.0  # since the current planning pass began

    # -- the loop ------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        started = time.monotonic()
        if not self.clock.synced and now - self.started < CLOCK_WAIT_S and self.mode != "once":
            return  # boundaries need the server clock; backfill can wait a moment for it too
        if self.discovery is not None or now >= self.next_discovery:
            self._discover(now)
        if self.known_symbols and self.mode != "stream-only":
            if self.planning is None and now >= self.next_plan:
                self.planning = self._planning_pass()
                self.next_plan = now + self.config.symbols.rediscover_s
            if self.planning is not None:
                self._advance_planning()
            self._refill()
        # Boundaries only on the exchange's clock: one planned on a guessed clock fetches candles
        # of some other minute and reports them as a boundary (CI saw its lag in the metrics).
        # Meanwhile the WebSocket's closes are stored; the first sync starts boundaries a
        # re-check window before this process did (scheduler_live.py).
        if self.known_symbols and self.mode != "once" and self.clock.synced:
            self._plan_boundaries()
        self._expire_leases()
        self._dispatch()
        self._note_holding()
        self._check_late()
        if now >= self.next_progress:
            self._progress(now)
        if (self.mode == "once" and self.planned_once and self.planning is None and not len(self.backlog)
                and self.book.open_count() == 0 and not (self.archive and len(self.archive))
                and not self._results_due(now)):
            self._finish_once()
        took = time.monotonic() - started
        self.slowest_tick_s = max(self.slowest_tick_s, took)
        self.pass_slowest_s = max(self.pass_slowest_s, took)

    def _results_due(self, now: float) -> bool:
        """Results of committed tasks not read yet (one lost on the way is forgotten after 10 s)."""
        for task_id, since in list(self.results_due.items()):
            if now - since > RESULT_WAIT_S:
                del self.results_due[task_id]
        return bool(self.results_due)

    def poll_timeout_ms(self) -> int:
        return self.poll_ms

    # -- results and announcements ------------------------------------------------------------
    def _on_result(self, sock: zmq.Socket) -> None:
        for _ in range(1000):
            if not sock.poll(0):
                return
            msg = self.receive(sock)
            if isinstance(msg, TaskResult):
                self._result(msg)
            elif msg is not None:
                self.log.warning("unexpected_message", socket="results", kind=type(msg).__name__, action="dropped")

    def _result(self, r: TaskResult) -> None:
        self.results_due.pop(r.task_id, None)
        if r.by not in self.results_by and len(self.results_by) < MAX_NAMED_DOWNLOADERS:
            self.results_by[r.by] = 0  # names come over the wire: a bounded set
            self.log.info("downloader_joined", name=r.by[:64], downloaders=len(self.results_by))
        if r.by in self.results_by:
            self.results_by[r.by] += 1
        if self.archive is not None and self.archive.owns(r.task_id):
            self._archive_result(r)
            return
        server_now = self.clock.now_ms()
        weight = self.budgets.weight_of(r.task_id)
        sent_to = self.budgets.settle(r.task_id, r.requested_at_ms, server_now)
        group = r.egress if r.egress in self.budgets.owner else sent_to
        if group is not None and r.weight_used_1m >= 0:
            # A refused request (429/418) adds no weight of its own to the exchange's count.
            own = weight if r.status not in ("rate_limited", "banned") else 0
            shared = self.budgets.observe(group, r.weight_used_1m, r.requested_at_ms or server_now, server_now, own)
            if shared is not None:
                keep, gone, evidence = shared
                self.log.warning("egress_shared_ip", groups=f"{keep},{gone}", **evidence,
                                 action=f"one budget for both from now on ({keep}'s)")
        if r.status == "ok":
            st = self.book.result_ok(r.task_id, r.candles, server_now)
            if st is None:
                st = self.recently_done.get(r.task_id)
                if st is not None and not st.result_ok:
                    # Committed before its result came (an empty page, a quick writer): its
                    # candles count now, or the progress figures would miss them.
                    st.result_ok, st.candles = True, r.candles
                    self.candles_done += r.candles
            if st is not None and r.candles == 0 and st.kind == "hole":
                self._empty_hole(st)
            if st is not None and r.missing and st.task.priority == "backfill":
                self._page_gaps(st.task, r.missing)
            return
        if r.status in ("rate_limited", "banned"):
            # Any float is safe here (budget.hold_until_ms): a hostile Retry-After was already
            # turned into "next window" or a capped ban by fetch.retry_after_s.
            group = group or self.budgets.first
            pause_ms = max(0, self.budgets.block(group, r.retry_after_s, server_now) - server_now)
            paused = [g for g in self.groups if self.budgets.owner[g] == self.budgets.owner[group]]
            self.log.warning("throttled", status=r.status, retry_after_s=r.retry_after_s, egress=group,
                             detail=r.detail[:160],
                             action=f"dispatch to {','.join(paused)} paused for {pause_ms / 1000:.1f}s")
            # The task itself goes to another group at once if one is not held.
            delay_ms = pause_ms if self.budgets.held_everywhere(server_now) else 0
            self._retry(r.task_id, server_now, delay_ms, r.status, count_attempt=False)
            return
        if r.status == "not_final":
            delay = self.config.live.not_final_retry_ms
        else:
            st = self.book.states.get(r.task_id)
            attempt = st.task.attempt if st else 1
            delay = min(500 * 2 ** (attempt - 1), 30_000)
        st = self._retry(r.task_id, server_now, delay, f"{r.status}: {r.detail}"[:300])
        if st is None and r.task_id in self.book.failed:
            self.log.error("task_given_up", task_id=r.task_id, status=r.status, detail=r.detail[:200],
                           action="reported in summary")
            self._given_up(self.book.failed[r.task_id])
        else:
            self.log.info("task_retry", task_id=r.task_id, status=r.status, detail=r.detail[:160],
                          action=f"retry in {delay / 1000:.1f}s")

    def _on_bus(self, sock: zmq.Socket) -> None:
        for _ in range(1000):
            if not sock.poll(0):
                return
            msg = self.receive(sock)
            if isinstance(msg, Committed):
                self._writer_heard(msg.writer_started_ms)
                for task_id in msg.task_ids:
                    if self.archive is not None and self.archive.committed(task_id) is not None:
                        if not self.backfill_started:
                            self.backfill_started = time.monotonic()
                        continue
                    st = self.book.committed(task_id)
                    if st is not None:
                        if not st.result_ok:
                            # Committed before its result arrived (an empty page is committed at
                            # once): --once must still read the result (an empty hole is asked again).
                            self.results_due[task_id] = time.monotonic()
                        self._done(st, msg.committed_at_ms)
            elif isinstance(msg, WriteFailed):
                server_now = self.clock.now_ms()
                for task_id in msg.task_ids:
                    self._retry(task_id, server_now, 1000, f"write failed: {msg.error}"[:300])
                self.log.warning("write_failed", tasks=len(msg.task_ids), error=msg.error[:200],
                                 action="tasks re-issued in 1.0s")
            elif isinstance(msg, ClockSync):
                first = not self.clock.synced
                offset_before = self.clock.offset_ms
                self.clock.update(msg)
                # Weight released on the old clock counts in the exchange's minutes, not ours.
                self.budgets.shift(int(self.clock.offset_ms - offset_before), self.clock.now_ms())
                if first and (self.planned_once or self.planning is not None):
                    # Backfill was planned on local time while the clock was unknown: plan the
                    # tails again at once with the exchange's.
                    self.next_plan = 0.0
                    self.plan_again = self.planning is not None
                    self.tail_from_ms = self.pass_now_ms

    def _writer_heard(self, started_ms: int) -> None:
        self.writer_heard = time.monotonic()
        if started_ms == self.writer_started_ms or started_ms == 0:  # 0: a sender that does not say
            return
        restarted = self.writer_started_ms != 0
        self.writer_started_ms = started_ms
        if not restarted:
            return
        # Pages fetched for the writer's earlier run may have died with it: fetch them again now.
        server_now = self.clock.now_ms()
        if self.archive is not None:
            self.archive.reissue_uncommitted(server_now)
        waiting = [tid for tid in self.book.in_flight if self.book.states[tid].result_ok]
        for task_id in waiting:
            self.budgets.settle(task_id, 0, server_now)
            self._retry(task_id, server_now, 0, "writer restarted", count_attempt=False)
        self.log.info("writer_restarted", reissued=len(waiting), action="uncommitted pages fetched again")

    def _done(self, st: TaskState, committed_at_ms: int) -> None:
        self.recently_done[st.task.task_id] = st
        while len(self.recently_done) > 20_000:
            self.recently_done.popitem(last=False)
        self.candles_done += st.candles
        self._closed(st)
        self._boundary_lag(st, self.clock.now_ms(committed_at_ms))
        tally = self.tallies.get((st.boundary_ms, st.task.interval)) if st.kind in boundaries.FINAL_KINDS else None
        if tally is not None and tally.confirmed(self.clock.now_ms(committed_at_ms)):
            self.log.info("boundary_done", **tally.summary())
            del self.tallies[(st.boundary_ms, st.task.interval)]

    def _given_up(self, st: TaskState) -> None:
        self._closed(st)
        key = (st.boundary_ms, st.task.interval)
        tally = self.tallies.get(key) if st.kind in boundaries.FINAL_KINDS else None
        if tally is not None and tally.given_up():
            self.log.warning("boundary_done", **tally.summary())
            del self.tallies[key]

    def _closed(self, st: TaskState) -> None:
        if st.task.priority == "backfill":
            key = (st.task.symbol, st.task.interval)
            self.open_backfill[key] = max(0, self.open_backfill[key] - 1)
            if not self.open_backfill[key]:
                del self.open_backfill[key]
            self.backfill_open = max(0, self.backfill_open - 1)
            self.backfill_done += 1

    def teardown(self) -> None:
        self.discovery_pool.shutdown(wait=False, cancel_futures=True)
        self.http.close()
