"""The rules of the exchange-compatible read API (pure): parameters and their error codes, which
candles a klines query returns, request weight per client, the open candle from the live feed,
and whether an answer is complete.

Owns: what `/fapi/v1/klines` means (binance-api.md 1.2, as the simulator implements it):
- parameters are checked in the exchange's order: `symbol`/`interval` missing or empty (-1102),
  a number that is not `-?[0-9]{1,20}` (-1100), `limit` outside 1..1500 (-1130), an unknown
  interval (-1120), an unknown symbol (-1121), `startTime > endTime` (-1023);
- `startTime` given (with or without `endTime`): the oldest `limit` candles with open time in
  [startTime, endTime]; no `startTime`: the newest `limit` with open time <= endTime (or now);
- the newest candle, still open, is served from the live feed only while the clock is inside it;
- weight: the exchange's table by `limit` (`budget.weight_for_limit`, 5 without a limit), 1 for
  every other path; counted per client and calendar minute of server time, a 400 counts, a 429
  does not.
- complete (`X-KL-Complete`): the answer holds every candle the exchange would return for the
  query, as far as the database can tell: the expected open times of the span the answer covers
  (from the listing candle to the current one, clipped to the query), minus the confirmed exchange
  holes (`meta_holes`), counted, never listed.

Never touches the database, a socket or the clock: the actor passes rows, `now` and the holes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

import msgspec

from . import intervals
from .budget import weight_for_limit

DEFAULT_LIMIT = 500
MAX_LIMIT = 1500
# Times outside these are clamped (a 20-digit number does not fit SQLite's 64-bit integer).
MIN_MS = 0
MAX_MS = 253_402_300_799_999  # 9999-12-31 23:59:59.999 UTC: the last time `intervals` can hold
KLINES_PATH = "/fapi/v1/klines"
PATHS = ("/fapi/v1/ping", "/fapi/v1/time", "/fapi/v1/exchangeInfo", KLINES_PATH)
_NUMBER_RE = re.compile(r"-?[0-9]{1,20}")
_encode = msgspec.json.Encoder().encode


class ApiError(Exception):
    """An answer the exchange gives as `{"code": .., "msg": ..}` with an HTTP status."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status

    def body(self) -> bytes:
        return error_body(self.code, self.msg)


def error_body(code: int, msg: str) -> bytes:
    return _encode({"code": code, "msg": msg})


def not_found(path: str, method: str) -> ApiError:
    """The exchange's answer for a path it does not serve (the simulator's wording)."""
    return ApiError(-5000, f"Path {path[:200]}, Method {method[:10]} is invalid", status=404)


def too_many(client: str, limit: int) -> ApiError:
    return ApiError(-1003, f"Too many requests; current limit of IP({client[:64]}) is {limit} requests per "
                           "minute. Please use the websocket for live updates to avoid polling the API.", status=429)


class KlineQuery(NamedTuple):
    symbol: str
    interval: str
    start_ms: int | None
    end_ms: int | None
    limit: int


class Window(NamedTuple):
    """The rows to read: open time in [lo_ms, hi_ms], at most `limit`, the newest (`newest`) or
    the oldest of them."""

    lo_ms: int
    hi_ms: int
    limit: int
    newest: bool


def _mandatory(name: str) -> ApiError:
    return ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _number(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if not _NUMBER_RE.fullmatch(raw):
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    return int(raw)


def parse_klines(query: Mapping[str, str], known_symbol: Callable[[str], bool]) -> KlineQuery:
    """The query's parameters, or ApiError with the exchange's code for the first bad one."""
    for name in ("symbol", "interval"):
        if not query.get(name):
            raise _mandatory(name)
    start_ms, end_ms = _number(query, "startTime"), _number(query, "endTime")
    limit = _number(query, "limit")
    if limit is None:
        limit = DEFAULT_LIMIT
    elif not 1 <= limit <= MAX_LIMIT:
        raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
    interval = query["interval"]
    if interval not in intervals.INTERVALS:
        raise ApiError(-1120, "Invalid interval.")
    symbol = query["symbol"]
    if not known_symbol(symbol):
        raise ApiError(-1121, "Invalid symbol.")
    if start_ms is not None and end_ms is not None and start_ms > end_ms:
        raise ApiError(-1023, "Start time is greater than end time.")
    return KlineQuery(symbol, interval, start_ms, end_ms, limit)


def _clamp(t_ms: int) -> int:
    return min(max(t_ms, MIN_MS), MAX_MS)


def window(q: KlineQuery) -> Window:
    lo = MIN_MS if q.start_ms is None else _clamp(q.start_ms)
    hi = MAX_MS if q.end_ms is None else _clamp(q.end_ms)
    return Window(lo, hi, q.limit, newest=q.start_ms is None)


def request_weight(path: str, query: Mapping[str, str]) -> int:
    """The exchange's weight of one request: klines by its raw `limit` (absent or unreadable: the
    default 500, weight 5), everything else 1."""
    if path != KLINES_PATH:
        return 1
    raw = query.get("limit")
    limit = int(raw) if raw and _NUMBER_RE.fullmatch(raw) else DEFAULT_LIMIT
    return weight_for_limit(limit)


# -- the newest candle, from the live feed ---------------------------------------------------------
def is_current(open_ms: int, close_ms: int, now_ms: int) -> bool:
    """The candle is the one the clock is inside: the exchange serves it, still open."""
    return open_ms <= now_ms <= close_ms


def with_live(rows: list, live: tuple | None, w: Window) -> list:
    """`rows` (ascending, from the database) with the live open candle where the exchange would
    put it: only inside the window, only newer than every stored row, and within `limit`."""
    if live is None or not w.lo_ms <= live[0] <= w.hi_ms or (rows and rows[-1][0] >= live[0]):
        return rows
    if w.newest:
        return (rows + [live])[-w.limit:]
    return rows + [live] if len(rows) < w.limit else rows


class LiveCandles:
    """The newest open (not yet closed) candle per (symbol, interval) from the feed; bounded."""

    MAX_KEYS = 200_000

    def __init__(self) -> None:
        self.latest: dict[tuple[str, str], tuple] = {}
        self.refused = 0  # new keys past MAX_KEYS

    def update(self, symbol: str, interval: str, closed: bool, row: tuple) -> None:
        key = (symbol, interval)
        held = self.latest.get(key)
        if held is not None and held[0] > row[0]:
            return  # an older candle arriving late
        if closed:
            if held is not None and held[0] == row[0]:
                del self.latest[key]  # closed: the database has it (or will, within a second)
            return
        if held is None and len(self.latest) >= self.MAX_KEYS:
            self.refused += 1
            return
        self.latest[key] = row

    def current(self, symbol: str, interval: str, now_ms: int) -> tuple | None:
        row = self.latest.get((symbol, interval))
        if row is None or not is_current(row[0], row[6], now_ms):
            return None
        return row


# -- completeness --------------------------------------------------------------------------------
def _ceil(interval: str, t_ms: int, phase_ms: int | None) -> int:
    opened = intervals.align(interval, t_ms, phase_ms)
    return opened if opened >= t_ms else intervals.next_open(interval, opened)


def expected_span(interval: str, w: Window, rows: list, first_ms: int | None, newest_ms: int | None,
                  phase_ms: int | None) -> tuple[int, int] | None:
    """The open times [a, b] the exchange would fill for this answer, or None when there are
    none. `first_ms`: the listing candle's open (None: unknown, from the epoch); `newest_ms`: the
    newest candle that exists now (the current one of a trading symbol); None: unknown, the span
    cannot be known (the answer is then not complete)."""
    if newest_ms is None:
        return None
    lo = _ceil(interval, max(w.lo_ms, first_ms or MIN_MS), phase_ms)
    hi = min(intervals.align(interval, w.hi_ms, phase_ms), newest_ms)
    full = len(rows) >= w.limit
    if full and w.newest:
        lo = rows[0][0]
    elif full:
        hi = rows[-1][0]
    return (lo, hi) if lo <= hi else None


def merged(holes: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(holes):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def expected_count(interval: str, span: tuple[int, int], holes: Iterable[tuple[int, int]]) -> int:
    """Open times in span (both aligned) minus those inside confirmed exchange holes."""
    a, b = span
    count = intervals.count_between(interval, a, b)
    for start, end in merged(holes):
        lo, hi = max(start, a), min(end, b)
        if lo <= hi:
            count -= intervals.count_between(interval, lo, hi)
    return count


def is_complete(interval: str, span: tuple[int, int] | None, rows: list, newest_known: bool,
                holes: Iterable[tuple[int, int]]) -> bool:
    """Whether `rows` hold every candle of `span` (None: nothing expected when `newest_known`,
    else unknown, so not complete)."""
    if span is None:
        return newest_known
    a, b = span
    held = sum(1 for row in rows if a <= row[0] <= b)
    return held >= expected_count(interval, span, holes)


# -- weight per client ---------------------------------------------------------------------------
class ClientWeights:
    """Weight per client address in the current calendar minute of server time; `limit` 0:
    counted, never refused. Only this minute's clients are kept (at most MAX_CLIENTS; more in
    one minute share one count)."""

    MAX_CLIENTS = 10_000
    OTHERS = "*"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.window_ms = 0
        self.used: dict[str, int] = {}

    def charge(self, client: str, weight: int, now_ms: int) -> tuple[bool, int, int]:
        """(allowed, weight used this minute after the request, seconds until the next minute)."""
        window = now_ms - now_ms % intervals.MINUTE_MS
        if window != self.window_ms:
            self.window_ms, self.used = window, {}
        if client not in self.used and len(self.used) >= self.MAX_CLIENTS:
            client = self.OTHERS
        used = self.used.get(client, 0)
        retry_s = max(1, -(-(window + intervals.MINUTE_MS - now_ms) // 1000))
        if self.limit and used + weight > self.limit:
            return False, used, retry_s
        self.used[client] = used + weight
        return True, used + weight, retry_s


# -- exchangeInfo --------------------------------------------------------------------------------
class SymbolRow(NamedTuple):
    symbol: str
    status: str
    onboard_ms: int
    info_json: str  # the exchange's own entry as last seen ("" when never kept: an older file)


def symbol_entry(row: SymbolRow, quote_asset: str = "USDT") -> msgspec.Raw:
    """The symbol's exchangeInfo entry: the exchange's own as last seen, else the fields we know.
    The status is always the latest recorded one (an entry kept from an earlier discovery, when a
    later one was too large to keep, may show an older status)."""
    if row.info_json:
        if f'"status":"{row.status}"' in row.info_json:
            return msgspec.Raw(row.info_json.encode())
        try:
            entry = msgspec.json.decode(row.info_json)
        except msgspec.DecodeError:
            entry = None
        if isinstance(entry, dict):
            entry["status"] = row.status
            return msgspec.Raw(_encode(entry))
    base = row.symbol[:-len(quote_asset)] if row.symbol.endswith(quote_asset) else row.symbol
    return msgspec.Raw(_encode({
        "symbol": row.symbol, "pair": row.symbol, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
        "onboardDate": row.onboard_ms or 0, "status": row.status or "TRADING", "baseAsset": base,
        "quoteAsset": quote_asset, "marginAsset": quote_asset, "underlyingType": "COIN",
        "underlyingSubType": [], "filters": [], "orderTypes": [], "timeInForce": []}))


def exchange_info_tail(rows: Iterable[SymbolRow], weight_limit: int) -> bytes:
    """exchangeInfo without its leading `{"timezone":"UTC","serverTime":N,` (added per request),
    i.e. from `"futuresType"` to the closing brace; key order as the 2026 recording."""
    body = _encode({
        "futuresType": "U_MARGINED",
        "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                        "limit": weight_limit}],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [symbol_entry(r) for r in rows],
    })
    return body[1:]


def exchange_info_body(tail: bytes, now_ms: int) -> bytes:
    return b'{"timezone":"UTC","serverTime":' + str(int(now_ms)).encode() + b"," + tail
