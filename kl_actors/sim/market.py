"""Deterministic market of the simulator: prices, candle values and which candles exist.

Owns the ground truth. Pure: no clock (every call that depends on time is given `now_ms`), no I/O.
A test process can build the same `Market(seed, n_symbols, anchor_ms)` as the server (read the
server's values from `GET /_sim/info`) and get identical final rows.

Model:
- price p(symbol, t) = base × (1 + Σ a_i·sin(2πt/P_i + φ_i)), five terms with periods from
  ~13 minutes to ~29 days, phases seeded per symbol; continuous in t;
- a final candle: open = p(open_time), close = p(close_time + 1), high/low = max/min(open, close)
  widened by a hash-based fraction growing with √(interval length); volume from a hash-based
  notional, quote volume = volume × mean(o, h, l, c), taker volumes a hash-based fraction (≤ total),
  trade count ≥ 2; strings formatted with the symbol's precisions, quote volumes with 5 decimals;
- the open candle at `now`: close = p(now), the widening and the volumes scaled by the elapsed
  fraction; it converges to the final row at the boundary;
- a candle exists iff its open is ≥ the open of the candle containing onboardDate (that first,
  partial candle exists), its open is ≤ the candle containing `delist_ms` (if any), and its whole
  span [open, close] is not inside a maintenance hole of its symbol or of "*", nor inside one
  daily closed market session of its symbol (`closed_daily`, TradFi).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from . import timeframes as tf
from .universe import SymbolSpec, build_universe, listed_spec

_M64 = (1 << 64) - 1
_TERMS = ((0.06, 29 * tf.DAY), (0.025, 5.3 * tf.DAY), (0.01, 19 * tf.HOUR),
          (0.003, 2.3 * tf.HOUR), (0.0012, 13 * tf.MINUTE))


def mix64(x: int) -> int:
    """splitmix64 finaliser: a fast, well-spread 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


@dataclass
class Hole:
    symbol: str  # a symbol or "*"
    start_ms: int
    end_ms: int


class PriceModel:
    """Per-symbol continuous price and candle values (final, live, provisional)."""

    def __init__(self, spec: SymbolSpec):
        self.spec = spec
        h = spec.seed
        terms = []
        for i, (amp, period) in enumerate(_TERMS):
            h = mix64(h + i)
            phase = (h & 0xFFFFFF) / 0x1000000 * 2 * math.pi
            period *= 0.8 + 0.4 * ((h >> 24) & 0xFFFF) / 0x10000
            terms.append((2 * math.pi / period, phase, amp * spec.base_price))
        self.terms = tuple(terms)
        self.pfmt = f".{spec.price_precision}f"
        self.qfmt = f".{spec.quantity_precision}f"
        self.pp = spec.price_precision
        self.qp = spec.quantity_precision
        self.min_qty = 10.0 ** -self.qp
        self.avg_trade = max(400.0, spec.notional_per_min / 800)

    def price(self, t_ms: int) -> float:
        p = self.spec.base_price
        for omega, phase, amp in self.terms:
            p += amp * math.sin(omega * t_ms + phase)
        return round(p, self.pp)

    def _shape(self, interval: str, open_ms: int, close_excl: int):
        h = mix64(self.spec.seed ^ (tf.INTERVAL_INDEX[interval] << 52) ^ open_ms)
        u = [((h >> s) & 0xFFFF) / 65536.0 for s in (0, 16, 32, 48)]
        minutes = (close_excl - open_ms) / 60_000
        width = min(0.08, 0.0006 * math.sqrt(minutes))
        notional = self.spec.notional_per_min * minutes * (0.3 + 1.4 * u[2])
        return u, width, notional

    def values(self, interval: str, open_ms: int, close_excl: int, at_ms: int | None = None):
        """(o, h, l, c, v, q, n, V, Q) as numbers; at_ms inside the candle gives the live state."""
        u, width, notional = self._shape(interval, open_ms, close_excl)
        o = self.price(open_ms)
        c_final = self.price(close_excl)
        mid_final = (o + c_final) / 2
        v_final = max(self.min_qty, round(notional / mid_final, self.qp))
        n_final = max(2, int(notional / self.avg_trade))
        frac = 0.25 + 0.5 * u[3]
        if at_ms is None or at_ms >= close_excl:
            f, c, v, n = 1.0, c_final, v_final, n_final
        else:
            f = max(0.0, (at_ms - open_ms) / (close_excl - open_ms))
            c = self.price(at_ms)
            v = round(v_final * f, self.qp)
            n = int(n_final * f)
        hi = round(max(o, c) * (1 + width * u[0] * f), self.pp)
        lo = round(min(o, c) * (1 - width * u[1] * f), self.pp)
        mean = (o + hi + lo + c) / 4
        taker = round(v * frac, self.qp)
        return o, hi, lo, c, v, v * mean, n, taker, taker * mean

    def row(self, interval: str, open_ms: int, close_excl: int, vals) -> list:
        o, hi, lo, c, v, q, n, tv, tq = vals
        pf, qf = self.pfmt, self.qfmt
        return [open_ms, format(o, pf), format(hi, pf), format(lo, pf), format(c, pf),
                format(v, qf), close_excl - 1, format(q, ".5f"), n, format(tv, qf),
                format(tq, ".5f"), "0"]

    def final_row(self, interval: str, open_ms: int) -> list:
        close_excl = tf.next_open(interval, open_ms)
        return self.row(interval, open_ms, close_excl, self.values(interval, open_ms, close_excl))

    def live_row(self, interval: str, open_ms: int, now_ms: int) -> list:
        close_excl = tf.next_open(interval, open_ms)
        return self.row(interval, open_ms, close_excl,
                        self.values(interval, open_ms, close_excl, now_ms))

    def provisional_row(self, interval: str, open_ms: int) -> list:
        """A just-closed candle as served before it is final: fewer trades, less volume."""
        close_excl = tf.next_open(interval, open_ms)
        o, hi, lo, c, v, q, n, tv, tq = self.values(interval, open_ms, close_excl)
        v2 = round(v * 0.97, self.qp)
        tv2 = min(v2, tv)
        return self.row(interval, open_ms, close_excl,
                        (o, hi, lo, c, v2, q * 0.97, n - 1, tv2, tq * 0.97))


class Market:
    """The symbol universe, its prices and which candles exist; mutable by admin actions."""

    def __init__(self, seed: int = 1, n_symbols: int = 20, anchor_ms: int | None = None,
                 tradfi: int = 0, odd: int = 0, halted: int = 0):
        if anchor_ms is None:
            anchor_ms = int(time.time() * 1000) // tf.DAY * tf.DAY
        self.seed, self.n_symbols, self.anchor_ms = seed, n_symbols, anchor_ms
        self.extras = {"tradfi": tradfi, "odd": odd, "halted": halted}
        self.specs: dict[str, SymbolSpec] = {
            s.symbol: s for s in build_universe(seed, n_symbols, anchor_ms, tradfi, odd, halted)}
        self.models: dict[str, PriceModel] = {k: PriceModel(s) for k, s in self.specs.items()}
        self.holes: list[Hole] = []
        self.version = 0  # bumped on every change that can alter served history

    # -- universe -------------------------------------------------------------------------
    def symbols(self) -> list[SymbolSpec]:
        return list(self.specs.values())

    def spec(self, symbol: str) -> SymbolSpec | None:
        return self.specs.get(symbol)

    def continuous_symbol(self, pair: str, contract_type: str) -> str | None:
        for s in self.specs.values():
            if s.pair == pair and s.contract_type == contract_type:
                return s.symbol
        return None

    def list_symbol(self, symbol: str, onboard_ms: int) -> SymbolSpec:
        spec = listed_spec(self.seed, symbol, onboard_ms)
        self.specs[symbol] = spec
        self.models[symbol] = PriceModel(spec)
        self.version += 1
        return spec

    def delist(self, symbol: str, at_ms: int, status: str = "SETTLING") -> None:
        spec = self.specs[symbol]
        spec.status = status
        spec.delist_ms = at_ms
        self.version += 1

    def resume(self, symbol: str, at_ms: int) -> None:
        """A halted symbol trades again from `at_ms`: nothing exists for the halt itself."""
        spec = self.specs[symbol]
        if spec.delist_ms is not None and at_ms > spec.delist_ms + 1:
            self.holes.append(Hole(symbol, spec.delist_ms + 1, at_ms - 1))
        spec.status = "TRADING"
        spec.delist_ms = None
        self.version += 1

    def add_hole(self, symbol: str, start_ms: int, end_ms: int) -> None:
        self.holes.append(Hole(symbol, start_ms, end_ms))
        self.version += 1

    def clear_holes(self, symbol: str) -> None:
        """The exchange serves a symbol's candles again (a blip is over)."""
        self.holes = [h for h in self.holes if h.symbol != symbol]
        self.version += 1

    # -- existence and selection ----------------------------------------------------------
    def _holes_for(self, symbol: str) -> list[Hole]:
        return [h for h in self.holes if h.symbol in ("*", symbol)]

    def bounds(self, symbol: str, interval: str, now_ms: int) -> tuple[int, int]:
        """(first, last) open times that may exist at `now_ms` (last < first: none)."""
        spec = self.specs[symbol]
        first = tf.floor_open(interval, spec.onboard_ms)
        last = tf.floor_open(interval, now_ms)
        if spec.delist_ms is not None:
            last = min(last, tf.floor_open(interval, spec.delist_ms))
        return first, last

    def _closed(self, symbol: str, open_ms: int, close_ms: int) -> bool:
        """The candle lies wholly inside one daily closed session of its symbol."""
        session = self.specs[symbol].closed_daily
        if session is None:
            return False
        day = open_ms - open_ms % tf.DAY
        return day + session[0] <= open_ms and close_ms < day + session[1]

    def exists(self, symbol: str, interval: str, open_ms: int, now_ms: int) -> bool:
        first, last = self.bounds(symbol, interval, now_ms)
        if not first <= open_ms <= last or tf.floor_open(interval, open_ms) != open_ms:
            return False
        close = tf.close_time(interval, open_ms)
        return not (any(h.start_ms <= open_ms and close <= h.end_ms for h in self._holes_for(symbol))
                    or self._closed(symbol, open_ms, close))

    def select_opens(self, symbol: str, interval: str, start_ms: int | None,
                     end_ms: int | None, limit: int, now_ms: int) -> list[int]:
        """Open times served by klines (binance-api.md §1.2): ascending, at most `limit`.

        start only / both: the oldest `limit` from the first aligned open ≥ start;
        end only / neither: the newest `limit` with open ≤ end (≤ now).
        """
        first, last = self.bounds(symbol, interval, now_ms)
        lo = first if start_ms is None else max(first, tf.ceil_open(interval, start_ms))
        hi = last if end_ms is None else min(last, tf.floor_open(interval, end_ms))
        if lo > hi or limit <= 0:
            return []
        holes = self._holes_for(symbol)
        closed = self.specs[symbol].closed_daily is not None
        step = tf.FIXED_MS.get(interval)
        ascending = start_ms is not None
        if step is not None and not holes and not closed:
            if ascending:
                return list(range(lo, min(hi, lo + (limit - 1) * step) + 1, step))
            return list(range(max(lo, hi - (limit - 1) * step), hi + 1, step))
        candidates = (range(lo, hi + 1, step) if step is not None
                      else tf.opens_between(interval, lo, hi))
        if not ascending:
            candidates = reversed(candidates)
        out = []
        for o in candidates:
            close = (o + step - 1) if step is not None else tf.close_time(interval, o)
            if not (any(h.start_ms <= o and close <= h.end_ms for h in holes)
                    or (closed and self._closed(symbol, o, close))):
                out.append(o)
                if len(out) == limit:
                    break
        return out if ascending else out[::-1]

    # -- ground truth ---------------------------------------------------------------------
    def kline(self, symbol: str, interval: str, open_time_ms: int) -> list | None:
        """The final row of one candle, or None if that candle does not exist (ever, ignoring
        whether it has closed yet)."""
        if symbol not in self.specs or not self.exists(symbol, interval, open_time_ms,
                                                       open_time_ms):
            return None
        return self.models[symbol].final_row(interval, open_time_ms)

    def klines(self, symbol: str, interval: str, start_ms: int, end_ms: int,
               now_ms: int | None = None) -> list[list]:
        """Final rows of every existing candle with open in [start_ms, end_ms] that has closed
        by `now_ms` (default: the wall clock)."""
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        opens = self.select_opens(symbol, interval, start_ms, end_ms, 10**9, now_ms)
        model = self.models[symbol]
        return [model.final_row(interval, o) for o in opens
                if tf.next_open(interval, o) <= now_ms]
