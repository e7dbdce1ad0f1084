"""The backfill's figures as one `messages.Progress` (pure: the caller passes the time and counts).

The scheduler's `progress` log line, its heartbeat (read by the supervisor into `status.json` and
the terminal display) and so the status command all show these same numbers, computed here once.
Rates are over the time since the backfill began; the ETA is the open work at the rate of tasks
done so far (-1: unknown, nothing done yet). Every float is finite: a NaN or an infinity would be
refused by `messages.decode` and the whole heartbeat with it.

It never reads a clock, a socket or a file.
"""

from __future__ import annotations

import math
from typing import Protocol

from ..messages import Progress


class ArchiveFigures(Protocol):
    """What `core.archive_queue.ArchiveQueue` counts (any object with these will do)."""

    files_total: int
    files_done: int
    candles_done: int
    bytes_done: int

    def __len__(self) -> int: ...  # files not done yet


def _finite(value: float, ndigits: int, unknown: float = -1.0) -> float:
    return round(value, ndigits) if math.isfinite(value) else unknown


def backfill_progress(at_ms: int, elapsed_s: float, *, tasks_done: int, tasks_total: int, tasks_open: int,
                      candles: int, weight_used: int, weight_limit: int, failed: int,
                      archive: ArchiveFigures | None = None) -> Progress:
    """The figures of a backfill running for `elapsed_s` (0 or less: not begun; rates are 0 and
    the ETA unknown). `candles` counts REST candles only; `candles_per_s` counts archive ones
    too (both are the work done), as the log line always did."""
    if elapsed_s <= 0:
        return Progress(at_ms=at_ms, tasks_done=tasks_done, tasks_total=tasks_total, candles=candles,
                        weight_used=weight_used, weight_limit=weight_limit, failed=failed,
                        archive_files_done=archive.files_done if archive is not None else 0,
                        archive_files_total=archive.files_total if archive is not None else 0)
    elapsed_s = max(elapsed_s, 1e-3)
    archive_fields = {}
    archive_candles = 0
    if archive is not None:
        files_rate = archive.files_done / elapsed_s
        archive_candles = archive.candles_done
        archive_fields = dict(
            archive_files_done=archive.files_done, archive_files_total=archive.files_total,
            archive_mb_per_s=_finite(archive.bytes_done / elapsed_s / 1e6, 2, 0.0),
            archive_candles_per_s=_finite(archive.candles_done / elapsed_s, 1, 0.0),
            archive_eta_s=_finite(len(archive) / files_rate, 1) if files_rate > 0 else -1.0)
    done_rate = tasks_done / elapsed_s
    return Progress(
        at_ms=at_ms, tasks_done=tasks_done, tasks_total=tasks_total, candles=candles,
        candles_per_s=_finite((candles + archive_candles) / elapsed_s, 1, 0.0),
        eta_s=_finite(tasks_open / done_rate, 1) if done_rate > 0 else -1.0,
        weight_used=weight_used, weight_limit=weight_limit, failed=failed, **archive_fields)
