"""Parsing and validation of candles from the exchange (pure: bytes in, Candles or errors out).

Values stay the exchange's decimal strings; they are compared as `Decimal` for validation only.
A page is accepted whole or rejected whole: a bad page becomes a failed task, never stored rows.

Where 3d (and weekly) candles open is the exchange's fact, not ours (see `intervals`): such a
candle is checked for a whole-day open and its span, and a page for whole steps between its
candles, never for one phase, so a wrong phase assumption can never fail every page for ever.
"""

from __future__ import annotations

import re
from decimal import Decimal

import msgspec

from . import intervals
from ..messages import Candle

# Intervals whose phase is the exchange's, not ours: validated by step (whole days apart).
_PHASED = {"3d": intervals.THREE_DAYS_MS, "1w": intervals.WEEK_MS}
# ASCII only: `\d` also matches other scripts' digits ("١٢"), which SQLite then reads as 0.
_DECIMAL_RE = re.compile(r"[0-9]{1,20}(\.[0-9]{1,20})?")
MAX_SQL_INT = 2**63 - 1          # SQLite's INTEGER; msgspec reads up to 2**64 - 1
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: past it no calendar works
# Clock error and exchange jitter (closes come 0.2-2 s after the close): how far past the
# exchange's now a candle may be dated before it is refused as a future candle.
FUTURE_TOLERANCE_MS = 5_000


class PageError(ValueError):
    """A page or event that must not be stored; the message says why."""


_page_decoder = msgspec.json.Decoder(list[Candle])


class _WsKline(msgspec.Struct):
    t: int
    T: int
    i: str
    o: str
    c: str
    h: str
    l: str  # noqa: E741 - the exchange's own key
    v: str
    n: int
    x: bool
    q: str
    V: str
    Q: str
    B: str = "0"
    s: str = ""


class _WsEvent(msgspec.Struct):
    e: str
    E: int
    k: _WsKline
    s: str = ""
    ps: str = ""


class _Envelope(msgspec.Struct):
    """A raw event, a combined-stream wrapper around one, or a control reply (no `k`)."""

    e: str = ""
    E: int = 0
    k: _WsKline | None = None
    s: str = ""
    ps: str = ""
    stream: str = ""
    data: _WsEvent | None = None


_event_decoder = msgspec.json.Decoder(_Envelope)


class WsKline(msgspec.Struct, frozen=True):
    symbol: str
    interval: str
    event_time_ms: int
    closed: bool
    candle: Candle


def decode_page(body: bytes) -> list[Candle]:
    """REST klines body -> candles, with JSON types checked; raises PageError."""
    try:
        return _page_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PageError(f"malformed klines body: {exc}") from None


def decode_ws_event(raw: bytes | str) -> WsKline | None:
    """A kline or continuous-kline event (raw or combined) -> WsKline; None for control replies.

    Raises PageError for a message that is not JSON or does not fit the event's shape.
    """
    try:
        msg = _event_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        # Control replies (`{"result": null, "id": 1}`) decode fine: anything that does not is
        # not something the exchange sends on a kline stream.
        raise PageError(f"malformed websocket message: {exc}") from None
    except msgspec.DecodeError as exc:
        raise PageError(f"undecodable websocket message: {exc}") from None
    event = msg.data if msg.data is not None else msg
    if event.e not in ("kline", "continuous_kline") or event.k is None:
        return None
    k = event.k
    symbol = event.s or event.ps or k.s
    candle = Candle(k.t, k.o, k.h, k.l, k.c, k.v, k.T, k.q, k.n, k.V, k.Q, k.B)
    return WsKline(symbol=symbol, interval=k.i, event_time_ms=event.E, closed=k.x, candle=candle)


def check_candle(interval: str, c: Candle) -> None:
    """One candle's own consistency; raises PageError (and only PageError, whatever the input)."""
    if not (0 <= c.open_time_ms <= MAX_TIME_MS and 0 <= c.close_time_ms <= MAX_TIME_MS):
        raise PageError(f"open/close time {c.open_time_ms}/{c.close_time_ms} out of range")
    try:
        # 3d and 1w: any phase the exchange uses (whole days); the page checks the steps between them.
        aligned = (c.open_time_ms % intervals.DAY_MS == 0 if interval in _PHASED
                   else intervals.is_aligned(interval, c.open_time_ms))
        close_ms = intervals.close_time(interval, c.open_time_ms) if aligned else 0
    except (intervals.IntervalError, ValueError, OverflowError, OSError) as exc:
        # An unknown interval, or an open time no calendar holds (year 146 million).
        raise PageError(f"interval {interval[:10]!r} / open time {c.open_time_ms}: {exc}"[:200]) from None
    if not aligned:
        raise PageError(f"open time {c.open_time_ms} not aligned to {interval}")
    if c.close_time_ms != close_ms:
        raise PageError(f"close time {c.close_time_ms} does not match open {c.open_time_ms}")
    values = (c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.taker_buy_volume,
              c.taker_buy_quote_volume)
    for value in values:
        if not _DECIMAL_RE.fullmatch(value):
            raise PageError(f"candle {c.open_time_ms}: {value[:30]!r} is not a non-negative decimal")
    o, h, low, close = (Decimal(v) for v in (c.open, c.high, c.low, c.close))
    if not (h >= max(o, close) and min(o, close) >= low):
        raise PageError(f"candle {c.open_time_ms}: high/low do not bound open/close")
    if not 0 <= c.trades <= MAX_SQL_INT:
        raise PageError(f"candle {c.open_time_ms}: trade count {c.trades} negative or out of range")


def in_future(candle: Candle, closed: bool, server_now_ms: int) -> bool:
    """A candle dated past the exchange's now + FUTURE_TOLERANCE_MS: a closed one closing at or
    after that limit, a live (unclosed) one opening after it."""
    limit_ms = server_now_ms + FUTURE_TOLERANCE_MS
    return candle.close_time_ms >= limit_ms if closed else candle.open_time_ms > limit_ms


def validate_page(
    interval: str, candles: list[Candle], start_ms: int, end_ms: int, now_ms: int
) -> list[Candle]:
    """Check a page asked for open times in [start_ms, end_ms]: sorted, in range, closed.

    Returns the candles sorted by open time; raises PageError if any candle is wrong.
    """
    page = sorted(candles, key=lambda c: c.open_time_ms)
    previous = None
    for c in page:
        check_candle(interval, c)
        if previous is not None and c.open_time_ms <= previous:
            raise PageError(f"duplicate open time {c.open_time_ms}")
        if previous is not None and interval in _PHASED and (c.open_time_ms - previous) % _PHASED[interval]:
            raise PageError(f"open time {c.open_time_ms} is not a whole number of {interval} steps after {previous}")
        if not start_ms <= c.open_time_ms <= end_ms:
            raise PageError(f"open time {c.open_time_ms} outside asked range [{start_ms}, {end_ms}]")
        if c.close_time_ms >= now_ms:
            raise PageError(f"candle {c.open_time_ms} is not closed yet (close {c.close_time_ms})")
        previous = c.open_time_ms
    return page


def missing_ranges(interval: str, page: list[Candle], start_ms: int, end_ms: int,
                   limit: int) -> list[tuple[int, int]]:
    """Open times in [start_ms, end_ms] a valid, sorted, non-empty page leaves out, as ranges.

    The exchange answers a range with every candle it has in it, oldest first, up to `limit`:
    what it skips before and between the candles it sent does not exist there (a maintenance
    window, a closed market session). After the newest candle only when the page is shorter
    than `limit` (a full page may simply have been cut). The grid is the page's own (its first
    candle's phase), so a 3d or weekly phase we did not expect never looks like missing candles.
    """
    if not page:
        return []
    anchor = page[0].open_time_ms
    if interval == intervals.MONTH:
        expected = intervals.open_times(interval, start_ms, end_ms)
    else:
        step_ms = intervals.nominal_ms(interval)
        expected = range(anchor - (anchor - start_ms) // step_ms * step_ms, end_ms + 1, step_ms)
    present = {c.open_time_ms for c in page}
    stop = end_ms if len(page) < limit else page[-1].open_time_ms
    ranges: list[tuple[int, int]] = []
    previous_missing = None
    for t in expected:
        if t > stop:
            break
        if t in present:
            previous_missing = None
            continue
        if previous_missing is not None:
            ranges[-1] = (ranges[-1][0], t)
        else:
            ranges.append((t, t))
        previous_missing = t
    return ranges
