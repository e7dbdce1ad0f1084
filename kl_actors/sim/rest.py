"""REST market-data routes of the simulator: ping, time, exchangeInfo, klines, continuousKlines.

Owns: parameter rules and error bodies (binance-api.md §1-3), the weight charge and the
`X-MBX-USED-WEIGHT-1M` header on every response, and the REST faults. Admin routes live in
`admin.py` and are never weighted or counted.

Behaviours chosen where the docs are UNVERIFIED:
- checks run in this order: mandatory parameters (-1102), number syntax of limit/startTime/
  endTime (-1100), limit outside 1..1500 (-1130, so limit=0 and negative too), interval (-1120),
  symbol (-1121), contractType outside PERPETUAL/CURRENT_QUARTER/NEXT_QUARTER (-1130),
  startTime > endTime (-1023);
- a startTime off a boundary starts at the first boundary ≥ startTime; endTime only gives the
  newest `limit` candles with open ≤ endTime; both give the oldest `limit` inside the range;
- a range with no candles (before listing, after delisting, inside a hole, PENDING_TRADING) → [];
- SETTLING/CLOSE symbols keep their history queryable; unknown symbols → -1121;
- continuousKlines for a pair with no contract of that type (e.g. NEXT_QUARTER) → [];
  an unknown pair → -1121 "Invalid symbol.";
- unknown paths → 404 `{"code":-5000,"msg":"Path <path>, Method GET is invalid"}`, weight 1.
"""

from __future__ import annotations

import asyncio

import msgspec
from aiohttp import web

from . import timeframes as tf
from .state import SimState
from .weights import klines_weight

_encode = msgspec.json.Encoder().encode
_CONTRACT_TYPES = ("PERPETUAL", "CURRENT_QUARTER", "NEXT_QUARTER")
JSON = "application/json"


class ApiError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400):
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def error_body(code: int, msg: str) -> bytes:
    return _encode({"code": code, "msg": msg})


def _mandatory(name: str) -> ApiError:
    return ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, "
                           "or malformed.")


def _int_param(query, name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() and not (raw.startswith("-") and raw[1:].isdigit()):
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range "
                              "is '^[0-9]{1,20}$'.")
    return int(raw)


class RestApi:
    def __init__(self, state: SimState):
        self.state = state
        self._info_cache: tuple | None = None
        self.routes = {
            "/fapi/v1/ping": (self.ping, lambda q: 1),
            "/fapi/v1/time": (self.time, lambda q: 1),
            "/fapi/v1/exchangeInfo": (self.exchange_info, lambda q: 1),
            "/fapi/v1/klines": (self.klines, lambda q: klines_weight(q.get("limit"))),
            "/fapi/v1/continuousKlines": (self.continuous_klines,
                                          lambda q: klines_weight(q.get("limit"))),
        }

    # -- the shell: faults, weight, header, stats -----------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        st = self.state
        path = request.path
        handler, weight_fn = self.routes.get(path, (None, lambda q: 1))
        st.stats.by_path[path] += 1
        fault = st.dice.pick() if handler is not None else None
        if st.faults.latency_ms > 0:
            await asyncio.sleep(st.faults.latency_ms / 1000)
        ip = request.remote or "?"
        now = st.now_ms()
        headers = {}
        charged = 0
        forced = self._forced(path)
        if forced:
            status = forced
            used = st.limiter.used(ip, now)
            headers["Retry-After"] = "60"
            body = error_body(-1003, "Too many requests (forced by the throttle_klines/ban_klines fault).")
        elif fault == "5xx":
            status, body = 503, error_body(
                -1001, "Internal error; unable to process your request. Please try again.")
            used = st.limiter.used(ip, now)
        else:
            weight = weight_fn(request.query)
            decision = st.limiter.charge(ip, weight, now)
            used = decision.used
            charged = weight if decision.status == 200 else 0
            if decision.status == 429:
                status = 429
                headers["Retry-After"] = str(decision.retry_after_s)
                body = error_body(-1003, f"Too many requests; current limit of IP({ip}) is "
                                  f"{st.limiter.limit} requests per minute. Please use the "
                                  "websocket for live updates to avoid polling the API.")
            elif decision.status == 418:
                status = 418
                headers["Retry-After"] = str(decision.retry_after_s)
                body = error_body(-1003, f"Way too many requests; IP banned until "
                                  f"{decision.ban_until_ms}. Please use the websocket for live "
                                  "updates to avoid bans.")
            elif handler is None:
                status, body = 404, error_body(-5000, f"Path {path}, Method "
                                                      f"{request.method} is invalid")
            else:
                try:
                    status, body = 200, handler(request.query, now)
                except ApiError as e:
                    status, body = e.status, error_body(e.code, e.msg)
        if "Retry-After" in headers and st.faults.retry_after_header:
            if st.faults.retry_after_header == "<absent>":
                del headers["Retry-After"]
            else:
                headers["Retry-After"] = st.faults.retry_after_header
        if status == 200 and path == "/fapi/v1/klines" and st.faults.oversize_klines_bytes > 0:
            body = b" " * st.faults.oversize_klines_bytes + body
        headers["X-MBX-USED-WEIGHT-1M"] = str(used)
        st.stats.count_status(status)
        st.stats.count_ip(ip, status, charged)
        if status == 200 and fault == "reset":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError()
        if status == 200 and fault == "malformed":
            body = body[: max(1, len(body) // 2)] + b"#garbled"
        if fault == "timeout":
            await asyncio.sleep(st.faults.timeout_s)
        return web.Response(status=status, body=body, headers=headers, content_type=JSON)

    def _forced(self, path: str) -> int:
        """429/418 forced by a fault on the next klines requests (0: none)."""
        f = self.state.faults
        if path != "/fapi/v1/klines":
            return 0
        if f.throttle_klines > 0:
            f.throttle_klines -= 1
            return 429
        if f.ban_klines > 0:
            f.ban_klines -= 1
            return 418
        return 0

    # -- endpoints ------------------------------------------------------------------------
    def ping(self, query, now: int) -> bytes:
        return b"{}"

    def time(self, query, now: int) -> bytes:
        return _encode({"serverTime": now})

    def exchange_info(self, query, now: int) -> bytes:
        market, limit = self.state.market, self.state.limiter.limit
        key = (market.version, limit)
        if self._info_cache is None or self._info_cache[0] != key:
            rest = _encode({
                "futuresType": "U_MARGINED",
                "rateLimits": [
                    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                     "intervalNum": 1, "limit": limit},
                    {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1,
                     "limit": 1200},
                    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                     "limit": 300}],
                "exchangeFilters": [],
                "assets": [{"asset": a, "marginAvailable": True, "autoAssetExchange": "-10000"}
                           for a in ("USDT", "USDC", "BUSD")],
                "symbols": [s.exchange_info() for s in market.symbols()],
            })
            self._info_cache = (key, rest)
        return b'{"timezone":"UTC","serverTime":' + str(now).encode() + b"," \
            + self._info_cache[1][1:]

    def _range(self, query) -> tuple[int | None, int | None, int, str]:
        start = _int_param(query, "startTime")
        end = _int_param(query, "endTime")
        limit = _int_param(query, "limit")
        if limit is None:
            limit = 500
        elif not 1 <= limit <= 1500:
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        interval = query.get("interval", "")
        if not tf.is_interval(interval):
            raise ApiError(-1120, "Invalid interval.")
        return start, end, limit, interval

    def _page(self, symbol: str, interval: str, start, end, limit: int, now: int) -> bytes:
        if start is not None and end is not None and start > end:
            raise ApiError(-1023, "Start time is greater than end time.")
        st = self.state
        st.stats.by_stream[f"{symbol} {interval}"] += 1
        opens = st.market.select_opens(symbol, interval, start, end, limit, now)
        st.stats.candles_by_minute[now - now % 60_000] += len(opens)
        return st.renderer.render(symbol, interval, opens, now, st.faults.final_delay_ms)

    def klines(self, query, now: int) -> bytes:
        for name in ("symbol", "interval"):
            if not query.get(name):
                raise _mandatory(name)
        start, end, limit, interval = self._range(query)
        symbol = query["symbol"]
        if self.state.market.spec(symbol) is None:
            raise ApiError(-1121, "Invalid symbol.")
        return self._page(symbol, interval, start, end, limit, now)

    def continuous_klines(self, query, now: int) -> bytes:
        for name in ("pair", "contractType", "interval"):
            if not query.get(name):
                raise _mandatory(name)
        start, end, limit, interval = self._range(query)
        pair, contract = query["pair"], query["contractType"]
        market = self.state.market
        if not any(s.pair == pair for s in market.symbols()):
            raise ApiError(-1121, "Invalid symbol.")
        if contract not in _CONTRACT_TYPES:
            raise ApiError(-1130, "Data sent for parameter 'contractType' is not valid.")
        symbol = market.continuous_symbol(pair, contract)
        if symbol is None:
            if start is not None and end is not None and start > end:
                raise ApiError(-1023, "Start time is greater than end time.")
            return b"[]"
        return self._page(symbol, interval, start, end, limit, now)
