"""Candle time grid of the simulated exchange: the 14 fapi intervals and their UTC alignment.

Owns: interval names, `floor_open` / `next_open` / `ceil_open`, iteration over open times.
Pure (no clock, no I/O) and written independently of `kl_actors.intervals` on purpose: the
simulator is a second implementation of the exchange's rules and must import nothing of the
service.

Alignment chosen (binance-api.md §2.1):
- minute/hour/day multiples: open time ≡ 0 mod length, counted from the Unix epoch;
- 3d: open on epoch days ≡ D (mod 3), D = `--phase-3d-days` (default 0: multiples of
  259 200 000 ms; the real spot archive shows D = 1, futures unknown). Set once per process by
  `set_phase_3d` before the market is built;
- 1w: on epoch days ≡ W (mod 7), W = `--phase-1w-days` (default 4: Monday 00:00 UTC, as the
  docs' weekly example; 1970-01-05 is the first Monday after the epoch). Set by `set_phase_1w`;
- 1M: calendar months, the 1st at 00:00 UTC (UNVERIFIED by a recording); `--month-shift-days N`
  opens each one N days later instead (a grid the service must refuse to assume, set by
  `set_month_shift`).
"""

from __future__ import annotations

import datetime as _dt

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY
MONDAY_OFFSET = 4 * DAY  # 1970-01-01 was a Thursday

INTERVALS: tuple[str, ...] = (
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
)
# Position of each interval: used to seed per-interval hashes.
INTERVAL_INDEX = {name: i for i, name in enumerate(INTERVALS)}

FIXED_MS: dict[str, int] = {
    "1m": MINUTE, "3m": 3 * MINUTE, "5m": 5 * MINUTE, "15m": 15 * MINUTE, "30m": 30 * MINUTE,
    "1h": HOUR, "2h": 2 * HOUR, "4h": 4 * HOUR, "6h": 6 * HOUR, "8h": 8 * HOUR, "12h": 12 * HOUR,
    "1d": DAY, "3d": 3 * DAY, "1w": WEEK,
}
_OFFSET = {"1w": MONDAY_OFFSET, "3d": 0}


def set_phase_3d(days: int) -> None:
    """3d candles open on epoch days ≡ `days` (mod 3) from now on, in this process."""
    _OFFSET["3d"] = (days % 3) * DAY


def phase_3d_days() -> int:
    return _OFFSET["3d"] // DAY


def set_phase_1w(days: int) -> None:
    """Weekly candles open on epoch days ≡ `days` (mod 7) from now on (4: Mondays)."""
    _OFFSET["1w"] = (days % 7) * DAY


def phase_1w_days() -> int:
    return _OFFSET["1w"] // DAY


_MONTH_SHIFT = [0]  # ms after the 1st at which 1M candles open


def set_month_shift(days: int) -> None:
    _MONTH_SHIFT[0] = days * DAY


def month_shift_days() -> int:
    return _MONTH_SHIFT[0] // DAY


def is_interval(name: str) -> bool:
    return name in INTERVAL_INDEX


def _month_open(year: int, month: int) -> int:
    return int(_dt.datetime(year, month, 1, tzinfo=_dt.timezone.utc).timestamp()) * 1000


def floor_open(interval: str, t_ms: int) -> int:
    """Open time of the candle that contains `t_ms`."""
    step = FIXED_MS.get(interval)
    if step is not None:
        off = _OFFSET.get(interval, 0)
        return (t_ms - off) // step * step + off
    shift = _MONTH_SHIFT[0]
    d = _dt.datetime.fromtimestamp((t_ms - shift) // 1000, tz=_dt.timezone.utc)
    return _month_open(d.year, d.month) + shift


def next_open(interval: str, open_ms: int) -> int:
    """Open time of the candle after the one opening at `open_ms` (= its close time + 1)."""
    step = FIXED_MS.get(interval)
    if step is not None:
        return open_ms + step
    shift = _MONTH_SHIFT[0]
    d = _dt.datetime.fromtimestamp((open_ms - shift) // 1000, tz=_dt.timezone.utc)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return _month_open(year, month) + shift


def prev_open(interval: str, open_ms: int) -> int:
    step = FIXED_MS.get(interval)
    if step is not None:
        return open_ms - step
    return floor_open(interval, open_ms - 1)


def ceil_open(interval: str, t_ms: int) -> int:
    """First open time >= `t_ms`."""
    f = floor_open(interval, t_ms)
    return f if f == t_ms else next_open(interval, f)


def close_time(interval: str, open_ms: int) -> int:
    return next_open(interval, open_ms) - 1


def opens_between(interval: str, lo_ms: int, hi_ms: int):
    """Ascending aligned open times in [lo_ms, hi_ms]; `lo_ms` must be aligned."""
    step = FIXED_MS.get(interval)
    if step is not None:
        return range(lo_ms, hi_ms + 1, step) if hi_ms >= lo_ms else range(0)
    out = []
    t = lo_ms
    while t <= hi_ms:
        out.append(t)
        t = next_open(interval, t)
    return out
