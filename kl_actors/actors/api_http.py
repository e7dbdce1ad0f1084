"""The read API's HTTP side (a part of the api actor, by idea): an aiohttp server on its own event
loop in one thread of the api process, answering like the exchange.

Routes: `GET /fapi/v1/ping`, `/fapi/v1/time`, `/fapi/v1/exchangeInfo`, `/fapi/v1/klines`;
anything else 404 with the exchange's body. Every answer carries `X-MBX-USED-WEIGHT-1M` (this
API's own count for the client's address); klines answers carry `X-KL-Complete`.

All database reads happen in the server thread, on its own read-only connection (`ApiStore`),
inline in the handler: a page is a few milliseconds of primary-key walk, and one thread keeps
the connection single-threaded. What this thread shares with the actor's loop is read-only
here: the clock (`ServerClock`) and the open candles (`LiveCandles`), both written by the loop
with single assignments. It never writes the database and never talks to the exchange.
"""

from __future__ import annotations

import asyncio
import threading
import time

import apsw
import msgspec
from aiohttp import web

from ..config import Config, api_address
from ..core import intervals
from ..core.api_rules import (PATHS, ApiError, ClientWeights, LiveCandles, exchange_info_body,
                              exchange_info_tail, expected_span, is_complete, not_found, parse_klines,
                              request_weight, too_many, window, with_live)
from ..core.clock import ServerClock
from ..log import Logger
from ..store import StoreError
from ..store_api import ApiStore

JSON = "application/json"
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
COMPLETE_HEADER = "X-KL-Complete"
# How often the symbols (meta_symbols) are looked at again, and a missing database retried.
SYMBOLS_REFRESH_S = 1.0
REOPEN_S = 1.0
BIND_RETRY_S = 5.0
_encode = msgspec.json.Encoder().encode


class ApiServer:
    """The HTTP server thread. `start()` returns at once; `alive_at` is the monotonic time of the
    loop's last turn (the actor restarts the process when it stops moving)."""

    def __init__(self, config: Config, clock: ServerClock, live: LiveCandles, log: Logger) -> None:
        self.config = config
        self.clock = clock
        self.live = live
        self.log = log
        self.host, self.port = api_address(config)
        self.weights = ClientWeights(config.api.client_weight_limit)
        self.store: ApiStore | None = None
        self._next_open = 0.0
        self._symbols: dict[str, tuple[str, int]] = {}
        self._symbols_version: tuple | None = None
        self._symbols_checked = 0.0
        self._info_tail = b""
        self.requests = 0
        self.refused = 0  # 429: over the client's weight limit
        self.errors = 0
        self.alive_at = time.monotonic()
        self.serving = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="api-http", daemon=True)

    # -- the thread ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(lambda: None)  # wake it to see the flag
        self._thread.join(timeout=5)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()
            if self.store is not None:
                self.store.close()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            while not self._stopped.is_set():
                try:
                    site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
                    await site.start()
                    break
                except OSError as exc:
                    # A port held by another program: keep trying (a restart could not do better).
                    self.log.error("api_listen_failed", listen=self.config.api.listen, error=str(exc)[:200],
                                   action=f"retry in {BIND_RETRY_S:g}s")
                    await self._sleep(BIND_RETRY_S)
            else:
                return
            self.serving = True
            self.log.info("api_listening", url=f"http://{self.config.api.listen}",
                          client_weight_limit=self.config.api.client_weight_limit or "unlimited")
            while not self._stopped.is_set():
                await self._sleep(0.5)
        finally:
            await runner.cleanup()

    async def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopped.is_set() and time.monotonic() < end:
            self.alive_at = time.monotonic()
            await asyncio.sleep(min(0.25, end - time.monotonic()))
        self.alive_at = time.monotonic()

    # -- one request ---------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        client = request.remote or "?"
        path, query = request.path, request.query
        now_ms = self.clock.now_ms()
        allowed, used, retry_s = self.weights.charge(client, request_weight(path, query), now_ms)
        headers = {WEIGHT_HEADER: str(used)}
        try:
            if not allowed:
                self.refused += 1
                headers["Retry-After"] = str(retry_s)
                raise too_many(client, self.weights.limit)
            if request.method != "GET" or path not in PATHS:
                raise not_found(path, request.method)
            if path == "/fapi/v1/klines":
                body, complete = self.klines(query, now_ms)
                headers[COMPLETE_HEADER] = "true" if complete else "false"
            elif path == "/fapi/v1/exchangeInfo":
                body = exchange_info_body(self.exchange_info_tail(), now_ms)
            elif path == "/fapi/v1/time":
                body = b'{"serverTime":' + str(now_ms).encode() + b"}"
            else:
                body = b"{}"
            return web.Response(body=body, headers=headers, content_type=JSON)
        except ApiError as exc:
            return web.Response(status=exc.status, body=exc.body(), headers=headers, content_type=JSON)
        except (apsw.Error, StoreError) as exc:
            # The file went away or is unreadable: one line (rate-limited), an answer, go on.
            self.errors += 1
            self._drop_store()
            self.log.warning("api_read_failed", path=path, error=str(exc)[:200], errors=self.errors,
                             action="answered 503; database reopened at the next request")
            return web.Response(status=503, body=ApiError(-1001, "Internal error; unable to process your "
                                                                 "request. Please try again.").body(),
                                headers=headers, content_type=JSON)

    # -- the database --------------------------------------------------------------------------
    def _db(self) -> ApiStore | None:
        if self.store is None and time.monotonic() >= self._next_open:
            self._next_open = time.monotonic() + REOPEN_S
            try:
                self.store = ApiStore.open(self.config.database)
            except (StoreError, apsw.Error):
                return None  # no file yet: the writer makes it; nothing is held meanwhile
        return self.store

    def _drop_store(self) -> None:
        if self.store is not None:
            try:
                self.store.close()
            except apsw.Error:
                pass
        self.store = None
        self._symbols_version = None

    def _refresh_symbols(self) -> None:
        if time.monotonic() - self._symbols_checked < SYMBOLS_REFRESH_S:
            return
        self._symbols_checked = time.monotonic()
        store = self._db()
        if store is None:
            return
        version = store.symbols_version()
        if version == self._symbols_version:
            return
        rows = store.symbol_rows()
        self._symbols = {r.symbol: (r.status, r.onboard_ms) for r in rows}
        limit = self.config.api.client_weight_limit or 1_000_000
        self._info_tail = exchange_info_tail(rows, limit)
        self._symbols_version = version

    def exchange_info_tail(self) -> bytes:
        self._refresh_symbols()
        return self._info_tail or exchange_info_tail([], self.config.api.client_weight_limit or 1_000_000)

    def _known(self, symbol: str, interval: str) -> bool:
        if symbol in self._symbols:
            return True
        store = self._db()
        return store is not None and store.has_table(symbol, interval)

    # -- klines --------------------------------------------------------------------------------
    def klines(self, query, now_ms: int) -> tuple[bytes, bool]:
        self._refresh_symbols()
        q = parse_klines(query, lambda symbol: self._known(symbol, query.get("interval", "")))
        w = window(q)
        store = self._db()
        rows = store.kline_rows(q.symbol, q.interval, w.lo_ms, w.hi_ms, w.limit, w.newest) if store else []
        rows = with_live(rows, self.live.current(q.symbol, q.interval, now_ms), w)
        return _encode(rows), self._complete(q.symbol, q.interval, w, rows, now_ms, store)

    def _complete(self, symbol: str, interval: str, w, rows: list, now_ms: int, store: ApiStore | None) -> bool:
        if store is None:
            return False
        status, onboard_ms = self._symbols.get(symbol, ("", 0))
        # 3d and 1w: the grid the table's own candles show (any stored row; a cheap key lookup).
        phase_ms = None
        if interval in intervals.PHASED_MS:
            sample = rows[0][0] if rows else store.last_open_ms(symbol, interval)
            phase_ms = None if sample is None else intervals.phase_of(interval, sample)
        if status == "TRADING":
            newest_ms = intervals.align(interval, now_ms, phase_ms)
        else:
            # Halted, delisted or unknown: the exchange's newest candle is not known from here;
            # what is stored is taken as the end of its history.
            newest_ms = store.last_open_ms(symbol, interval)
        first_ms = intervals.align(interval, onboard_ms, phase_ms) if onboard_ms > 0 else None
        span = expected_span(interval, w, rows, first_ms, newest_ms, phase_ms)
        holes = store.holes_between(symbol, interval, *span) if span else []
        return is_complete(interval, span, rows, newest_ms is not None, holes)
