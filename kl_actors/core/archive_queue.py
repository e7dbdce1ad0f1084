"""Archive work of the scheduler (pure): files planned, out, retried, done, and what falls to REST.

The scheduler hands each planned backfill range to `ArchiveQueue.split`, which keeps the monthly
and daily files (`archive.plan_range`) and returns the ranges left for REST. At most `concurrency` files are
downloading at a time (`next_ready`; a downloaded file waiting for the writer no longer counts,
up to `UNCOMMITTED_PER_SLOT` times as many out in all), never through the weight budget. Results decide what
happens next, and every fallback comes back as REST ranges for the backlog:
- `absent` (404: not published yet, or never): a month becomes its daily files (3d/1w/1M: REST);
  a day becomes REST. This is how the queue learns what exists: from 404s of the small CHECKSUM
  files, which for a bootstrap cost about one request per file either way (see ARCHITECTURE).
- `bad_file` (checksum, zip or CSV failed) or any other failure: tried once more later
  (`RETRY_DELAY_MS`), then the file's range goes to REST.
- `ok` with `missing` ranges (a day missing inside a monthly file, a maintenance window): the
  file is stored and the ranges it lacks are asked over REST as holes (an empty answer there is
  confirmed and recorded like any exchange hole).
- `network` twice in a row: the archive is unreachable; that is logged once by the scheduler and
  every file not yet done goes to REST at once.
A file counts as done when the writer commits its last batch (`committed`).

No sockets, files or clocks: `now_ms` is passed in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from . import archive
from .archive import ArchiveFile
from .planner import Range
from ..messages import ArchiveTask, TaskResult

RETRY_DELAY_MS = 5_000
UNREACHABLE_AFTER = 2  # network failures in a row
UNCOMMITTED_PER_SLOT = 4  # files out (downloading or waiting for the writer) per concurrency slot


@dataclass
class FileState:
    file: ArchiveFile
    kind: str                 # the planner's range kind ("new", "tail", "hole"), kept for REST fallbacks
    attempt: int = 1
    not_before_ms: int = 0
    lease_until_ms: int = 0
    result_ok: bool = False
    candles: int = 0
    bytes_read: int = 0
    task_id: str = ""


@dataclass
class Outcome:
    """What one result means: REST ranges to add, and a line for the log (empty: nothing to say)."""

    rest: list[Range] = field(default_factory=list)
    event: str = ""
    action: str = ""
    file: str = ""
    unreachable: bool = False


class ArchiveQueue:
    def __init__(self, *, concurrency: int, horizon_days: int, lease_ms: int = 120_000) -> None:
        self.concurrency = concurrency
        self.horizon_days = horizon_days
        self.lease_ms = lease_ms
        self.waiting: deque[FileState] = deque()
        self.out: dict[str, FileState] = {}
        self.per_table: dict[tuple[str, str], int] = {}
        self.files_total = 0
        self.files_done = 0
        self.files_failed = 0     # files whose range went to REST after a fault
        self.files_absent = 0
        self.files_with_gaps = 0  # files that lacked candles of their period (asked over REST)
        self.candles_done = 0
        self.bytes_done = 0
        self.unreachable = False
        self._network_failures = 0
        self._serial = 0

    # -- planning ---------------------------------------------------------------------------
    def split(self, r: Range, now_ms: int) -> list[Range]:
        """Keep the archive's part of a planned range; returns what is left for REST."""
        if self.unreachable:
            return [r]
        plan = archive.plan_range(r.symbol, r.interval, r.first_open_ms, r.last_open_ms,
                                  now_ms=now_ms, horizon_days=self.horizon_days)
        for f in plan.files:
            self._add(FileState(f, r.kind))
        return [Range(r.symbol, r.interval, a, b, r.kind) for a, b in plan.rest]

    def _add(self, st: FileState) -> None:
        self.waiting.append(st)
        key = (st.file.symbol, st.file.interval)
        self.per_table[key] = self.per_table.get(key, 0) + 1
        self.files_total += 1

    def _close(self, st: FileState) -> None:
        key = (st.file.symbol, st.file.interval)
        left = self.per_table.get(key, 0) - 1
        if left > 0:
            self.per_table[key] = left
        else:
            self.per_table.pop(key, None)

    def has(self, symbol: str, interval: str) -> bool:
        return (symbol, interval) in self.per_table

    def __len__(self) -> int:
        """Files not done yet (waiting or out)."""
        return len(self.waiting) + len(self.out)

    # -- dispatch ---------------------------------------------------------------------------
    def downloading(self) -> int:
        """Files out whose result has not come back (a file waiting for the writer is not one)."""
        return sum(1 for st in self.out.values() if not st.result_ok)

    def next_ready(self, now_ms: int) -> ArchiveTask | None:
        # The limit bounds downloads; files waiting for the writer are bounded apart, so a slow
        # commit slows the archive down instead of filling the writer's queue.
        if self.downloading() >= self.concurrency or len(self.out) >= UNCOMMITTED_PER_SLOT * self.concurrency:
            return None
        for _ in range(len(self.waiting)):
            st = self.waiting[0]
            if st.not_before_ms <= now_ms:
                self.waiting.popleft()
                self._serial += 1
                f = st.file
                st.task_id = f"archive:{f.name}:{st.attempt}.{self._serial}"
                st.lease_until_ms = now_ms + self.lease_ms
                st.result_ok = False
                self.out[st.task_id] = st
                return ArchiveTask(task_id=st.task_id, symbol=f.symbol, interval=f.interval, year=f.year,
                                   month=f.month, day=f.day, attempt=st.attempt)
            self.waiting.rotate(-1)
        return None

    def owns(self, task_id: str) -> bool:
        return task_id in self.out

    # -- results ----------------------------------------------------------------------------
    def result(self, r: TaskResult, now_ms: int) -> Outcome:
        st = self.out.get(r.task_id)
        if st is None:
            return Outcome()
        f = st.file
        if r.status == "ok":
            self._network_failures = 0
            st.result_ok = True
            st.candles = r.candles
            st.bytes_read = r.bytes_read
            if not r.missing:
                return Outcome()
            # "hole": an empty REST answer there is confirmed, then recorded as the exchange's.
            self.files_with_gaps += 1
            return Outcome(rest=self._rest(f, "hole", r.missing), event="archive_file_gap", file=f.name,
                           action=f"{len(r.missing)} range(s) the file lacks asked over REST")
        del self.out[r.task_id]
        if self.unreachable:  # said once already: the rest goes to REST without a line each
            return Outcome(rest=self._to_rest([st]))
        if r.status == "absent":
            self._network_failures = 0
            self.files_absent += 1
            self._close(st)
            fb = archive.fallback(f, now_ms=now_ms, horizon_days=self.horizon_days)
            for day in fb.files:
                self._add(FileState(day, st.kind))
            how = "its daily files" if fb.files else "REST"
            return Outcome(rest=self._rest(f, st.kind, fb.rest), event="archive_absent_fallback", file=f.name,
                           action=f"range filled from {how}")
        if r.status == "network":
            self._network_failures += 1
            if self._network_failures >= UNREACHABLE_AFTER and not self.unreachable:
                self.unreachable = True
                rest = self._to_rest([st, *self.waiting])
                self.waiting.clear()
                return Outcome(rest=rest, event="archive_unreachable", file=f.name, unreachable=True,
                               action="every remaining archive file's range goes to REST now")
        if st.attempt < 2:
            st.attempt += 1
            st.not_before_ms = now_ms + RETRY_DELAY_MS
            self.waiting.append(st)
            return Outcome(event="archive_file_retry", file=f.name,
                           action=f"trying it once more in {RETRY_DELAY_MS / 1000:.0f}s")
        self.files_failed += 1
        return Outcome(rest=self._to_rest([st]), event="archive_file_given_up", file=f.name,
                       action="range filled from REST")

    def _rest(self, f: ArchiveFile, kind: str, ranges: list[tuple[int, int]]) -> list[Range]:
        out = []
        for a, b in ranges:
            if (span := archive._aligned(f.interval, a, b)) is not None:
                out.append(Range(f.symbol, f.interval, span[0], span[1], kind))
        return out

    def _to_rest(self, states: list[FileState]) -> list[Range]:
        rest: list[Range] = []
        for st in states:
            self._close(st)
            rest += self._rest(st.file, st.kind, [(st.file.start_ms, st.file.last_open_ms)])
        return rest

    def committed(self, task_id: str) -> FileState | None:
        st = self.out.pop(task_id, None)
        if st is None:
            return None
        self._close(st)
        self.files_done += 1
        self.candles_done += st.candles
        self.bytes_done += st.bytes_read
        return st

    def expired(self, now_ms: int) -> list[str]:
        """Files out past their lease (a downloader died, a result was lost): sent again later."""
        gone = []
        for tid, st in self.out.items():
            if st.lease_until_ms < now_ms:
                if st.result_ok:  # its batches wait in the writer's queue: fetching again adds a copy
                    st.lease_until_ms = now_ms + self.lease_ms
                else:
                    gone.append(tid)
        for tid in gone:
            st = self.out.pop(tid)
            st.not_before_ms = now_ms
            self.waiting.append(st)
        return gone

    def reissue_uncommitted(self, now_ms: int) -> int:
        """The writer restarted: batches of files it had not committed may be lost; send again."""
        waiting = [tid for tid, st in self.out.items() if st.result_ok]
        for tid in waiting:
            st = self.out.pop(tid)
            st.not_before_ms = now_ms
            self.waiting.append(st)
        return len(waiting)

    def drop_symbol(self, symbol: str) -> int:
        keep = deque(st for st in self.waiting if st.file.symbol != symbol)
        dropped = len(self.waiting) - len(keep)
        for st in self.waiting:
            if st.file.symbol == symbol:
                self._close(st)
        self.waiting = keep
        return dropped
