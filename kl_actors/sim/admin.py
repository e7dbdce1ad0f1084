"""Admin API of the simulator (`/_sim/...`): JSON in and out, never weighted, never counted.

Routes:
- `GET  /_sim/info`          seed, n_symbols, anchor_ms, tradfi, odd, halted, phase_3d_days, phase_1w_days,
                             weight_limit, server_time_ms, options
- `GET  /_sim/stats`         requests per path (the archive host's too: "/data/futures/um/...",
                             and "/" for the bucket listing) and per "SYMBOL interval",
                             statuses, weight per minute window per IP, kline candles served
                             per minute, WebSocket counters; `by_ip`: per client IP (the
                             connection's peer address: 127.0.0.2 and 127.0.0.3 are two clients
                             of a 127.0.0.1 listener) requests, weight charged, 429 and 418
- `POST /_sim/stats/reset`
- `GET|POST /_sim/faults`    read / partially update the fault switches (see faults.py); key
                             "archive": the list of archive fault rules, replacing the current
                             one ([] clears): {"fault": "missing" | "late" (+ "until_ms") |
                             "bad_checksum" | "truncated" | "republished" (+ "at_ms"?=0) |
                             "gap" (+ "start_ms", "end_ms": candles left out of the file),
                             "pattern": glob on the zip's key or file name} (see archive.py)
- `POST /_sim/holes`         {"symbol": "BTCUSDT" | "*", "start_ms", "end_ms"}, or
                             {"symbol", "clear": true} to serve that symbol's candles again
- `POST /_sim/list`          {"symbol", "onboard_ms"?} → new TRADING USDT perpetual (with archive
                             files for its past days and months)
- `POST /_sim/delist`        {"symbol", "status"?="SETTLING", "at_ms"?=now}
- `POST /_sim/resume`        {"symbol", "at_ms"?=now} → a halted symbol trades again (no candles
                             for the halt itself)
- `POST /_sim/ws/drop`       close every WebSocket connection now
- `POST /_sim/ws/inject`     {"text": [str], "binary_hex": [hex], "big_text_bytes": n} raw frames
                             to every WebSocket connection, sent as they are
- `GET  /_sim/truth?symbol=&interval=&startTime=&endTime=`  final closed candles (holes and
                             listings applied; the final_delay fault does not apply)
Errors: HTTP 400 `{"error": "<text>"}`.

The archive host (its own port, the third stdout line; `archive.py`, `archive_server.py`):
- `GET /data/futures/um/{daily,monthly}/klines/<SYMBOL>/<iname>/<file>.zip[.CHECKSUM]`
  (`1mo` for 1M; 3d/1w/1mo monthly only; nothing for the newest `--archive-lag-days` days or
  the current month); a missing key → 404 S3 `<Error><Code>NoSuchKey</Code>...`;
- `GET /?delimiter=/&prefix=data/futures/um/...&marker=&max-keys=` → S3 ListObjects XML,
  at most 1000 entries a page, `IsTruncated` / `NextMarker` for the next page.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from . import archive
from . import timeframes as tf
from .state import SimState

_encode = msgspec.json.Encoder().encode


def _json(data, status: int = 200) -> web.Response:
    return web.Response(body=_encode(data), status=status, content_type="application/json")


def _bad(text: str) -> web.Response:
    return _json({"error": text}, 400)


class AdminApi:
    def __init__(self, state: SimState, ws_hub):
        self.state = state
        self.ws_hub = ws_hub

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/_sim/info", self.info)
        app.router.add_get("/_sim/stats", self.stats)
        app.router.add_post("/_sim/stats/reset", self.stats_reset)
        app.router.add_get("/_sim/faults", self.get_faults)
        app.router.add_post("/_sim/faults", self.set_faults)
        app.router.add_post("/_sim/holes", self.holes)
        app.router.add_post("/_sim/list", self.list_symbol)
        app.router.add_post("/_sim/delist", self.delist)
        app.router.add_post("/_sim/resume", self.resume)
        app.router.add_post("/_sim/ws/drop", self.ws_drop)
        app.router.add_post("/_sim/ws/inject", self.ws_inject)
        app.router.add_get("/_sim/truth", self.truth)

    async def _body(self, request: web.Request) -> dict:
        raw = await request.read()
        data = msgspec.json.decode(raw) if raw else {}
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        return data

    async def info(self, request):
        st = self.state
        m = st.market
        return _json({"seed": m.seed, "n_symbols": m.n_symbols, "anchor_ms": m.anchor_ms, **m.extras,
                      "phase_3d_days": tf.phase_3d_days(), "phase_1w_days": tf.phase_1w_days(),
                      "month_shift_days": tf.month_shift_days(),
                      "weight_limit": st.limiter.limit, "server_time_ms": st.now_ms(),
                      "options": vars(st.options)})

    async def stats(self, request):
        st = self.state
        s = st.stats
        weights = {ip: {str(w): used for w, used in ips.history.items()}
                   for ip, ips in st.limiter.ips.items()}
        bans = {ip: {"ban_until_ms": ips.ban_until_ms, "bans": ips.bans}
                for ip, ips in st.limiter.ips.items() if ips.bans}
        return _json({
            "requests_by_path": dict(s.by_path),
            "requests_by_symbol_interval": dict(s.by_stream),
            "responses_by_status": dict(s.by_status),
            "weight_by_ip_minute": weights,
            "candles_by_minute": {str(m): n for m, n in sorted(s.candles_by_minute.items())},
            "bans": bans,
            "by_ip": {ip: dict(c) for ip, c in s.by_ip.items()},
            "ws": {**s.ws, "active": len(st.connections),
                   "drop_reasons": dict(s.ws_drop_reasons)},
        })

    async def stats_reset(self, request):
        self.state.stats.reset()
        self.state.limiter.reset()
        return _json({"ok": True})

    async def get_faults(self, request):
        return _json(self._faults())

    def _faults(self) -> dict:
        return {**self.state.faults.as_dict(), "archive": self.state.archive_faults}

    async def set_faults(self, request):
        try:
            body = await self._body(request)
            if "archive" in body:
                rules = archive.validate_faults(body.pop("archive"))
                self.state.faults.update(body)  # rules kept only if the rest applies
                self.state.archive_faults = rules
            else:
                self.state.faults.update(body)
        except KeyError as e:
            return _bad(f"unknown fault {e.args[0]!r}")
        except (ValueError, TypeError, msgspec.DecodeError) as e:
            return _bad(str(e))
        return _json(self._faults())

    async def holes(self, request):
        try:
            body = await self._body(request)
            if body.get("clear") is True and isinstance(body.get("symbol"), str):
                self.state.market.clear_holes(body["symbol"])
                return _json({"ok": True, "holes": [vars(h) for h in self.state.market.holes]})
            symbol, start, end = body["symbol"], int(body["start_ms"]), int(body["end_ms"])
        except (KeyError, ValueError, TypeError, msgspec.DecodeError) as e:
            return _bad(f"need symbol, start_ms, end_ms: {e}")
        if symbol != "*" and self.state.market.spec(symbol) is None:
            return _bad(f"unknown symbol {symbol}")
        self.state.market.add_hole(symbol, start, end)
        return _json({"ok": True, "holes": [vars(h) for h in self.state.market.holes]})

    async def list_symbol(self, request):
        try:
            body = await self._body(request)
            symbol = str(body["symbol"])
            onboard = int(body.get("onboard_ms") or self.state.now_ms())
        except (KeyError, ValueError, TypeError, msgspec.DecodeError) as e:
            return _bad(f"need symbol[, onboard_ms]: {e}")
        if self.state.market.spec(symbol) is not None:
            return _bad(f"{symbol} already exists")
        spec = self.state.market.list_symbol(symbol, onboard)
        return _json(spec.exchange_info())

    async def delist(self, request):
        try:
            body = await self._body(request)
            symbol = str(body["symbol"])
            at_ms = int(body.get("at_ms") or self.state.now_ms())
            status = str(body.get("status", "SETTLING"))
        except (KeyError, ValueError, TypeError, msgspec.DecodeError) as e:
            return _bad(f"need symbol[, at_ms, status]: {e}")
        if self.state.market.spec(symbol) is None:
            return _bad(f"unknown symbol {symbol}")
        self.state.market.delist(symbol, at_ms, status)
        return _json(self.state.market.spec(symbol).exchange_info())

    async def resume(self, request):
        try:
            body = await self._body(request)
            symbol = str(body["symbol"])
            at_ms = int(body.get("at_ms") or self.state.now_ms())
        except (KeyError, ValueError, TypeError, msgspec.DecodeError) as e:
            return _bad(f"need symbol[, at_ms]: {e}")
        if self.state.market.spec(symbol) is None:
            return _bad(f"unknown symbol {symbol}")
        self.state.market.resume(symbol, at_ms)
        return _json(self.state.market.spec(symbol).exchange_info())

    async def ws_drop(self, request):
        n = await self.ws_hub.drop_all("admin drop")
        return _json({"dropped": n})

    async def ws_inject(self, request):
        try:
            body = await self._body(request)
            texts = [str(t) for t in body.get("text", [])]
            binaries = [bytes.fromhex(h) for h in body.get("binary_hex", [])]
            big = int(body.get("big_text_bytes", 0))
        except (ValueError, TypeError, msgspec.DecodeError) as e:
            return _bad(f"need text[], binary_hex[], big_text_bytes: {e}")
        if big > 0:
            texts.append('{"stream":"' + "x" * big + '"}')
        n = await self.ws_hub.inject(texts, binaries)
        return _json({"connections": n})

    async def truth(self, request):
        q = request.query
        st = self.state
        symbol, interval = q.get("symbol", ""), q.get("interval", "")
        if st.market.spec(symbol) is None or not tf.is_interval(interval):
            return _bad("need a known symbol and a valid interval")
        try:
            start = int(q.get("startTime", 0))
            now = st.now_ms()
            end = int(q.get("endTime", now))
        except ValueError:
            return _bad("startTime/endTime must be integers")
        return _json(st.market.klines(symbol, interval, start, end, now))
