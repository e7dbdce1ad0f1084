"""The backfill's figures (`core/progress.py`): what the progress line, the heartbeat, status.json
and the terminal display show."""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec

from kl_actors import messages
from kl_actors.core.archive_queue import ArchiveQueue
from kl_actors.core.progress import backfill_progress


@dataclass
class ArchiveCounts:
    """The counts an `ArchiveQueue` keeps, set directly (the queue's own tests cover counting)."""
    files_total: int
    files_done: int
    candles_done: int
    bytes_done: int
    left: int

    def __len__(self) -> int:
        return self.left


def figures(elapsed_s: float, **overrides) -> messages.Progress:
    counts = dict(tasks_done=300, tasks_total=1000, tasks_open=700, candles=149_700, weight_used=812,
                  weight_limit=2400, failed=2)
    return backfill_progress(1_700_000_000_000, elapsed_s, **{**counts, **overrides})


def test_rates_and_eta_from_known_figures():
    p = figures(60.0)
    assert (p.at_ms, p.tasks_done, p.tasks_total, p.candles) == (1_700_000_000_000, 300, 1000, 149_700)
    assert p.candles_per_s == 2495.0          # 149,700 candles in 60 s
    assert p.eta_s == 140.0                   # 700 open at 5 tasks/s
    assert (p.weight_used, p.weight_limit, p.failed) == (812, 2400, 2)
    assert (p.archive_files_total, p.archive_eta_s) == (0, -1.0)  # no archive work


def test_archive_figures_and_their_candles_in_the_rate():
    archive = ArchiveCounts(files_total=40, files_done=10, candles_done=300_000, bytes_done=25_000_000, left=30)
    p = figures(10.0, candles=0, tasks_done=0, tasks_open=0, archive=archive)
    assert (p.archive_files_done, p.archive_files_total) == (10, 40)
    assert p.archive_mb_per_s == 2.5          # 25 MB in 10 s
    assert p.archive_candles_per_s == 30000.0
    assert p.archive_eta_s == 30.0            # 30 files left at 1 file/s
    assert p.candles_per_s == 30000.0         # archive candles are work done too
    assert p.eta_s == -1.0                    # no REST task done yet: unknown


def test_a_fresh_archive_queue_is_read_as_no_files():
    p = figures(5.0, archive=ArchiveQueue(concurrency=4, horizon_days=2))
    assert (p.archive_files_done, p.archive_files_total, p.archive_mb_per_s, p.archive_eta_s) == (0, 0, 0.0, -1.0)


def test_not_begun_has_no_rates_and_an_unknown_eta():
    p = figures(0.0, tasks_done=0, tasks_total=0, tasks_open=0, candles=0)
    assert (p.candles_per_s, p.eta_s, p.archive_eta_s) == (0.0, -1.0, -1.0)
    assert (p.weight_used, p.weight_limit) == (812, 2400)  # the weight is shown before any backfill


def test_every_float_is_finite_and_survives_the_wire():
    # A microsecond of backfill with huge counts: the rates are large but finite, and the
    # heartbeat carrying them decodes (a NaN or infinity would make decode refuse it).
    p = figures(1e-9, tasks_done=10**15, candles=10**18, tasks_open=10**15)
    for name in messages.FLOAT_FIELDS[messages.Progress]:
        assert math.isfinite(getattr(p, name)), name
    beat = messages.decode(messages.encode(messages.Heartbeat(actor="scheduler", pid=1, sent_at_ms=1, progress=p)))
    assert isinstance(beat, messages.Heartbeat) and beat.progress == p
    assert msgspec.to_builtins(p)["tasks_done"] == 10**15
