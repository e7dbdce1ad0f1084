"""The scheduler's live edge (a part of the scheduler actor, by idea).

At every interval boundary (server time, on the phases the exchange's own candles show) it plans
the fetch of each just-closed candle, once or twice (`core/boundaries`), tallies when each
boundary is confirmed and logs a late one; minutes of boundaries passed unseen (suspend and
resume) become one fetch of each interval's newest candle and a new plan. A mixin of
`Scheduler`: it uses the scheduler's state and never runs on its own.
"""

from __future__ import annotations

from ..core import boundaries, intervals
from ..core.budget import weight_for_limit
from ..core.tasks import TaskState
from ..messages import DownloadTask

# More boundaries than this passed unseen: a clock jump, not a late tick.
CLOCK_JUMP_MS = 2 * intervals.MINUTE_MS


class LiveEdge:
    def _plan_boundaries(self) -> None:
        configured = self.config.klines.intervals
        server_now = self.clock.now_ms()
        if self.next_boundary_ms is None:
            # Boundaries start a re-check window before this process did: a candle that closed
            # while the clock or the symbols were still unknown, or so shortly before that
            # backfill may have stored a provisional copy, still gets its fetch and re-check.
            since = self.clock.now_ms(self.started_local_ms) - self.config.live.final_recheck_ms
            self.next_boundary_ms = self._next_boundary(since)
        live = self.config.live
        if server_now - self.next_boundary_ms > CLOCK_JUMP_MS:
            self._clock_jumped(server_now)
        while server_now >= self.next_boundary_ms + live.boundary_margin_ms:
            boundary = self.next_boundary_ms
            closing = [i for i in intervals.closing_at(boundary, configured, self.alignment.all_phases())
                       if self.alignment.usable(i)]
            if not closing:  # only an interval the exchange's candles do not align with (`_learn`)
                self.next_boundary_ms = self._next_boundary(boundary)
                continue
            double = boundaries.plan_fetches(closing, len(self.trading), sum(self.unreleased.values()),
                                             self.budgets.left_in_minute(server_now), live.final_recheck_ms)
            for interval in closing:
                open_ms = intervals.prev_open(interval, boundary)
                for symbol in self.trading:
                    for fetch in boundaries.fetches(double[interval], live.final_recheck_ms):
                        self._add_boundary(symbol, interval, open_ms, boundary, fetch.kind,
                                           boundary + fetch.delay_ms if fetch.delay_ms else 0)
                if self.trading:
                    self.tallies[(boundary, interval)] = boundaries.BoundaryTally(boundary, interval,
                                                                                 len(self.trading))
            self.log.info("boundary", boundary_ms=boundary, intervals=",".join(closing),
                          candles=len(closing) * len(self.trading),
                          refetched=",".join(i for i in closing if double[i]) or "-",
                          late_ms=server_now - boundary)
            self.next_boundary_ms = self._next_boundary(boundary)

    def _clock_jumped(self, server_now: int) -> None:
        """Minutes of boundaries passed unseen (suspend and resume, a bad serverTime): fetch each
        interval's newest closed candle once, not every missed boundary for every symbol in one
        tick; the planning pass fills what lies between as backfill."""
        configured = self.config.klines.intervals
        edge = server_now - self.config.live.boundary_margin_ms
        self.log.warning("clock_jump", missed_s=round((server_now - self.next_boundary_ms) / 1000, 1),
                         action="newest candle of each interval now, the rest by backfill")
        for interval in filter(self.alignment.usable, configured):
            open_ms = intervals.last_closed_open(interval, edge, self.alignment.phase(interval))
            boundary = intervals.next_open(interval, open_ms)
            # Closed long enough ago to be final: one fetch now; else one at the re-check time.
            at_ms = max(0, boundary + self.config.live.final_recheck_ms - server_now)
            for symbol in self.trading:
                self._add_boundary(symbol, interval, open_ms, boundary, boundaries.SINGLE,
                                   server_now + at_ms if at_ms else 0)
            if self.trading:
                self.tallies[(boundary, interval)] = boundaries.BoundaryTally(boundary, interval, len(self.trading))
        self.next_boundary_ms = self._next_boundary(edge)
        self.next_plan = 0.0

    def _next_boundary(self, after_ms: int) -> int:
        """The first close of any configured interval after `after_ms`, on the exchange's phases."""
        return min(intervals.next_boundary(i, after_ms, self.alignment.phase(i)) for i in self.config.klines.intervals)

    def _add_boundary(self, symbol: str, interval: str, open_ms: int, boundary: int, kind: str,
                      not_before_ms: int) -> None:
        task = DownloadTask(task_id=f"{kind}:{symbol}:{interval}:{open_ms}", symbol=symbol, interval=interval,
                            start_ms=open_ms, end_ms=open_ms, limit=1, priority="boundary")
        self.book.add(TaskState(task=task, kind=kind, boundary_ms=boundary, not_before_ms=not_before_ms,
                                created_ms=self.clock.now_ms()))
        self.unreleased[boundary] += weight_for_limit(1)

    def _check_late(self) -> None:
        """Log a boundary not REST-confirmed within the deadline once; forget it long after."""
        server_now = self.clock.now_ms()
        deadline_ms = int(self.config.live.boundary_deadline_s * 1000)
        for key, tally in list(self.tallies.items()):
            if tally.is_late(server_now, deadline_ms):
                tally.late_logged = True
                self.log.warning("boundary_late", boundary_ms=tally.boundary_ms, interval=tally.interval,
                                 unconfirmed=tally.open, confirmed=len(tally.lags_ms),
                                 after_s=round((server_now - tally.boundary_ms) / 1000, 1),
                                 action="still queued; the WebSocket close stands in")
            elif server_now - tally.boundary_ms > max(10 * deadline_ms, 3_600_000):
                del self.tallies[key]  # its tasks were dropped (symbol delisted): stop tracking
