"""The exchange's bulk archive (data.binance.vision), pure: names, checksums, CSV rows, planning.

Owns: the file name and URL of one monthly or daily kline zip (`1M` is written `1mo`), parsing
and checking its sha256sum-format `.CHECKSUM`, reading the single CSV inside a zip held in
memory, detecting a header row per file (first field numeric or not: the exchange added headers
around 2022-05 and never regenerated older files), turning rows into `Candle`s checked exactly as
a REST page is (`klines.validate_page`; a clean file is proved so column by column by
`fast_candles`, anything else goes row by row), and splitting a range of open times into monthly
files, daily files and the part left for REST.

Never: open sockets or files, read a clock (`now_ms` is passed in), or accept a candle from a
file whose checksum was not verified first. A file is accepted whole or rejected whole, like a
REST page: any bad byte means nothing from it is stored.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import hashlib
import io
import itertools
import operator
import re
import zipfile
import zlib
from typing import Callable, NamedTuple, TypeVar

from . import batches, intervals, klines
from ..messages import ArchiveTask, Candle, CandleColumns, TaskResult, columns_of

PREFIX = "data/futures/um"
# 3d, 1w and 1M exist as monthly files only (binance-api.md section 7).
MONTHLY_ONLY = frozenset({"3d", "1w", intervals.MONTH})
DEFAULT_HORIZON_DAYS = 2
REAL_BASE_URL = "https://data.binance.vision"
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_COLUMNS = 12
T = TypeVar("T")
FAST_SLICE_ROWS = 2000  # rows the CSV fast path checks at a time (see `_fast_parts`)


class ArchiveError(ValueError):
    """A file that must not be stored (bad checksum, broken zip, bad CSV); the message says why."""


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


def has_header(first_line: str) -> bool:
    """Headers are detected per file: the first field is not a number."""
    first = first_line.split(",", 1)[0].strip()
    return not first.isascii() or not first.isdigit()


def parse_csv(data: bytes, name: str) -> list[Candle]:
    """CSV of the 12 REST kline columns, with or without a header row -> candles (unvalidated)."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ArchiveError(f"{name}: CSV is not ASCII") from None
    lines = text.splitlines()
    if lines and has_header(lines[0]):
        header = [h.strip() for h in lines[0].split(",")]
        if len(header) != _COLUMNS or header[0] != "open_time":
            raise ArchiveError(f"{name}: unexpected header {lines[0][:120]!r}")
        lines = lines[1:]
    candles: list[Candle] = []
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        f = line.split(",")
        if len(f) != _COLUMNS:
            raise ArchiveError(f"{name}: row {number} has {len(f)} fields, expected {_COLUMNS}")
        try:
            open_ms, close_ms, trades = _int(f[0]), _int(f[6]), _int(f[8])
        except ValueError:
            raise ArchiveError(f"{name}: row {number}: times/count not integers: {line[:120]!r}") from None
        candles.append(Candle(open_ms, f[1], f[2], f[3], f[4], f[5], close_ms, f[7], trades,
                              f[9], f[10], f[11]))
    return candles


def _int(text: str) -> int:
    # ASCII digits only (int() also takes "١٢", "+5", " 5", "1_0"); no negative in these columns.
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise ValueError(text)
    return int(text)


def decode_file(f: ArchiveFile, zip_bytes: bytes, checksum_text: bytes, now_ms: int, *,
                piece: Callable[[CandleColumns, bool], T] | None = None) -> list[Candle] | tuple[list[T], list[int]]:
    """Verify, unzip, parse and validate one file; its candles sorted by open time (with
    `piece`: what `read_pieces` gives, the file in pieces as columns).

    The checksum comes first: nothing of an unverified zip is even unpacked.
    """
    verify(zip_bytes, checksum_text, f.name)
    data = unzip_single(zip_bytes, f.name)
    return read_candles(f, data, now_ms) if piece is None else read_pieces(f, data, now_ms, piece)


def read_candles(f: ArchiveFile, data: bytes, now_ms: int) -> list[Candle]:
    """The file's CSV -> its candles sorted by open time, every row checked as a REST page is.

    Two ways, one answer: `fast_candles` checks the whole file column by column at C speed
    (a few Python objects per candle, ~1 µs instead of ~5) and answers only when it can prove
    every rule holds; anything else (a bad or unusual row, an unsorted file, 1M) goes through
    `parse_csv` and `klines.validate_page` themselves, so the rules and the message naming the
    bad row are exactly theirs.
    """
    candles = fast_candles(f, data, now_ms)
    if candles is not None:
        return candles
    return _read_checked(f, data, now_ms)


def read_columns(f: ArchiveFile, data: bytes, now_ms: int) -> CandleColumns:
    """`read_candles` as columns: the same checks, the same candles (`ignore` left out)."""
    parts = _fast_parts(f, data, now_ms)
    if parts is not None:
        opens, cols, closes, trades = parts
        return CandleColumns(opens, cols[1], cols[2], cols[3], cols[4], cols[5], closes, cols[7],
                             trades, cols[9], cols[10])
    return columns_of(_read_checked(f, data, now_ms))


def read_pieces(f: ArchiveFile, data: bytes, now_ms: int,
                piece: Callable[[CandleColumns, bool], T]) -> tuple[list[T], list[int]]:
    """`read_columns` in pieces of at most FAST_SLICE_ROWS candles, in order: (what `piece(columns,
    last)` returned for each, the file's open times); `last` marks the file's last piece (an
    empty file has none).

    Each piece is handed over as soon as its values are checked and is not kept, so the caller
    keeps only what `piece` makes of it (the downloader: a message's bytes). A whole file's
    Python objects outgrow the CPU's cache (measured 3.4 µs a candle for a monthly 1m file
    held whole, 2.0 in pieces). Nothing is returned unless the whole file is valid: a piece
    made before a later fault is dropped, so `piece` must only build, never act.
    """
    made: list[T] = []
    parts = _fast_parts(f, data, now_ms, piece=lambda columns, last: made.append(piece(columns, last)))
    if parts is not None:
        return made, parts[0]
    candles = _read_checked(f, data, now_ms)
    return ([piece(columns_of(candles[i:i + FAST_SLICE_ROWS]), i + FAST_SLICE_ROWS >= len(candles))
             for i in range(0, len(candles), FAST_SLICE_ROWS)], [c.open_time_ms for c in candles])


def _read_checked(f: ArchiveFile, data: bytes, now_ms: int) -> list[Candle]:
    rows = parse_csv(data, f.name)
    try:
        return klines.validate_page(f.interval, rows, f.start_ms, f.last_open_ms, now_ms)
    except klines.PageError as exc:
        raise ArchiveError(f"{f.name}: {exc}") from None


def fast_candles(f: ArchiveFile, data: bytes, now_ms: int) -> list[Candle] | None:
    """The candles of a file that certainly passes `parse_csv` + `klines.validate_page` (the
    same candles they would give), or None: ask them. Never raises for bad input (see
    `_fast_parts`)."""
    parts = _fast_parts(f, data, now_ms)
    if parts is None:
        return None
    opens, cols, closes, trades = parts
    return list(map(Candle, opens, cols[1], cols[2], cols[3], cols[4], cols[5], closes, cols[7],
                    trades, cols[9], cols[10], cols[11]))


def _fast_parts(f: ArchiveFile, data: bytes, now_ms: int, piece: Callable[[CandleColumns, bool], object] | None = None,
                ) -> tuple[list[int], list[list[str]], list[int], list[int]] | None:
    """(open times, the 12 text columns, close times, trades) of a file that certainly passes
    `parse_csv` + `klines.validate_page`, or None: ask them. Never raises for bad input. With
    `piece`, each slice's columns go to it (see `read_pieces`) and only the int columns are kept.

    Sufficient conditions only, checked on whole columns: every row has 12 fields; the values
    as `_fast_slice` checks them; open times strictly increase, lie in the file's period and on
    the interval's grid (3d/1w: whole days, whole steps apart, as `validate_page` allows); each
    close is open + step - 1 and the newest is before `now_ms`.
    """
    interval = f.interval
    if interval == intervals.MONTH or not data.isascii():
        return None  # 1M: calendar months (one candle a file); non-ASCII: parse_csv says why
    lines = data.decode("ascii").splitlines()
    if lines and has_header(lines[0]):
        header = [h.strip() for h in lines[0].split(",")]
        if len(header) != _COLUMNS or header[0] != "open_time":
            return None
        del lines[0]
    if "" in lines:
        lines = [line for line in lines if line]  # blank lines are skipped, as parse_csv does
    if not lines:
        return [], [[] for _ in range(_COLUMNS)], [], []
    # In slices of FAST_SLICE_ROWS rows: each slice's strings are checked while they are still
    # in the CPU's cache (a whole monthly file at once measured 4.3 µs a candle, slices 2.4).
    cols: list[list] = [[] for _ in range(_COLUMNS)]
    kept = range(_COLUMNS) if piece is None else (0, 6, 8)
    for start in range(0, len(lines), FAST_SLICE_ROWS):
        part = _fast_slice(lines[start:start + FAST_SLICE_ROWS])
        if part is None:
            return None
        if piece is not None:
            piece(CandleColumns(*part[:11]), start + FAST_SLICE_ROWS >= len(lines))
        for i in kept:
            cols[i].extend(part[i])
    opens, closes, trades = cols[0], cols[6], cols[8]
    step = intervals.nominal_ms(interval)
    first, n = opens[0], len(opens)
    if not (f.start_ms <= first and opens[-1] <= f.last_open_ms):
        return None
    # The usual file, one candle every step: sorted, on the grid, each close its open's.
    usual = (first % (intervals.DAY_MS if interval in klines.PHASED else step) == 0
             and opens == list(range(first, first + n * step, step))
             and closes == list(range(first + step - 1, first + n * step, step)))
    if not usual:
        if not all(map(operator.lt, opens, itertools.islice(opens, 1, None))):
            return None
        if interval in klines.PHASED:
            # Whole days, whole steps apart: the phase is the exchange's (klines.validate_page).
            if (any(map(operator.mod, opens, itertools.repeat(intervals.DAY_MS)))
                    or any(map(operator.mod, map(operator.sub, itertools.islice(opens, 1, None), opens),
                               itertools.repeat(klines.PHASED[interval])))):
                return None
        elif any(map(operator.mod, opens, itertools.repeat(step))):
            return None  # every fixed interval but 1w has its grid at 0
        if set(map(operator.sub, closes, opens)) != {step - 1}:
            return None
    if (closes[-1] >= now_ms
            or closes[-1] > klines.MAX_TIME_MS or max(trades) > klines.MAX_SQL_INT):
        return None
    return opens, cols, closes, trades


def _fast_slice(lines: list[str]) -> list[list] | None:
    """The 12 columns of these rows if each has exactly 12 fields, open times, close times and trades as
    ints, if every field certainly passes `parse_csv` and `klines.check_candle`'s value rules:
    times and counts 1-19 ASCII digits; decimals 1-20 ASCII digits with at most one dot that is
    neither first nor last, prices at most 15 characters; high >= open, close >= low. Else None."""
    if set(map(str.count, lines, itertools.repeat(","))) != {_COLUMNS - 1}:
        return None
    fields = ",".join(lines).split(",")
    cols: list[list] = [fields[i::_COLUMNS] for i in range(_COLUMNS)]
    del fields
    # An empty `ignore` is valid but unusual: declined.
    if not all(batches.digits_ok(cols[i], 19) for i in (0, 6, 8)) or "" in cols[11]:
        return None
    if not (batches.decimals_ok(list(itertools.chain(cols[1], cols[2], cols[3], cols[4])), 15)
            and batches.decimals_ok(list(itertools.chain(cols[5], cols[7], cols[9], cols[10])), 20)):
        return None
    # Decimals of at most 15 digits convert to distinct floats in the same order, so these
    # comparisons are exactly klines.check_candle's Decimal ones.
    o, h, low, c = (list(map(float, cols[i])) for i in (1, 2, 3, 4))
    if not (all(map(operator.ge, h, o)) and all(map(operator.ge, h, c))
            and all(map(operator.le, low, o)) and all(map(operator.le, low, c))):
        return None
    for i in (0, 6, 8):
        cols[i] = list(map(int, cols[i]))
    return cols


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
