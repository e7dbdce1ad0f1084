"""The scheduler's reports (a part of the scheduler actor, by idea): the progress line every
`PROGRESS_EVERY_S` and the same figures in every heartbeat (`core/progress.py` computes them, for
the supervisor's status.json and terminal display), and the end of a `--once` run (its summary,
what was not fetched, the exit code). A mixin of `Scheduler`: it uses the scheduler's state and
never runs on its own.
"""

from __future__ import annotations

import time

import msgspec

from ..core.progress import backfill_progress
from ..messages import Progress
from .base import now_ms

PROGRESS_EVERY_S = 5.0
EXIT_INCOMPLETE = 3  # --once: something could not be fetched


def _shown(seconds: float) -> float | int:
    """An ETA as the progress line has always written it: -1 when unknown."""
    return seconds if seconds >= 0 else -1


class Reporting:
    def _figures(self, now: float) -> Progress:
        """The backfill's figures now (one computation for the log line and the heartbeat)."""
        return backfill_progress(
            now_ms(), max(now - self.backfill_started, 1e-3) if self.backfill_started else 0.0,
            tasks_done=self.backfill_done, tasks_total=self.backfill_total,
            tasks_open=self.backfill_open + self.backlog.pages_left, candles=self.candles_done,
            weight_used=self.budgets.spent, weight_limit=self.budgets.limit, failed=self.book.failed_total,
            archive=self.archive)

    def _backfill_active(self) -> bool:
        return bool(self.backfill_open + self.backlog.pages_left or (self.archive is not None and len(self.archive)))

    def beat_fields(self) -> dict:
        """The heartbeat carries the latest figures (the supervisor shows them and keeps them in
        status.json). Between backfills the rates stay those of the last one; the weight and the
        failed count stay current."""
        latest = self.latest_progress
        a = self.archive
        counts = (self.backfill_done, self.backfill_total, a.files_done if a else 0, a.files_total if a else 0)
        if (latest is None or self._backfill_active()
                or counts != (latest.tasks_done, latest.tasks_total, latest.archive_files_done,
                              latest.archive_files_total)):
            self.latest_progress = self._figures(time.monotonic())
        else:
            self.latest_progress = msgspec.structs.replace(
                latest, at_ms=now_ms(), weight_used=self.budgets.spent, weight_limit=self.budgets.limit,
                failed=self.book.failed_total)
        return {"progress": self.latest_progress}

    def _progress(self, now: float) -> None:
        self.next_progress = now + PROGRESS_EVERY_S
        self._results_due(now)  # forgets results lost on the way
        open_backfill = self.backfill_open + self.backlog.pages_left
        archive_left = len(self.archive) if self.archive is not None else 0
        slowest_ms, self.slowest_tick_s = round(self.slowest_tick_s * 1000, 1), 0.0
        if not self.backfill_started or (open_backfill == 0 and not archive_left and self.mode != "once"):
            return
        p = self.latest_progress = self._figures(now)
        a = self.archive
        archive_fields = {}
        if a is not None:
            archive_fields = dict(
                archive_files_done=p.archive_files_done, archive_files_total=p.archive_files_total,
                archive_mb_per_s=p.archive_mb_per_s, archive_candles=a.candles_done,
                archive_candles_per_s=p.archive_candles_per_s, archive_eta_s=_shown(p.archive_eta_s),
                archive_absent=a.files_absent, archive_failed=a.files_failed, archive_gaps=a.files_with_gaps)
        self.log.info("progress", tasks_done=p.tasks_done, tasks_total=p.tasks_total,
                      candles=p.candles, candles_per_s=p.candles_per_s, eta_s=_shown(p.eta_s),
                      weight_used=p.weight_used, weight_limit=p.weight_limit, **self._egress_fields(),
                      failed=p.failed, slowest_tick_ms=slowest_ms, **archive_fields)

    def _egress_fields(self) -> dict[str, str]:
        """With several groups: each budget's weight used this minute, `name:used/limit`."""
        if len(self.groups) < 2:
            return {}
        return {"weight_by_egress": ",".join(f"{n}:{b.spent}/{b.limit}" for n, b in self.budgets.distinct())}

    def _finish_once(self) -> None:
        self._progress(time.monotonic())  # the last figures, also for a run shorter than one period
        self.beat_now()  # ... and in status.json (the supervisor reads them from the heartbeat)
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
