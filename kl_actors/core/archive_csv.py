"""One archive file's CSV, pure: bytes in, candles (or columns, or pieces of columns) out, every
row checked exactly as a REST page is (a part of `core/archive.py`, by idea).

Two readers, one answer: `parse_csv` + `klines.validate_page` are the reference (a header row
detected per file, ASCII-digit integers, the page rules against the file's own period); the
columnar fast path (`fast_candles`, `read_columns`, `read_pieces`) checks whole columns at C
speed, in slices of FAST_SLICE_ROWS rows, and answers only when it proves every rule holds;
anything else goes to the reference, so what is refused and the message naming the row are
exactly its own.

Never: open sockets or files, read a clock, or accept part of a file: a file is valid whole or
refused whole (`ArchiveError`).
"""

from __future__ import annotations

import itertools
import operator
from typing import TYPE_CHECKING, Callable, TypeVar

from . import batches, intervals, klines
from ..messages import Candle, CandleColumns, columns_of

if TYPE_CHECKING:
    from .archive import ArchiveFile

_COLUMNS = 12
T = TypeVar("T")
FAST_SLICE_ROWS = 2000  # rows the CSV fast path checks at a time (see `_fast_parts`)


class ArchiveError(ValueError):
    """A file that must not be stored (bad checksum, broken zip, bad CSV); the message says why."""


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
