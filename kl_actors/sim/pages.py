"""Rendering kline pages as JSON bytes, fast (the simulator must never be a benchmark's bottleneck).

Owns: the row cache (encoded final rows keyed by (symbol, interval, open_time), FIFO-evicted) and
the choice, per row, between the open candle (live values, never cached), a just-closed candle
inside the `final_delay_ms` fault window (provisional values, never cached) and a final row.
Pure: `now_ms` is passed in.
"""

from __future__ import annotations

import msgspec

from . import timeframes as tf
from .market import Market

_encode = msgspec.json.Encoder().encode


class PageRenderer:
    def __init__(self, market: Market, max_rows: int = 400_000):
        self.market = market
        self.max_rows = max_rows
        self.cache: dict[tuple, bytes] = {}
        self._version = market.version

    def _evict(self) -> None:
        drop = max(1, self.max_rows // 10)
        for key in list(self.cache.keys())[:drop]:
            del self.cache[key]

    def render(self, symbol: str, interval: str, opens: list[int], now_ms: int,
               final_delay_ms: int = 0) -> bytes:
        if self.market.version != self._version:
            # Listing/holes never change a row's values, but a re-listed symbol may.
            self.cache.clear()
            self._version = self.market.version
        model = self.market.models[symbol]
        cache = self.cache
        step = tf.FIXED_MS.get(interval)
        parts = []
        for o in opens:
            close_excl = o + step if step is not None else tf.next_open(interval, o)
            if close_excl > now_ms:
                parts.append(_encode(model.live_row(interval, o, now_ms)))
                continue
            if now_ms - close_excl < final_delay_ms:
                parts.append(_encode(model.provisional_row(interval, o)))
                continue
            key = (symbol, interval, o)
            row = cache.get(key)
            if row is None:
                row = _encode(model.final_row(interval, o))
                if len(cache) >= self.max_rows:
                    self._evict()
                cache[key] = row
            parts.append(row)
        return b"[" + b",".join(parts) + b"]"
