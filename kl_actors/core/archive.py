"""The exchange's bulk archive (data.binance.vision), pure: names, checksums, CSV rows, planning.

Owns: the file name and URL of one monthly or daily kline zip (`1M` is written `1mo`), parsing
and checking its sha256sum-format `.CHECKSUM`, reading the single CSV inside a zip held in
memory, handing it to `archive_csv.py` (a header row detected per file: the exchange added
headers around 2022-05 and never regenerated older files; rows turned into candles checked
exactly as a REST page is), a task's result and what its file lacks, and splitting a range of
open times into monthly files, daily files and the part left for REST.

Never: open sockets or files, read a clock (`now_ms` is passed in), or accept a candle from a
file whose checksum was not verified first. A file is accepted whole or rejected whole, like a
REST page: any bad byte means nothing from it is stored.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import hashlib
import io
import re
import zipfile
import zlib
from typing import Callable, NamedTuple, TypeVar

from . import intervals, klines
from ..messages import ArchiveTask, Candle, CandleColumns, TaskResult
from .archive_csv import (  # noqa: F401 - the CSV readers are part of this module's API
    FAST_SLICE_ROWS, ArchiveError, fast_candles, has_header, parse_csv, read_candles, read_columns,
    read_pieces)

PREFIX = "data/futures/um"
# 3d, 1w and 1M exist as monthly files only (binance-api.md section 7).
MONTHLY_ONLY = frozenset({"3d", "1w", intervals.MONTH})
DEFAULT_HORIZON_DAYS = 2
REAL_BASE_URL = "https://data.binance.vision"
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
T = TypeVar("T")


def file_interval(interval: str) -> str:
    """The interval as written in archive paths: `1M` is `1mo` (case-insensitive file systems)."""
    return "1mo" if interval == intervals.MONTH else intervals.check(interval)


class ArchiveFile(NamedTuple):
    """One zip: a month (`day == 0`) or one day of one symbol and interval."""

    symbol: str
    interval: str
    year: int
    month: int
    day: int = 0

    @property
    def monthly(self) -> bool:
        return self.day == 0

    @property
    def name(self) -> str:
        date = f"{self.year:04d}-{self.month:02d}" + ("" if self.monthly else f"-{self.day:02d}")
        return f"{self.symbol}-{file_interval(self.interval)}-{date}.zip"

    @property
    def path(self) -> str:
        """Path below the host root, no leading slash."""
        period = "monthly" if self.monthly else "daily"
        return f"{PREFIX}/{period}/klines/{self.symbol}/{file_interval(self.interval)}/{self.name}"

    def url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/{self.path}"

    def checksum_url(self, base_url: str) -> str:
        return self.url(base_url) + ".CHECKSUM"

    @property
    def start_ms(self) -> int:
        """First instant the file covers (open times from here on)."""
        return calendar.timegm((self.year, self.month, self.day or 1, 0, 0, 0)) * 1000

    @property
    def stop_ms(self) -> int:
        """First instant after the file (exclusive)."""
        if self.monthly:
            return intervals._add_months(self.start_ms, 1)
        return self.start_ms + intervals.DAY_MS

    @property
    def last_open_ms(self) -> int:
        """Inclusive upper bound for open times in the file (validation range)."""
        return self.stop_ms - 1


def monthly_file(symbol: str, interval: str, t_ms: int) -> ArchiveFile:
    d = _dt.datetime.fromtimestamp(t_ms // 1000, tz=_dt.timezone.utc)
    return ArchiveFile(symbol, interval, d.year, d.month)


def daily_file(symbol: str, interval: str, t_ms: int) -> ArchiveFile:
    d = _dt.datetime.fromtimestamp(t_ms // 1000, tz=_dt.timezone.utc)
    return ArchiveFile(symbol, interval, d.year, d.month, d.day)


def days_of(f: ArchiveFile) -> list[ArchiveFile]:
    """The daily files that together hold what a monthly file holds."""
    return [daily_file(f.symbol, f.interval, t) for t in range(f.start_ms, f.stop_ms, intervals.DAY_MS)]


# --- checksum -------------------------------------------------------------------------------

def parse_checksum(text: bytes, name: str) -> str:
    """`<sha256>  <filename>` (sha256sum format; `*` marks binary mode) -> lower-case hex digest.

    The file name must be the zip's own: a CHECKSUM for another file proves nothing.
    """
    try:
        line = text.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ArchiveError(f"{name}.CHECKSUM is not ASCII") from None
    parts = line.split()
    if len(parts) != 2 or not _SHA256_RE.fullmatch(parts[0]):
        raise ArchiveError(f"{name}.CHECKSUM is not '<sha256>  <file>': {line[:100]!r}")
    listed = parts[1].lstrip("*")
    if listed != name:
        raise ArchiveError(f"{name}.CHECKSUM names another file {listed[:80]!r}")
    return parts[0].lower()


def verify(zip_bytes: bytes, checksum_text: bytes, name: str) -> str:
    """Raise ArchiveError unless sha256(zip) is the CHECKSUM's; returns the digest."""
    expected = parse_checksum(checksum_text, name)
    actual = hashlib.sha256(zip_bytes).hexdigest()
    if actual != expected:
        raise ArchiveError(f"{name}: sha256 {actual[:16]}... does not match CHECKSUM {expected[:16]}...")
    return actual


# --- zip and CSV ----------------------------------------------------------------------------

# A month of 1m candles is 44,640 rows of at most ~250 bytes (11 MB): far past that is not a
# kline CSV but a zip bomb, refused before it is inflated.
MAX_CSV_BYTES = 64 * 1024 * 1024


def unzip_single(zip_bytes: bytes, name: str, max_bytes: int = MAX_CSV_BYTES) -> bytes:
    """The one CSV inside the zip; a zip with none or several members, or a broken one, raises."""
    try:
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
            members = [i for i in zf.infolist() if not i.is_dir()]
            if len(members) != 1:
                raise ArchiveError(f"{name}: expected one CSV in the zip, found {len(members)}")
            info = members[0]
            if info.file_size > max_bytes:
                raise ArchiveError(f"{name}: CSV of {info.file_size} bytes exceeds {max_bytes}")
            return zf.read(info)  # zipfile checks the member's CRC-32 on read
    except ArchiveError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError,
            NotImplementedError, RuntimeError) as exc:
        raise ArchiveError(f"{name}: broken zip: {str(exc)[:150]}") from None


def decode_file(f: ArchiveFile, zip_bytes: bytes, checksum_text: bytes, now_ms: int, *,
                piece: Callable[[CandleColumns, bool], T] | None = None) -> list[Candle] | tuple[list[T], list[int]]:
    """Verify, unzip, parse and validate one file; its candles sorted by open time (with
    `piece`: what `read_pieces` gives, the file in pieces as columns).

    The checksum comes first: nothing of an unverified zip is even unpacked.
    """
    verify(zip_bytes, checksum_text, f.name)
    data = unzip_single(zip_bytes, f.name)
    return read_candles(f, data, now_ms) if piece is None else read_pieces(f, data, now_ms, piece)


# --- planning -------------------------------------------------------------------------------

def horizon_ms(now_ms: int, horizon_days: int = DEFAULT_HORIZON_DAYS) -> int:
    """Files for days before this instant are expected to exist; newer ones are left to REST."""
    return now_ms - now_ms % intervals.DAY_MS - horizon_days * intervals.DAY_MS


class Plan(NamedTuple):
    files: list[ArchiveFile]              # monthly files first, then daily, oldest first in each
    rest: list[tuple[int, int]]           # inclusive open-time ranges left for REST


def plan_range(symbol: str, interval: str, first_open_ms: int, last_open_ms: int, *,
               now_ms: int, horizon_days: int = DEFAULT_HORIZON_DAYS) -> Plan:
    """Split [first_open_ms, last_open_ms] into whole months (monthly files), whole days (daily
    files) and the rest (REST): edges that cover only part of a day, the newest `horizon_days`,
    and for 3d/1w/1M every part that is not a whole month.
    """
    cutoff = horizon_ms(now_ms, horizon_days)
    stop = intervals.close_time(interval, last_open_ms) + 1  # the end of the last candle
    step = intervals.nominal_ms(interval)
    months: list[ArchiveFile] = []
    days: list[ArchiveFile] = []
    rest: list[tuple[int, int]] = []
    monthly_only = interval in MONTHLY_ONLY

    def leave(a: int, b: int) -> None:  # [a, b) of time -> REST, as open times inside it
        if b <= a:
            return
        if rest and rest[-1][1] + 1 >= a:
            rest[-1] = (rest[-1][0], b - 1)
        else:
            rest.append((a, b - 1))

    t = first_open_ms
    archive_stop = min(stop, cutoff)
    while t < archive_stop:
        m_start = intervals._month_start(t)
        m_stop = intervals._add_months(m_start, 1)
        # A month is whole when no candle of it opens before the range: for 1w/3d the range's
        # first candle may open a few days into the month (their phase is the exchange's).
        if t - m_start < step and m_stop <= archive_stop:
            months.append(monthly_file(symbol, interval, t))
            t = m_stop
            continue
        if monthly_only:
            leave(t, min(m_stop, archive_stop))
            t = min(m_stop, archive_stop)
            continue
        d_stop = t - t % intervals.DAY_MS + intervals.DAY_MS
        if t % intervals.DAY_MS == 0 and d_stop <= archive_stop:
            days.append(daily_file(symbol, interval, t))
        else:
            leave(t, min(d_stop, archive_stop))
        t = d_stop
    leave(max(t, first_open_ms), stop)
    # A cut past the last candle (the end of a month-long file for 1w/3d) holds nothing to ask.
    clipped = [(a, min(b, last_open_ms)) for a, b in rest if a <= last_open_ms]
    return Plan(months + days, [r for a, b in clipped if (r := _aligned(interval, a, b))])


def _aligned(interval: str, a: int, b: int) -> tuple[int, int] | None:
    """[a, b] as a range of open times, or None when it holds none.

    3d and 1w keep the cut as is: their phase is the exchange's, and REST answers what exists.
    """
    if interval in ("3d", "1w"):
        return (a, b)
    last = intervals.align(interval, b)
    return (a, last) if last >= a else None


def fallback(f: ArchiveFile, *, now_ms: int, horizon_days: int = DEFAULT_HORIZON_DAYS) -> Plan:
    """What to fetch instead of a file the archive lacks or that failed: a month as daily files
    (where the interval has them), a day (or a monthly-only month) over REST."""
    if f.monthly and f.interval not in MONTHLY_ONLY:
        return Plan(days_of(f), [])
    return Plan([], [(f.start_ms, f.last_open_ms)])


# --- one task's outcome ---------------------------------------------------------------------

def task_file(task: ArchiveTask) -> ArchiveFile:
    return ArchiveFile(task.symbol, task.interval, task.year, task.month, task.day)


def classify(task: ArchiveTask, checksum_status: int, checksum_body: bytes, zip_status: int,
             zip_body: bytes, now_ms: int, *,
             piece: Callable[[CandleColumns, bool], T] | None = None) -> tuple[TaskResult, list[Candle] | list[T] | None]:
    """The answers for a file and its CHECKSUM -> the task's result and, if ok, its candles
    (with `piece`: what it made of each piece, `read_pieces`).

    A 404 of either means the archive does not have the file (yet): `absent`. Any other non-200
    is an `http_error`. Otherwise the file is verified and read whole; any fault is `bad_file`
    and no candle comes back.
    """
    f = task_file(task)
    for what, status in (("CHECKSUM", checksum_status), ("zip", zip_status)):
        if status == 404:
            return TaskResult(task_id=task.task_id, status="absent", http_status=404,
                              detail=f"{f.name}: no {what} in the archive"), None
        if status != 200:
            return TaskResult(task_id=task.task_id, status="http_error", http_status=status,
                              detail=f"{f.name}: {what} answered HTTP {status}"), None
    try:
        if piece is None:
            candles = decode_file(f, zip_body, checksum_body, now_ms)
            opens = [c.open_time_ms for c in candles]
        else:
            candles, opens = decode_file(f, zip_body, checksum_body, now_ms, piece=piece)
    except ArchiveError as exc:
        return TaskResult(task_id=task.task_id, status="bad_file", http_status=200,
                          detail=str(exc)[:300]), None
    first, last = (opens[0], opens[-1]) if opens else (0, 0)
    return TaskResult(task_id=task.task_id, status="ok", candles=len(opens), first_open_ms=first,
                      last_open_ms=last, http_status=200, detail=f.name,
                      missing=file_gaps(f, opens)), candles


class _At(NamedTuple):
    open_time_ms: int


def file_gaps(f: ArchiveFile, opens: list[int]) -> list[tuple[int, int]]:
    """Open times of the file's period it does not hold (on its own candles' grid; `opens`: the
    file's valid, sorted open times), as inclusive ranges: a day missing inside a monthly file,
    an exchange maintenance window. The scheduler asks them over REST, so what the archive lacks
    is reported and filled, never hidden."""
    if not opens:
        return [(f.start_ms, f.last_open_ms)]
    if f.interval not in MONTHLY_ONLY:
        # Valid candles are distinct, sorted and on the grid: as many as the period's open
        # times, from its first to its last, is all of them (no set of 44,640 to build).
        step = intervals.nominal_ms(f.interval)
        last = intervals.align(f.interval, f.last_open_ms)
        if (opens[0] == f.start_ms and opens[-1] == last
                and len(opens) == (last - f.start_ms) // step + 1):
            return []
    return klines.missing_ranges(f.interval, list(map(_At, opens)), f.start_ms, f.last_open_ms, len(opens) + 1)
