"""Interval arithmetic for the 14 futures kline intervals (pure: no clocks, no I/O).

Every function takes times as Unix milliseconds (UTC) and is told `now` where it needs it.
Alignment follows the exchange: minute, hour and day multiples are counted from the Unix epoch,
and months are calendar months opening on the 1st at 00:00 UTC (the caller uses 1M only once the
exchange's own candles confirm it, see `core/alignment`). Where 3d and 1w candles open is the
exchange's to say (the real spot archive opens 3d on epoch days ≡ 1 mod 3; weeks are documented to
open on Monday): it is a parameter, `phase_ms` (open times ≡ phase_ms mod the interval's length),
which the caller learns from the exchange's own candles (`phase_of`). Every function that depends
on alignment takes it for the interval it is given; None means the default (`DEFAULT_PHASE_MS`:
multiples of three days, Mondays); other intervals ignore it. `closing_at`, which spans intervals,
takes a mapping interval -> phase.
"""

from __future__ import annotations

import calendar
import datetime as _dt
from collections.abc import Iterator, Mapping

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
# 1970-01-01 was a Thursday: the first Monday 00:00 UTC after the epoch is day 4.
_FIRST_MONDAY_MS = 4 * DAY_MS

# Fixed-length intervals by name; "1M" (calendar month) has no fixed length.
_FIXED_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
    "3d": 3 * DAY_MS,
    "1w": WEEK_MS,
}
MONTH = "1M"
INTERVALS: tuple[str, ...] = (*_FIXED_MS, MONTH)


class IntervalError(ValueError):
    """An interval name the exchange does not have."""


def check(interval: str) -> str:
    if interval not in INTERVALS:
        raise IntervalError(f"unknown interval {interval!r}; expected one of {', '.join(INTERVALS)}")
    return interval


def nominal_ms(interval: str) -> int:
    """Length in ms; for 1M the shortest month (28 days), a lower bound used for sizing only."""
    if interval == MONTH:
        return 28 * DAY_MS
    return _FIXED_MS[check(interval)]


def _month_start(t_ms: int) -> int:
    d = _dt.datetime.fromtimestamp(t_ms // 1000, tz=_dt.timezone.utc)
    return calendar.timegm((d.year, d.month, 1, 0, 0, 0)) * 1000


def _add_months(open_ms: int, months: int) -> int:
    d = _dt.datetime.fromtimestamp(open_ms // 1000, tz=_dt.timezone.utc)
    index = d.year * 12 + (d.month - 1) + months
    return calendar.timegm((index // 12, index % 12 + 1, 1, 0, 0, 0)) * 1000


THREE_DAYS_MS = 3 * DAY_MS
# The real spot archive's 3d candles (binance-api.md section 7) open on epoch days ≡ 1 (mod 3).
ARCHIVE_3D_PHASE_MS = DAY_MS
# Intervals whose phase is the exchange's: their length, and the phase assumed until it is known.
PHASED_MS: dict[str, int] = {"3d": THREE_DAYS_MS, "1w": WEEK_MS}
DEFAULT_PHASE_MS: dict[str, int] = {"3d": 0, "1w": _FIRST_MONDAY_MS}


def phase_of(interval: str, open_ms: int) -> int:
    """The phase a real candle's open time shows: for 3d and 1w, its offset from a multiple of the
    interval's length since the epoch (a whole number of days); 0 for every other interval."""
    period = PHASED_MS.get(interval)
    return open_ms % period if period else 0


def _origin(interval: str, phase_ms: int | None) -> int:
    period = PHASED_MS.get(interval)
    if period is None:
        return 0
    return (DEFAULT_PHASE_MS[interval] if phase_ms is None else phase_ms) % period


def align(interval: str, t_ms: int, phase_ms: int | None = None) -> int:
    """Open time of the candle that contains `t_ms`."""
    if interval == MONTH:
        return _month_start(t_ms)
    step = _FIXED_MS[check(interval)]
    return t_ms - (t_ms - _origin(interval, phase_ms)) % step


def is_aligned(interval: str, t_ms: int, phase_ms: int | None = None) -> bool:
    return align(interval, t_ms, phase_ms) == t_ms


def next_open(interval: str, open_ms: int) -> int:
    """Open time of the candle after the one opening at `open_ms` (which must be aligned)."""
    if interval == MONTH:
        return _add_months(open_ms, 1)
    return open_ms + _FIXED_MS[check(interval)]


def prev_open(interval: str, open_ms: int) -> int:
    if interval == MONTH:
        return _add_months(open_ms, -1)
    return open_ms - _FIXED_MS[check(interval)]


def step(interval: str, open_ms: int, count: int) -> int:
    """Open time `count` candles after (or before, if negative) `open_ms`."""
    if interval == MONTH:
        return _add_months(open_ms, count)
    return open_ms + count * _FIXED_MS[check(interval)]


def close_time(interval: str, open_ms: int) -> int:
    """The exchange's close_time: the next open minus one millisecond."""
    return next_open(interval, open_ms) - 1


def next_boundary(interval: str, t_ms: int, phase_ms: int | None = None) -> int:
    """First candle open strictly after `t_ms`: the moment the candle containing `t_ms` closes."""
    return next_open(interval, align(interval, t_ms, phase_ms))


def last_closed_open(interval: str, now_ms: int, phase_ms: int | None = None) -> int:
    """Open time of the newest candle that is closed at `now_ms`."""
    return prev_open(interval, align(interval, now_ms, phase_ms))


def count_between(interval: str, first_open_ms: int, last_open_ms: int) -> int:
    """Number of candles with open time in [first, last], both aligned; 0 if last < first."""
    if last_open_ms < first_open_ms:
        return 0
    if interval == MONTH:
        a = _dt.datetime.fromtimestamp(first_open_ms // 1000, tz=_dt.timezone.utc)
        b = _dt.datetime.fromtimestamp(last_open_ms // 1000, tz=_dt.timezone.utc)
        return (b.year - a.year) * 12 + (b.month - a.month) + 1
    return (last_open_ms - first_open_ms) // _FIXED_MS[check(interval)] + 1


def open_times(interval: str, first_open_ms: int, last_open_ms: int, phase_ms: int | None = None) -> Iterator[int]:
    """Every aligned open time in [first, last]."""
    t = align(interval, first_open_ms, phase_ms)
    if t < first_open_ms:
        t = next_open(interval, t)
    while t <= last_open_ms:
        yield t
        t = next_open(interval, t)


def closing_at(boundary_ms: int, intervals: tuple[str, ...] | list[str] = INTERVALS,
               phases: Mapping[str, int] | None = None) -> list[str]:
    """The intervals whose candle closes exactly at `boundary_ms`, shortest first; `phases` gives
    3d's and 1w's phase (missing: the default)."""
    phases = phases or {}
    return [i for i in INTERVALS if i in intervals and is_aligned(i, boundary_ms, phases.get(i))]
