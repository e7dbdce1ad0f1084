"""What the writer lets into the database (pure: a batch or a hole and the exchange's clock in,
upsert rows or an error out; `server_now_ms` is passed in, None while the clock is unknown).

- `check_batch`: every candle as `klines.check_candle` checks it, at C speed for a whole batch;
  `check_candle` stays the authority (same rules, same message) whenever anything looks unusual.
- `accept_batch`: a table-name symbol and interval, valid candles, and none closing past the
  exchange's now + `FUTURE_TOLERANCE_MS` (a candle cannot have closed in the future);
  `accept_columns` the same for candles sent as columns (`ArchiveBatch`).
- `check_hole`: an `ExchangeHole` that names a table and an ordered range which ends before the
  exchange's now: a confirmed hole cannot lie in the future either.
- `RequestMemory`: of two REST answers for a recent candle, the one requested later wins,
  whichever commits last.

The writer checks every batch again even though the downloader validated its page: a batch may
come from any sender, and nothing wrong may ever be stored. Never logs, never touches the file.
"""

from __future__ import annotations

import itertools
import operator

import msgspec

from . import intervals
from .klines import FUTURE_TOLERANCE_MS, MAX_SQL_INT, MAX_TIME_MS, PageError, check_candle
from .symbols import table_name
from ..messages import Candle, CandleColumns

RECENT_MS = 10 * 60_000    # a candle closed this recently when asked may still change
REMEMBER_MS = 20 * 60_000  # requests older than this (behind the newest) are forgotten
REMEMBER_MAX = 200_000     # (symbol, interval, open_time) entries at most
CLOSE_TIME = operator.itemgetter(6)  # of an upsert row (a candle as a tuple)
_PRICE_COLUMNS = (1, 2, 3, 4)      # open high low close
_OTHER_DECIMALS = (5, 7, 9, 10)    # volume, quote volume, taker buy volume and quote volume
_DIGITS = b"0123456789"
_DIGITS_TO_0 = bytes.maketrans(_DIGITS, b"0" * 10)
_DIGITS_AND_DOT_TO_0 = bytes.maketrans(_DIGITS + b".", b"0" * 11)


def check_batch(interval: str, candles: list[Candle]) -> list[tuple]:
    """Validate every candle as `klines.check_candle` does, returning the upsert rows.

    The fast path checks a whole batch column-wise at C speed (no Python code per candle). When
    anything looks wrong or unusual, and for months, each candle goes through `check_candle`
    itself, so the rules and the error message are exactly its own. Raises PageError.
    """
    rows = list(map(msgspec.structs.astuple, candles))
    if rows and (interval == intervals.MONTH or not _fast_ok(interval, list(zip(*rows)))):
        for c in candles:
            check_candle(interval, c)
    return rows


def check_columns(interval: str, columns: CandleColumns) -> None:
    """`check_batch` for candles sent as columns: the same rules, the same messages (the
    candles are built and handed to `check_candle` whenever the fast path declines). Raises
    PageError, also for columns of unequal lengths."""
    lists = columns.lists()
    if len(set(map(len, lists))) > 1:
        raise PageError(f"candle columns of unequal lengths {sorted(set(map(len, lists)))}")
    if len(columns) and (interval == intervals.MONTH or not _fast_ok(interval, lists)):
        for c in columns.candles():
            check_candle(interval, c)


def _fast_ok(interval: str, cols: list) -> bool:
    """True only if every candle certainly passes `check_candle` (False: ask it). `cols`: the
    candles' fields as columns in `Candle` order (at least the first 11), all of one length."""
    opens, close_times = cols[0], cols[6]
    step_ms = intervals.nominal_ms(interval)
    origin = intervals.align(interval, 0)  # 0 except for weeks (Monday-aligned)
    shifted = map(operator.sub, opens, itertools.repeat(origin)) if origin else opens
    if any(map(operator.mod, shifted, itertools.repeat(step_ms))):
        return False
    if set(map(operator.sub, close_times, opens)) != {step_ms - 1}:
        return False
    if min(cols[8]) < 0 or max(cols[8]) > MAX_SQL_INT:
        return False
    if min(opens) < 0 or max(close_times) > MAX_TIME_MS:
        return False
    # Decimals: ASCII digits with at most one dot, neither first nor last, no empty value;
    # prices (open, high, low, close) at most 15 characters, the others at most 20 (so no part
    # has more than the 20 digits allowed).
    if not (decimals_ok(_chained(cols, _PRICE_COLUMNS), 15) and decimals_ok(_chained(cols, _OTHER_DECIMALS), 20)):
        return False
    # Floats order decimals of at most 15 digits exactly (rounding is monotonic, and distinct
    # decimals of 15 digits stay distinct), so the bounds check below is exact.
    o, h, low, c = (list(map(float, cols[i])) for i in _PRICE_COLUMNS)
    return (all(map(operator.ge, h, o)) and all(map(operator.ge, h, c))
            and all(map(operator.le, low, o)) and all(map(operator.le, low, c)))


def _chained(cols: list, indexes: tuple[int, ...]) -> list[str]:
    return list(itertools.chain.from_iterable(cols[i] for i in indexes))


def decimals_ok(values: list[str], longest: int) -> bool:
    """Every value is 1..`longest` ASCII digits with at most one dot that is neither its first
    nor its last character (False: ask `check_candle`). Whole-text operations only (C speed):
    the values joined by newlines hold only digits, dots and newlines; no newline is inside a
    value (their count), none is empty (no two newlines together, none at either end); with the
    digits removed no two dots touch (two dots in one value), and with every digit written 0
    each dot is found inside a "0.0" (a digit on both sides; counted without overlap, which
    never misses one when no two dots share a value); with digits and dots both written 0 no
    run of `longest` + 1 of them is left."""
    raw = _joined(values)
    if raw is None or raw.translate(None, b"0123456789.\n") or b".." in raw.translate(None, _DIGITS):
        return False
    if raw.translate(_DIGITS_TO_0).count(b"0.0") != raw.count(b"."):
        return False
    return b"0" * (longest + 1) not in raw.translate(_DIGITS_AND_DOT_TO_0)


def digits_ok(values: list[str], longest: int) -> bool:
    """Every value is 1..`longest` ASCII digits (as `decimals_ok`, without dots)."""
    raw = _joined(values)
    return (raw is not None and not raw.translate(None, b"0123456789\n")
            and b"0" * (longest + 1) not in raw.translate(_DIGITS_TO_0))


def _joined(values: list[str]) -> bytes | None:
    """The values joined by newlines, as ASCII bytes, if none is empty or holds a newline or
    anything outside ASCII (else None)."""
    joined = "\n".join(values)
    if not values or not joined.isascii() or joined.count("\n") != len(values) - 1:
        return None
    raw = joined.encode("ascii")
    if b"\n\n" in raw or raw[:1] == b"\n" or raw[-1:] == b"\n" or not raw:
        return None
    return raw


def accept_columns(symbol: str, interval: str, columns: CandleColumns, server_now_ms: int | None) -> None:
    """`accept_batch` for an `ArchiveBatch`'s columns: a table, valid candles, none closing
    past `server_now_ms` + FUTURE_TOLERANCE_MS. Raises `SymbolError` or `PageError`."""
    table_name(symbol, interval)
    check_columns(interval, columns)
    if len(columns) and server_now_ms is not None:
        last_close = max(columns.close_time_ms)
        if last_close >= server_now_ms + FUTURE_TOLERANCE_MS:
            raise PageError(f"candle closing at {last_close} is in the future (server now {server_now_ms})")


def accept_batch(symbol: str, interval: str, candles: list[Candle], server_now_ms: int | None) -> list[tuple]:
    """The upsert rows of a batch the writer may store.

    Raises `SymbolError` (no table for this symbol and interval) or `PageError` (a bad candle, or
    one closing past `server_now_ms` + FUTURE_TOLERANCE_MS; not checked while the clock is None).
    """
    table_name(symbol, interval)
    rows = check_batch(interval, candles)
    if rows and server_now_ms is not None:
        last_close = max(map(CLOSE_TIME, rows))
        if last_close >= server_now_ms + FUTURE_TOLERANCE_MS:
            raise PageError(f"candle closing at {last_close} is in the future (server now {server_now_ms})")
    return rows


def check_hole(symbol: str, interval: str, start_ms: int, end_ms: int, server_now_ms: int | None) -> None:
    """A confirmed exchange hole the writer may record: a table, an ordered range of possible
    open times, its last candle closed before `server_now_ms` + FUTURE_TOLERANCE_MS (not checked
    while the clock is None). Raises `SymbolError` or `ValueError`."""
    table_name(symbol, interval)
    if end_ms < start_ms:
        raise ValueError(f"end {end_ms} before start {start_ms}")
    if start_ms < 0 or end_ms > MAX_TIME_MS:
        raise ValueError(f"range {start_ms}..{end_ms} out of range")
    if server_now_ms is None:
        return
    limit_ms = server_now_ms + FUTURE_TOLERANCE_MS
    # Compared as an open time first: no calendar arithmetic on an absurd end.
    if end_ms >= limit_ms or intervals.close_time(interval, end_ms) >= limit_ms:
        raise ValueError(f"ends in the future: last open {end_ms}, server now {server_now_ms}")


class RequestMemory:
    """Which REST request wrote each recent candle, so that of two answers for one candle the
    later-requested one wins, whichever commits last.

    A candle's values may still change for a moment after its close (the exchange serves a
    provisional copy first). Only candles that were recent when asked (closed less than RECENT_MS
    before the request) are remembered: an older candle is final, so any answer for it is as good
    as another, and the memory stays bounded (REMEMBER_MS behind the newest request, at most
    REMEMBER_MAX entries). The caller stages what a transaction writes (`staged`) and remembers it
    only once the transaction committed.
    """

    def __init__(self) -> None:
        # (symbol, interval, open_time) -> server time the request that wrote the stored copy was sent
        self.requested_at: dict[tuple[str, str, int], int] = {}

    def __len__(self) -> int:
        return len(self.requested_at)

    def newer_only(self, symbol: str, interval: str, requested_at_ms: int, rows: list[tuple],
                   staged: dict) -> tuple[list[tuple], list[int], int]:
        """(rows to write, open times refused, newest request seen among the refused).

        A row is refused when this transaction (`staged`) or a committed one wrote that candle
        from a later request; a row kept is staged with `requested_at_ms`. Rows of candles that
        were not recent at `requested_at_ms` skip the lookup: no later request can be remembered
        for them.
        """
        recent_from = requested_at_ms - RECENT_MS
        if not rows or max(map(CLOSE_TIME, rows)) < recent_from:
            return rows, [], 0
        kept = []
        refused: list[int] = []
        newest_seen = 0
        for row in rows:
            if row[6] < recent_from:
                kept.append(row)
                continue
            key = (symbol, interval, row[0])
            earlier = staged.get(key) or self.requested_at.get(key, 0)
            if earlier > requested_at_ms:
                refused.append(row[0])
                newest_seen = max(newest_seen, earlier)
                continue
            staged[key] = requested_at_ms
            kept.append(row)
        return kept, refused, newest_seen

    def remember(self, staged: dict) -> None:
        """What a committed transaction wrote (its `staged`)."""
        if not staged:
            return
        self.requested_at.update(staged)
        if len(self.requested_at) > REMEMBER_MAX:
            self.forget_old()

    def forget_old(self) -> None:
        """Drop requests more than REMEMBER_MS behind the newest; past REMEMBER_MAX even so (a burst
        of recent candles), keep the newest half."""
        if not self.requested_at:
            return
        newest = max(self.requested_at.values())
        keep = {k: v for k, v in self.requested_at.items() if v >= newest - REMEMBER_MS}
        if len(keep) > REMEMBER_MAX:
            keep = dict(sorted(keep.items(), key=operator.itemgetter(1))[-REMEMBER_MAX // 2:])
        self.requested_at = keep
