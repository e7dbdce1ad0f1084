"""The scheduler's view of the exchange's symbols (a part of the scheduler actor, by idea).

Reads exchangeInfo in a thread (a slow exchange never stalls the loop), applies listings,
delistings, halts and resumptions, and learns where the exchange opens 3d, 1w and 1M candles
(`core/alignment`). A mixin of
`Scheduler`: it uses the scheduler's state and never runs on its own.
"""

from __future__ import annotations


import requests

from .. import exchange
from ..core import intervals, klines
from ..core.discovery import Discovered, DiscoveryError, changes
from ..httpcap import BodyTooLarge, get_capped
from ..messages import SymbolsUpdate

# Stored tables of an interval read for its alignment before the exchange is asked instead.
STORED_PHASE_TABLES = 20
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class Discovery:
    def _discover(self, now: float) -> None:
        """Read exchangeInfo in a thread (a slow exchange must not stall the loop), then apply it."""
        if self.discovery is None:
            if not self.alignment_read_stored:
                self.alignment_read_stored = True
                for interval, open_ms in self._stored_alignment(self.alignment.unknown()).items():
                    self._learned(self.alignment.learn(interval, open_ms, "stored"))
            probe = self.alignment.unknown()
            # exchangeInfo goes out through the first egress group (`self.http`): its budget pays.
            if not self.budgets.try_spend(self.budgets.first, 1 + len(probe), self.clock.now_ms()):
                self.next_discovery = now + 1.0
                return
            self.discovery = self.discovery_pool.submit(self._fetch_exchange_info, self.clock.now_ms(), probe)
            return
        if not self.discovery.done():
            return
        future, self.discovery = self.discovery, None
        try:
            used, sent_ms, found, seen, errors = future.result()
        except (requests.RequestException, DiscoveryError, BodyTooLarge) as exc:
            self.next_discovery = now + 5.0
            self.log.warning("discovery_failed", error=str(exc)[:300], known_symbols=len(self.trading),
                             action="keeping last list, retry in 5.0s")
            return
        if used >= 0:
            self.budgets.observe(self.budgets.first, used, sent_ms, self.clock.now_ms())
        for interval, open_ms in seen.items():
            self._learned(self.alignment.learn(interval, open_ms, "exchange"))
        for interval, error in errors.items():
            self.log.warning("alignment_unknown", interval=interval, error=error,
                             assumed_phase_days=(self.alignment.phase(interval) or 0) // intervals.DAY_MS,
                             action="assumed until a real candle shows it; asking again at the next discovery")
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

    def _fetch_exchange_info(self, sent_ms: int, probe: list[str]
                             ) -> tuple[int, int, Discovered, dict[str, int], dict[str, str]]:
        """In the discovery thread: GET and parse; touches no actor state. For each interval in
        `probe`, also the newest candle of one trading symbol (weight 1 each): where the exchange
        opens that interval's candles. Returns (used weight, sent at, symbols, interval -> open
        time seen, interval -> why none was seen)."""
        used, found = exchange.read_exchange_info(self.http, self.config.exchange, self.config.symbols)
        seen: dict[str, int] = {}
        errors: dict[str, str] = {}
        for interval in probe:
            if not found.trading:
                errors[interval] = "no trading symbol"
                continue
            try:
                answer, page_body = get_capped(
                    self.http, exchange.url(self.config.exchange, exchange.KLINES_PATH),
                    params={"symbol": found.trading[0].symbol, "interval": interval, "limit": 1},
                    cap_bytes=64 * 1024, timeout_s=self.config.exchange.request_timeout_s)
                page = klines.decode_page(page_body) if answer.status_code == 200 else []
                # Only what a page of this interval may hold: a candle on a whole day (`check_candle`).
                if page and page[-1].open_time_ms % intervals.DAY_MS == 0:
                    seen[interval] = page[-1].open_time_ms
                else:
                    errors[interval] = f"HTTP {answer.status_code}, {len(page)} candles"
            except (requests.RequestException, klines.PageError, BodyTooLarge) as exc:
                errors[interval] = str(exc)[:200]
        return used, sent_ms, found, seen, errors

    def _stored_alignment(self, wanted: list[str]) -> dict[str, int]:
        """interval -> the newest stored open time of one table of it (they all came from the
        exchange). At most a few tables are read per interval (the writer makes empty ones ahead):
        else the exchange is asked."""
        if not wanted:
            return {}
        store = self._open_store()
        seen: dict[str, int] = {}
        try:
            tables = store.kline_tables() if store else {}
            for interval in wanted:
                with_it = [symbol for symbol, by_interval in tables.items() if interval in by_interval]
                for symbol in with_it[:STORED_PHASE_TABLES]:
                    last = store.last_open_ms(symbol, interval)
                    if last is not None:
                        seen[interval] = last
                        break
            return seen
        finally:
            if store:
                store.close()

    def _learned(self, learned) -> None:
        """Log what a real candle showed: the one line a user reads to know the grid in use."""
        if learned.outcome == "contradicted":
            self.log.error("month_alignment_contradicted", open_ms=learned.phase_ms, source=learned.source,
                           action="1M not planned and not fetched live; asking again at the next discovery")
        elif learned.outcome == "confirmed":
            self.log.info("month_alignment", calendar="confirmed", source=learned.source)
        elif learned.interval == "3d":
            self.log.info("phase_3d", epoch_day_mod_3=learned.phase_ms // intervals.DAY_MS, source=learned.source)
        else:
            weekday = WEEKDAYS[(learned.phase_ms // intervals.DAY_MS + 3) % 7]  # epoch day 0 was a Thursday
            self.log.info("phase_1w", epoch_day_mod_7=learned.phase_ms // intervals.DAY_MS, opens=weekday,
                          source=learned.source)

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

