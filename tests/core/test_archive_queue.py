"""The scheduler's archive bookkeeping: files out within the limit, fallbacks to daily files and REST."""

from __future__ import annotations

import calendar

from kl_actors.core import intervals
from kl_actors.core.archive import ArchiveFile
from kl_actors.core.archive_queue import RETRY_DELAY_MS, ArchiveQueue
from kl_actors.core.planner import Range
from kl_actors.messages import TaskResult

NOW = calendar.timegm((2026, 12, 3, 18, 0, 0)) * 1000
DAY = intervals.DAY_MS


def ms(y, m, d=1):
    return calendar.timegm((y, m, d, 0, 0, 0)) * 1000


def drain(q: ArchiveQueue, now=NOW):
    out = []
    while (t := q.next_ready(now)) is not None:
        out.append(t)
    return out


def test_split_keeps_files_and_returns_rest_and_respects_concurrency():
    q = ArchiveQueue(concurrency=2, horizon_days=2)
    rest = q.split(Range("S", "1h", ms(2026, 10, 30), ms(2026, 12, 3, ) + 16 * 3_600_000, "new"), NOW)
    assert rest == [Range("S", "1h", ms(2026, 12, 1), ms(2026, 12, 3) + 16 * 3_600_000, "new")]
    assert q.files_total == 3 and q.has("S", "1h") and len(q) == 3  # Nov monthly; Oct 30, 31 daily
    first = drain(q)
    assert len(first) == 2 and (first[0].month, first[0].day) == (11, 0)
    assert q.next_ready(NOW) is None  # at the limit
    for t in first:
        q.result(TaskResult(task_id=t.task_id, status="ok", candles=24), NOW)
        assert q.committed(t.task_id) is not None
    (last,) = drain(q)
    q.result(TaskResult(task_id=last.task_id, status="ok", candles=24), NOW)
    q.committed(last.task_id)
    assert q.files_done == 3 and len(q) == 0 and not q.has("S", "1h") and q.candles_done == 72


def test_absent_month_becomes_daily_files_and_absent_day_becomes_rest():
    q = ArchiveQueue(concurrency=4, horizon_days=2)
    assert q.split(Range("S", "1m", ms(2026, 2, 1), ms(2026, 3, 1) - 60_000, "new"), NOW) == []
    (month,) = drain(q)
    out = q.result(TaskResult(task_id=month.task_id, status="absent"), NOW)
    assert out.rest == [] and out.event == "archive_absent_fallback" and "daily" in out.action
    assert q.files_total == 1 + 28
    days = []
    while len(days) < 28:
        batch = drain(q)
        days += batch
        for t in batch[1:]:
            q.result(TaskResult(task_id=t.task_id, status="ok"), NOW)
            q.committed(t.task_id)
        if batch:
            missing = batch[0] if len(days) == len(batch) else None
            if missing is not None:
                out = q.result(TaskResult(task_id=missing.task_id, status="absent"), NOW)
                f = ArchiveFile("S", "1m", 2026, 2, missing.day)
                assert out.rest == [Range("S", "1m", f.start_ms, f.stop_ms - 60_000, "new")]
            else:
                q.result(TaskResult(task_id=batch[0].task_id, status="ok"), NOW)
                q.committed(batch[0].task_id)
    assert len(q) == 0 and q.files_absent == 2


def test_monthly_only_absent_month_goes_to_rest():
    q = ArchiveQueue(concurrency=4, horizon_days=2)
    # The first week opens on Feb 2 (a Monday): February's file is still whole.
    assert q.split(Range("S", "1w", ms(2026, 2, 2), ms(2026, 2, 23), "new"), NOW) == []
    (t,) = drain(q)
    assert (t.interval, t.day) == ("1w", 0)
    out = q.result(TaskResult(task_id=t.task_id, status="absent"), NOW)
    assert out.rest == [Range("S", "1w", ms(2026, 2, 1), ms(2026, 3, 1) - 1, "new")]


def test_bad_file_is_tried_once_more_later_then_rest():
    q = ArchiveQueue(concurrency=4, horizon_days=2)
    q.split(Range("S", "1d", ms(2026, 5, 1), ms(2026, 5, 31), "tail"), NOW)
    (t,) = drain(q)
    out = q.result(TaskResult(task_id=t.task_id, status="bad_file", detail="sha256"), NOW)
    assert out.rest == [] and out.event == "archive_file_retry"
    assert q.next_ready(NOW) is None  # later, not at once
    (again,) = drain(q, NOW + RETRY_DELAY_MS)
    assert again.attempt == 2 and again.task_id != t.task_id
    out = q.result(TaskResult(task_id=again.task_id, status="bad_file"), NOW)
    assert out.event == "archive_file_given_up"
    assert out.rest == [Range("S", "1d", ms(2026, 5, 1), ms(2026, 5, 31), "tail")]
    assert len(q) == 0 and q.files_failed == 1


def test_unreachable_archive_sends_everything_to_rest_once():
    q = ArchiveQueue(concurrency=2, horizon_days=2)
    assert q.split(Range("S", "1d", ms(2026, 1, 1), ms(2026, 6, 30), "new"), NOW) == []
    a, b = drain(q)
    first = q.result(TaskResult(task_id=a.task_id, status="network"), NOW)
    assert first.event == "archive_file_retry" and first.rest == []
    second = q.result(TaskResult(task_id=b.task_id, status="network"), NOW)
    assert second.unreachable and second.event == "archive_unreachable"
    assert sorted(r.first_open_ms for r in second.rest) == [ms(2026, m) for m in range(1, 7)]
    assert len(q) == 0 and not q.has("S", "1d")
    # Later plans go to REST whole, without another line.
    later = Range("S", "1d", ms(2025, 1, 1), ms(2025, 1, 31), "new")
    assert q.split(later, NOW) == [later]


def test_lease_expiry_sends_again_unless_the_file_waits_for_the_writer():
    q = ArchiveQueue(concurrency=2, horizon_days=2, lease_ms=1000)
    q.split(Range("S", "1d", ms(2026, 1, 1), ms(2026, 2, 28), "new"), NOW)
    a, b = drain(q)
    q.result(TaskResult(task_id=b.task_id, status="ok", candles=28), NOW)
    assert q.expired(NOW + 2000) == [a.task_id]
    assert q.owns(b.task_id)
    assert q.reissue_uncommitted(NOW + 2000) == 1 and not q.owns(b.task_id)
    assert len(drain(q, NOW + 2000)) == 2


def test_a_downloaded_file_waiting_for_the_writer_frees_its_download_slot_within_a_bound():
    q = ArchiveQueue(concurrency=1, horizon_days=2)
    q.split(Range("S", "1d", ms(2025, 1, 1), ms(2025, 12, 31), "new"), NOW)
    out = []
    for _ in range(12):
        (t,) = drain(q)
        out.append(t)
        assert q.downloading() == 1
        q.result(TaskResult(task_id=t.task_id, status="ok", candles=30), NOW)
        assert q.downloading() == 0
        if len(out) == 4:  # UNCOMMITTED_PER_SLOT files wait for the writer: no more go out
            assert q.next_ready(NOW) is None
            for done in out:
                assert q.committed(done.task_id) is not None
            out.clear()
    assert q.files_done == 12 and len(q) == 0


def test_a_file_with_a_gap_is_stored_and_its_gap_asked_over_rest_as_a_hole():
    q = ArchiveQueue(concurrency=1, horizon_days=2)
    q.split(Range("S", "1m", ms(2026, 2, 1), ms(2026, 3, 1) - 60_000, "new"), NOW)
    (t,) = drain(q)
    gap = (ms(2026, 2, 10), ms(2026, 2, 11) - 60_000)
    out = q.result(TaskResult(task_id=t.task_id, status="ok", candles=27 * 1440, missing=[gap]), NOW)
    assert out.event == "archive_file_gap" and out.rest == [Range("S", "1m", *gap, "hole")]
    assert q.committed(t.task_id) is not None and q.files_with_gaps == 1
