"""The scheduler's view of the exchange's symbols (a part of the scheduler actor, by idea).

Reads exchangeInfo in a thread (a slow exchange never stalls the loop), applies listings,
delistings, halts and resumptions, and learns where the exchange opens 3d candles. A mixin of
`Scheduler`: it uses the scheduler's state and never runs on its own.
"""

from __future__ import annotations


import requests

from .. import exchange
from ..core import intervals, klines
from ..core.discovery import Discovered, DiscoveryError, changes
from ..httpcap import BodyTooLarge, get_capped
from ..messages import SymbolsUpdate

# Stored 3d tables read for their phase before the exchange is asked instead.
STORED_PHASE_TABLES = 20


class Discovery:
    def _discover(self, now: float) -> None:
        """Read exchangeInfo in a thread (a slow exchange must not stall the loop), then apply it."""
        if self.discovery is None:
            probe = False
            if "3d" in self.config.klines.intervals and self.phase_3d_ms is None:
                stored = self._stored_phase_3d()
                if stored is not None:
                    self._set_phase_3d(stored, "stored")
                probe = stored is None
            # exchangeInfo goes out through the first egress group (`self.http`): its budget pays.
            if not self.budgets.try_spend(self.budgets.first, 1 + probe, self.clock.now_ms()):
                self.next_discovery = now + 1.0
                return
            self.discovery = self.discovery_pool.submit(self._fetch_exchange_info, self.clock.now_ms(), probe)
            return
        if not self.discovery.done():
            return
        future, self.discovery = self.discovery, None
        try:
            used, sent_ms, found, phase, phase_error = future.result()
        except (requests.RequestException, DiscoveryError, BodyTooLarge) as exc:
            self.next_discovery = now + 5.0
            self.log.warning("discovery_failed", error=str(exc)[:300], known_symbols=len(self.trading),
                             action="keeping last list, retry in 5.0s")
            return
        if used >= 0:
            self.budgets.observe(self.budgets.first, used, sent_ms, self.clock.now_ms())
        if "3d" in self.config.klines.intervals and self.phase_3d_ms is None:
            self._set_phase_3d(phase, "exchange", phase_error)
        self.next_discovery = now + self.config.symbols.rediscover_s
        if not self.config.weight.limit_per_minute and found.weight_limit_per_minute:
            self.budgets.set_limit(found.weight_limit_per_minute, self.config.weight.usable_fraction)
        new = {s.symbol: s for s in found.trading}
        halted = {s.symbol: s for s in found.halted}
        moved = changes(self.trading, self.halted, found, first=not self.known_symbols)
        listed, resumed = moved.listed, moved.resumed
        for symbol in moved.delisted:
            dropped = self._drop_symbol(symbol)
            self.log.info("symbol_delisted", symbol=symbol, dropped_tasks=dropped, action="no longer requested; data kept")
        for symbol in moved.halted:
            dropped = self._drop_symbol(symbol)
            self.log.info("symbol_halted", symbol=symbol, status=halted[symbol].status, dropped_tasks=dropped,
                          action="nothing live until it trades again; not delisted, data kept")
        for symbol in resumed:
            self.log.info("symbol_resumed", symbol=symbol, action="tail backfill, then live")
        self.trading = new
        self.halted = halted
        if (listed or resumed) and self.known_symbols:
            if listed:
                self.log.info("symbols_listed", symbols=",".join(listed[:20]), count=len(listed), action="backfill")
            self.next_plan = 0.0
            self.plan_again = self.planning is not None
        self.known_symbols = True
        self.send(self.writer, SymbolsUpdate(symbols=found.trading + found.halted + found.not_trading,
                                             seen_at_ms=self.clock.now_ms()), block=False)
        if found.rejected:
            self.log.warning("symbols_rejected", symbols=",".join(found.rejected[:10]), count=len(found.rejected),
                             reason="not a valid table-name symbol", action="ignored")
        self.log.info("discovered", trading=len(new), halted=len(halted), not_trading=len(found.not_trading),
                      weight_limit=self.budgets.budget(self.budgets.first).limit)

    def _fetch_exchange_info(self, sent_ms: int, probe_3d: bool) -> tuple[int, int, Discovered, int | None, str]:
        """In the discovery thread: GET and parse; touches no actor state. With `probe_3d`, also
        the newest 3d candle of one trading symbol (weight 1): where the exchange opens 3d candles."""
        used, found = exchange.read_exchange_info(self.http, self.config.exchange, self.config.symbols)
        phase, error = None, ""
        if probe_3d and found.trading:
            try:
                answer, page_body = get_capped(
                    self.http, exchange.url(self.config.exchange, exchange.KLINES_PATH),
                    params={"symbol": found.trading[0].symbol, "interval": "3d", "limit": 1},
                    cap_bytes=64 * 1024, timeout_s=self.config.exchange.request_timeout_s)
                page = klines.decode_page(page_body) if answer.status_code == 200 else []
                if page and page[-1].open_time_ms % intervals.DAY_MS == 0:
                    phase = intervals.phase_of("3d", page[-1].open_time_ms)
                else:
                    error = f"HTTP {answer.status_code}, {len(page)} candles"
            except (requests.RequestException, klines.PageError, BodyTooLarge) as exc:
                error = str(exc)[:200]
        return used, sent_ms, found, phase, error

    def _stored_phase_3d(self) -> int | None:
        """Where the stored 3d candles open (any 3d table: they all come from the exchange). At
        most a few tables are read (the writer makes empty ones ahead): else the exchange is asked."""
        store = self._open_store()
        try:
            with_3d = [symbol for symbol, tables in (store.kline_tables() if store else {}).items() if "3d" in tables]
            for symbol in with_3d[:STORED_PHASE_TABLES]:
                last = store.last_open_ms(symbol, "3d")
                if last is not None:
                    return intervals.phase_of("3d", last)
            return None
        finally:
            if store:
                store.close()

    def _set_phase_3d(self, phase: int | None, source: str, error: str = "") -> None:
        """Never from arithmetic the exchange might not share: stored candles, else the exchange's
        newest 3d candle, else (logged) `klines.phase_3d_days` until the next discovery asks again."""
        if phase is None:
            assumed = self.config.klines.phase_3d_days
            self.log.warning("phase_3d_unknown", error=error or "no trading symbol",
                             action=f"assuming epoch day {assumed} mod 3, asking again at the next discovery")
            self.phase_3d_assumed_ms = assumed * intervals.DAY_MS
            return
        self.phase_3d_ms = phase
        self.log.info("phase_3d", epoch_day_mod_3=phase // intervals.DAY_MS, source=source)

    def _phase_3d(self) -> int:
        return self.phase_3d_ms if self.phase_3d_ms is not None else self.phase_3d_assumed_ms

    def _drop_symbol(self, symbol: str) -> int:
        """Forget a symbol's queued work (delisted or halted); returns the tasks and pages dropped."""
        dropped = self.book.drop_symbol(symbol) + self.backlog.drop_symbol(symbol)
        if self.archive is not None:
            dropped += self.archive.drop_symbol(symbol)
        self.coverage.forget(symbol)
        for key in [k for k in self.open_backfill if k[0] == symbol]:
            del self.open_backfill[key]  # its queued tasks are gone; in-flight ones still close
        self.backfill_open = sum(self.open_backfill.values())
        return dropped

