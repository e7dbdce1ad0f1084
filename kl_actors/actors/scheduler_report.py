"""The scheduler's reports (a part of the scheduler actor, by idea): the progress line every
`PROGRESS_EVERY_S`, and the end of a `--once` run (its summary, what was not fetched, the exit
code). A mixin of `Scheduler`: it uses the scheduler's state and never runs on its own.
"""

from __future__ import annotations

import time

PROGRESS_EVERY_S = 5.0
EXIT_INCOMPLETE = 3  # --once: something could not be fetched


class Reporting:
    def _progress(self, now: float) -> None:
        self.next_progress = now + PROGRESS_EVERY_S
        self._results_due(now)  # forgets results lost on the way
        open_backfill = self.backfill_open + self.backlog.pages_left
        archive_left = len(self.archive) if self.archive is not None else 0
        slowest_ms, self.slowest_tick_s = round(self.slowest_tick_s * 1000, 1), 0.0
        if not self.backfill_started or (open_backfill == 0 and not archive_left and self.mode != "once"):
            return
        elapsed = max(now - self.backfill_started, 1e-3)
        a = self.archive
        archive_fields = {}
        if a is not None:
            files_rate = a.files_done / elapsed
            archive_fields = dict(
                archive_files_done=a.files_done, archive_files_total=a.files_total,
                archive_mb_per_s=round(a.bytes_done / elapsed / 1e6, 2),
                archive_candles=a.candles_done, archive_candles_per_s=round(a.candles_done / elapsed, 1),
                archive_eta_s=round(len(a) / files_rate, 1) if files_rate > 0 else -1,
                archive_absent=a.files_absent, archive_failed=a.files_failed, archive_gaps=a.files_with_gaps)
        rate = (self.candles_done + (a.candles_done if a else 0)) / elapsed
        done_rate = self.backfill_done / elapsed
        eta = open_backfill / done_rate if done_rate > 0 else -1
        self.log.info("progress", tasks_done=self.backfill_done, tasks_total=self.backfill_total,
                      candles=self.candles_done, candles_per_s=round(rate, 1), eta_s=round(eta, 1),
                      weight_used=self.budgets.spent, weight_limit=self.budgets.limit, **self._egress_fields(),
                      failed=self.book.failed_total, slowest_tick_ms=slowest_ms, **archive_fields)

    def _egress_fields(self) -> dict[str, str]:
        """With several groups: each budget's weight used this minute, `name:used/limit`."""
        if len(self.groups) < 2:
            return {}
        return {"weight_by_egress": ",".join(f"{n}:{b.spent}/{b.limit}" for n, b in self.budgets.distinct())}

    def _finish_once(self) -> None:
        self._progress(time.monotonic())  # the last figures, also for a run shorter than one period
        elapsed = time.monotonic() - (self.backfill_started or self.started)
        failed = self.book.failed
        a = self.archive
        archive_fields = {} if a is None else dict(
            archive_files=a.files_done, archive_candles=a.candles_done,
            archive_mb=round(a.bytes_done / 1e6, 2), archive_absent=a.files_absent,
            archive_failed=a.files_failed, archive_gaps=a.files_with_gaps)
        self.log.info("once_summary", tasks=self.backfill_done, candles=self.candles_done,
                      seconds=round(elapsed, 2), failed=self.book.failed_total, **archive_fields)
        for st in list(failed.values())[:20]:
            self.log.error("not_fetched", symbol=st.task.symbol, interval=st.task.interval,
                           start_ms=st.task.start_ms, end_ms=st.task.end_ms, error=st.last_error)
        skipped = [i for i in self.config.klines.intervals if not self.alignment.usable(i)]
        for interval in skipped:
            self.log.error("not_fetched", interval=interval,
                           error="the exchange's candles do not open where this interval is assumed to (see month_alignment_contradicted)")
        self.exit_code = EXIT_INCOMPLETE if self.book.failed_total or skipped else 0
        self.stop()
