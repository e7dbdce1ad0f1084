"""WebSocket market streams of the simulator (binance-api.md §5).

Owns: the routes `/ws`, `/ws/<stream>`, `/stream?streams=a/b` (also under `/market/`), the
control messages, kline / continuous-kline events, server pings, lifetime and rate limits.

Behaviours chosen where the docs are UNVERIFIED:
- streams: `<symbol lower>@kline_<interval>` and `<pair lower>_<perpetual|current_quarter|
  next_quarter>@continuousKline_<interval>`; a well-formed name for an unknown symbol is
  accepted and stays silent; a malformed name in SUBSCRIBE → `{"error":{"code":2,"msg":
  "Invalid request: invalid stream name '<name>'"},"id":N}` (nothing subscribed);
- more than `max_streams_per_conn` streams: in the URL → the server closes at once with code
  1008 "too many streams"; by SUBSCRIBE → error reply code 2 "Invalid request: too many streams
  (max N per connection)" and none of that request's streams is added;
- bad JSON → `{"error":{"code":3,"msg":"Invalid JSON"},"id":null}`; unknown method → code 2;
- more than `ws_max_msgs_per_s` (10) incoming frames (text, ping, pong) in any 1 s → close 1008;
- every `ws_push_ms` each stream gets its current candle (if it exists); after a close, the
  next candle is held back until the `"x":true` event, sent `ws_close_delay_ms` + 0-200 ms
  (hash-based) after the boundary; a candle in a hole / outside listing gets no events;
- server ping every `ws_ping_s`; no pong within `ws_pong_timeout_s` after a ping → close 1008;
- more than `ws_max_conns_per_5min` (300) connection attempts per IP in 5 minutes (spot's
  figure; USD-M's is UNVERIFIED) → the handshake is refused with HTTP 429
  `{"code":-1003,"msg":"Too many connection attempts."}`;
- lifetime: the server closes with code 1001 "lifetime" once the connection is
  `ws_lifetime_s` old; `POST /_sim/ws/drop` closes with 1001 "admin drop".
"""

from __future__ import annotations

import asyncio
import re
import time
import zlib
from collections import deque

import msgspec
from aiohttp import WSMsgType, web

from . import timeframes as tf
from .market import mix64
from .state import SimState

_encode = msgspec.json.Encoder().encode
_IV = "|".join(tf.INTERVALS)
# Any lower-case symbol name without separators (odd symbols: `币安人生usdt@kline_1m`, `btc-usdt@kline_1m`).
_KLINE = re.compile(rf"^([^@/?&#\sA-Z]+)@kline_({_IV})$")
_CONT = re.compile(rf"^([a-z0-9]+)_(perpetual|current_quarter|next_quarter)"
                   rf"@continuousKline_({_IV})$")


def parse_stream(name: str):
    """(kind, symbol_or_pair, contract_type, interval) or None if malformed."""
    m = _KLINE.match(name)
    if m:
        return "kline", m.group(1).upper(), None, m.group(2)
    m = _CONT.match(name)
    if m:
        return "continuous", m.group(1).upper(), m.group(2).upper(), m.group(3)
    return None


class Stream:
    __slots__ = ("name", "kind", "key", "contract", "interval", "open_ms")

    def __init__(self, name: str, parsed):
        self.name = name
        self.kind, self.key, self.contract, self.interval = parsed
        self.open_ms: int | None = None  # candle currently being reported


class Connection:
    def __init__(self, hub: "WsHub", ws: web.WebSocketResponse, combined: bool):
        self.hub, self.ws, self.combined = hub, ws, combined
        self.streams: dict[str, Stream] = {}
        self.opened = time.monotonic()
        self.incoming: deque = deque()
        self.wake = asyncio.Event()
        self.last_ping = self.last_pong = time.monotonic()
        self.closing = False

    async def close(self, code: int, reason: str, by_server: bool = True) -> None:
        if self.closing:
            return
        self.closing = True
        if by_server:
            self.hub.state.stats.ws["dropped_by_server"] += 1
            self.hub.state.stats.ws_drop_reasons[reason] += 1
        await self.ws.close(code=code, message=reason.encode())

    async def send(self, obj) -> None:
        await self.ws.send_str(_encode(obj).decode())

    # -- incoming -------------------------------------------------------------------------
    def _count_incoming(self) -> bool:
        now = time.monotonic()
        self.incoming.append(now)
        while self.incoming and self.incoming[0] <= now - 1.0:
            self.incoming.popleft()
        return len(self.incoming) <= self.hub.state.options.ws_max_msgs_per_s

    async def control(self, text: str) -> None:
        try:
            msg = msgspec.json.decode(text)
            if not isinstance(msg, dict):
                raise ValueError
        except (msgspec.DecodeError, ValueError):
            await self.send({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None})
            return
        mid, method, params = msg.get("id"), msg.get("method"), msg.get("params") or []
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list):
                return await self._error(mid, "params must be a list")
            parsed = {}
            for name in params:
                p = parse_stream(name) if isinstance(name, str) else None
                if p is None:
                    return await self._error(mid, f"invalid stream name '{name}'")
                parsed[name] = p
            if method == "SUBSCRIBE":
                limit = self.hub.state.options.max_streams_per_conn
                if len(set(self.streams) | set(parsed)) > limit:
                    return await self._error(
                        mid, f"too many streams (max {limit} per connection)")
                for name, p in parsed.items():
                    self.streams.setdefault(name, Stream(name, p))
            else:
                for name in parsed:
                    self.streams.pop(name, None)
            await self.send({"result": None, "id": mid})
            self.wake.set()
        elif method == "LIST_SUBSCRIPTIONS":
            await self.send({"result": list(self.streams), "id": mid})
        elif method == "SET_PROPERTY":
            if len(params) == 2 and params[0] == "combined" and isinstance(params[1], bool):
                self.combined = params[1]
                await self.send({"result": None, "id": mid})
            else:
                await self._error(mid, "unknown property")
        elif method == "GET_PROPERTY":
            if params == ["combined"]:
                await self.send({"result": self.combined, "id": mid})
            else:
                await self._error(mid, "unknown property")
        else:
            await self._error(mid, f"unknown method {method!r}")

    async def _error(self, mid, text: str) -> None:
        await self.send({"error": {"code": 2, "msg": f"Invalid request: {text}"}, "id": mid})

    # -- outgoing -------------------------------------------------------------------------
    def _symbol(self, s: Stream) -> str | None:
        market = self.hub.state.market
        if s.kind == "kline":
            return s.key if market.spec(s.key) is not None else None
        return market.continuous_symbol(s.key, s.contract)

    def _event(self, s: Stream, symbol: str, open_ms: int, now: int, final: bool) -> dict:
        st = self.hub.state
        model = st.market.models[symbol]
        row = model.final_row(s.interval, open_ms) if final else \
            model.live_row(s.interval, open_ms, now)
        n, q = row[8], row[7]
        if final and st.faults.ws_close_differs:
            n, q = n + 1, format(float(q) * 1.0001, ".5f")
        first = (open_ms // 1000) * 13 + (model.spec.seed & 0xFFFFF)
        k = {"t": row[0], "T": row[6]}
        if s.kind == "kline":
            k["s"] = symbol
        k.update({"i": s.interval, "f": first, "L": first + max(n - 1, 0), "o": row[1],
                  "c": row[4], "h": row[2], "l": row[3], "v": row[5], "n": n, "x": final,
                  "q": q, "V": row[9], "Q": row[10], "B": "0"})
        if s.kind == "kline":
            ev = {"e": "kline", "E": now, "s": symbol, "k": k}
        else:
            k["f"], k["L"] = first * 1000, first * 1000 + n * 37
            ev = {"e": "continuous_kline", "E": now, "ps": s.key, "ct": s.contract, "k": k}
        return {"stream": s.name, "data": ev} if self.combined else ev

    def _close_delay(self, s: Stream) -> int:
        base = self.hub.state.options.ws_close_delay_ms
        return base + mix64(zlib.crc32(s.name.encode()) ^ (s.open_ms or 0)) % 200

    async def run(self) -> None:
        try:
            await self._run()
        except (ConnectionResetError, RuntimeError):
            pass  # the peer went away; the receive loop notices and cleans up
        finally:
            if not self.ws.closed and not self.closing:
                await self.ws.close()

    async def _run(self) -> None:
        """Push loop: live updates every push period, x:true events after each close, pings,
        lifetime."""
        st = self.hub.state
        push_s = st.options.ws_push_ms / 1000
        next_push = time.monotonic()
        while not self.closing and not self.ws.closed:
            mono = time.monotonic()
            if mono - self.opened >= st.faults.ws_lifetime_s:
                await self.close(1001, "lifetime")
                return
            if mono - self.last_ping >= st.options.ws_ping_s:
                if self.last_pong < self.last_ping and \
                        mono - self.last_ping >= st.options.ws_pong_timeout_s:
                    await self.close(1008, "pong timeout")
                    return
                if self.last_pong >= self.last_ping:
                    self.last_ping = mono
                    await self.ws.ping(b"sim")
            now = st.now_ms()
            due_push = mono >= next_push
            wake_at = next_push
            for s in list(self.streams.values()):
                symbol = self._symbol(s)
                if symbol is None:
                    continue
                current = tf.floor_open(s.interval, now)
                if s.open_ms is None:
                    s.open_ms = current
                if current > s.open_ms:
                    close_excl = tf.next_open(s.interval, s.open_ms)
                    due = close_excl + self._close_delay(s)
                    if now < due:
                        wake_at = min(wake_at, mono + (due - now) / 1000)
                        continue
                    if st.market.exists(symbol, s.interval, s.open_ms, now):
                        await self.send(self._event(s, symbol, s.open_ms, now, True))
                    s.open_ms = current
                    continue
                if due_push and st.market.exists(symbol, s.interval, current, now):
                    await self.send(self._event(s, symbol, current, now, False))
            if due_push:
                next_push = mono + push_s
                wake_at = min(wake_at, next_push)
            wake_at = min(wake_at, self.opened + st.faults.ws_lifetime_s,
                          self.last_ping + st.options.ws_ping_s)
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), max(0.0, wake_at - time.monotonic()))
            except asyncio.TimeoutError:
                pass


class WsHub:
    def __init__(self, state: SimState):
        self.state = state
        self.attempts: dict[str, deque] = {}  # IP → connection attempt times (monotonic)

    def _attempt_allowed(self, ip: str) -> bool:
        now = time.monotonic()
        q = self.attempts.setdefault(ip, deque())
        q.append(now)
        while q and q[0] <= now - 300:
            q.popleft()
        return len(q) <= self.state.options.ws_max_conns_per_5min

    def add_routes(self, app: web.Application) -> None:
        for prefix in ("", "/market"):
            app.router.add_get(prefix + "/ws", self.handle_raw)
            app.router.add_get(prefix + "/ws/{stream}", self.handle_raw)
            app.router.add_get(prefix + "/stream", self.handle_combined)

    async def handle_raw(self, request: web.Request):
        name = request.match_info.get("stream")
        return await self._serve(request, [name] if name else [], combined=False)

    async def handle_combined(self, request: web.Request):
        names = [n for n in request.query.get("streams", "").split("/") if n]
        return await self._serve(request, names, combined=True)

    async def _serve(self, request: web.Request, names: list[str], combined: bool):
        st = self.state
        if not self._attempt_allowed(request.remote or "?"):
            st.stats.ws_drop_reasons["connection attempts refused"] += 1
            return web.Response(status=429, content_type="application/json",
                                body=b'{"code":-1003,"msg":"Too many connection attempts."}')
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = Connection(self, ws, combined)
        st.connections.add(conn)
        st.stats.ws["opened"] += 1
        pusher = None
        try:
            if len(set(names)) > st.options.max_streams_per_conn:
                await conn.close(1008, "too many streams")
                return ws
            for name in names:
                p = parse_stream(name)
                if p is not None:  # malformed URL names are ignored
                    conn.streams.setdefault(name, Stream(name, p))
            pusher = asyncio.create_task(conn.run())
            async for msg in ws:
                if not conn._count_incoming():
                    await conn.close(1008, "too many messages")
                    break
                if msg.type == WSMsgType.TEXT:
                    await conn.control(msg.data)
                elif msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type == WSMsgType.PONG:
                    conn.last_pong = time.monotonic()
                elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            if pusher is not None:
                pusher.cancel()
            st.connections.discard(conn)
            st.stats.ws["closed"] += 1
            if not ws.closed:
                await ws.close()
        return ws

    async def inject(self, texts: list[str], binaries: list[bytes]) -> int:
        """Send raw frames to every open connection, as they are (hostile-input tests)."""
        conns = [c for c in self.state.connections if not c.closing and not c.ws.closed]
        for conn in conns:
            for text in texts:
                await conn.ws.send_str(text)
            for data in binaries:
                await conn.ws.send_bytes(data)
        return len(conns)

    async def drop_all(self, reason: str) -> int:
        conns = list(self.state.connections)
        for conn in conns:
            await conn.close(1001, reason)
        return len(conns)
