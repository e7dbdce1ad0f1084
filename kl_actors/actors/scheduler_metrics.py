"""The scheduler's metrics (a part of the scheduler actor, by idea): the gauges its heartbeat
carries (each egress budget's weight spent this minute and its limit, backfill pages left) and the
boundary lag of each candle whose final REST copy is committed. A mixin of `Scheduler`: it uses
the scheduler's state and never runs on its own; core/metrics.py has the families.
"""

from __future__ import annotations

from ..core import boundaries, intervals
from ..core.tasks import TaskState


class SchedulerMetrics:
    def measure(self) -> None:
        server_now = self.clock.now_ms()
        minute = server_now - server_now % intervals.MINUTE_MS
        # Distinct budgets only: two groups found on one IP share one, reported once (its owner).
        for name, budget in self.budgets.distinct():
            # Read only (a budget rolls over when it is next asked): a minute gone by spent nothing yet.
            self.metrics.set("weight_used", (name,), budget.spent if budget.window_start_ms >= minute else 0)
            self.metrics.set("weight_limit", (name,), budget.limit)
        self.metrics.set("backfill_tasks_remaining", (), self.backfill_open + self.backlog.pages_left)

    def _boundary_lag(self, st: TaskState, committed_server_ms: int) -> None:
        """A boundary candle's final copy is committed: close -> commit, on the exchange's clock."""
        if st.kind in boundaries.FINAL_KINDS and st.boundary_ms:
            self.metrics.observe("boundary_lag_seconds", (st.task.interval,),
                                 max(0, committed_server_ms - st.boundary_ms) / 1000)
