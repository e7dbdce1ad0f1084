"""Everything one simulator process holds at run time, shared by the REST, admin and WS layers.

Owns: the server clock (wall clock + fault clock offset), the market, the page renderer, the
weight limiter, the faults and their dice, the archive and its fault rules, the statistics and
the set of open WebSocket connections. No I/O here.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from . import timeframes as tf
from .archive import DEFAULT_HEADER_FROM_MS, Archive
from .faults import FaultDice, Faults
from .market import Market
from .pages import PageRenderer
from .weights import WeightLimiter


@dataclass
class Options:
    host: str = "127.0.0.1"
    port: int = 0
    symbols: int = 20
    seed: int = 1
    weight_limit: int = 2400
    ban_base_s: float = 120.0
    abuse_after: int = 5
    anchor_ms: int | None = None
    ws_push_ms: int = 250
    ws_ping_s: float = 180.0
    ws_pong_timeout_s: float = 600.0
    ws_close_delay_ms: int = 200  # x:true event goes out 200-400 ms after the close
    max_streams_per_conn: int = 200
    ws_max_msgs_per_s: int = 10
    ws_max_conns_per_5min: int = 300
    row_cache: int = 400_000
    tradfi_symbols: int = 0
    odd_symbols: int = 0
    halted_symbols: int = 0
    phase_3d_days: int = 0
    phase_1w_days: int = 4  # Mondays
    month_shift_days: int = 0
    archive_port: int = 0
    archive_cache: str | None = None  # None: under the system temp dir
    archive_header_from_ms: int = DEFAULT_HEADER_FROM_MS
    archive_lag_days: int = 2


class Stats:
    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.by_path: Counter = Counter()
        self.by_stream: Counter = Counter()  # "BTCUSDT 1m" → klines requests
        self.candles_by_minute: Counter = Counter()  # server minute start → kline candles served
        self.by_status: Counter = Counter({k: 0 for k in ("200", "4xx", "429", "418", "5xx")})
        self.ws: Counter = Counter({"opened": 0, "closed": 0, "dropped_by_server": 0})
        self.ws_drop_reasons: Counter = Counter()
        # client IP (the connection's peer address) -> requests, weight charged, 429s, 418s
        self.by_ip: dict[str, Counter] = {}

    def count_ip(self, ip: str, status: int, weight: int) -> None:
        c = self.by_ip.get(ip)
        if c is None:
            c = self.by_ip[ip] = Counter({"requests": 0, "weight": 0, "429": 0, "418": 0})
        c["requests"] += 1
        c["weight"] += weight
        if status in (429, 418):
            c[str(status)] += 1

    def count_status(self, status: int) -> None:
        if status in (429, 418):
            key = str(status)
        elif status >= 500:
            key = "5xx"
        elif status >= 400:
            key = "4xx"
        else:
            key = "200"
        self.by_status[key] += 1


@dataclass
class SimState:
    options: Options
    market: Market = field(init=False)
    renderer: PageRenderer = field(init=False)
    limiter: WeightLimiter = field(init=False)
    faults: Faults = field(default_factory=Faults)
    dice: FaultDice = field(init=False)
    stats: Stats = field(default_factory=Stats)
    connections: set = field(default_factory=set)
    archive: Archive = field(init=False)
    archive_faults: list = field(default_factory=list)  # rules, see archive.py

    def __post_init__(self):
        o = self.options
        tf.set_phase_3d(o.phase_3d_days)
        tf.set_phase_1w(o.phase_1w_days)
        tf.set_month_shift(o.month_shift_days)
        self.market = Market(seed=o.seed, n_symbols=o.symbols, anchor_ms=o.anchor_ms,
                             tradfi=o.tradfi_symbols, odd=o.odd_symbols, halted=o.halted_symbols)
        self.renderer = PageRenderer(self.market, max_rows=o.row_cache)
        self.limiter = WeightLimiter(o.weight_limit, o.ban_base_s, o.abuse_after)
        self.dice = FaultDice(self.faults, o.seed)
        self.archive = Archive(self.market, header_from_ms=o.archive_header_from_ms,
                               lag_days=o.archive_lag_days)

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.faults.clock_offset_ms
