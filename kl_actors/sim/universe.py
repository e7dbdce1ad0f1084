"""Symbol universe of the simulated exchange (pure, deterministic from the seed).

Owns: which symbols exist, their exchangeInfo attributes (status, contract type, quote asset,
precisions, onboard/delivery dates) and the per-symbol parameters of the price model.

Universe for `n_symbols` = N:
- N TRADING USDT perpetuals: BTCUSDT, ETHUSDT, 1000PEPEUSDT, 1000SHIBUSDT, then deterministic
  pseudo names (2-8 uppercase letters/digits + "USDT");
- always also: BTCUSDC/ETHUSDC (USDC perpetuals), BTCUSDT_261225/ETHUSDT_261225
  (CURRENT_QUARTER), BTCSTUSDT (contractType "" and PENDING_TRADING, onboard in the future),
  SRMUSDT (SETTLING), BTSUSDT (CLOSE), BTCBUSD (BUSD-quoted perpetual, TRADING).
Onboard dates are spread from ~6 years before `anchor_ms` to 3 days before it; about one generated
symbol in four is listed within the last 40 days, so a 1000-candle 1h backfill reaches its listing.
BTCUSDT keeps its real onboardDate 1567965300000. SETTLING/CLOSE symbols stopped trading
(`delist_ms`) some days before the anchor; their history up to then stays queryable.

Added on request (all off by default, added to the N crypto perpetuals, never in their place):
- `tradfi` TradFi perpetuals (contractType TRADIFI_PERPETUAL: XAUUSDT, TSLAUSDT, ...); every
  other one (the first, third, ...) has a closed market session every day 21:00-22:00 UTC with
  no candles at all (a candle lies wholly inside it: none; 1d and longer candles still exist);
- `odd` symbols outside `[A-Z0-9]+USDT`: non-ASCII (`币安人生USDT`), one differing from BTCUSDT
  only in case (`BtcUSDT`), one only in punctuation (`BTC-USDT`), then more non-ASCII ones;
- `halted` USDT perpetuals with status TRADING_HALT, halted (no candles) from 2 days before the
  anchor; `Market.resume` lets one trade again.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .timeframes import DAY, floor_open

PERPETUAL_DELIVERY_MS = 4133404800000  # 2100-12-25 08:00 UTC, as on the real exchange
QUARTER_DELIVERY_MS = 1798185600000  # 2026-12-25 08:00 UTC
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@dataclass
class SymbolSpec:
    symbol: str
    pair: str
    contract_type: str
    status: str
    base_asset: str
    quote_asset: str
    onboard_ms: int
    delivery_ms: int
    price_precision: int
    quantity_precision: int
    base_price: float
    seed: int  # 62-bit per-symbol hash seed
    notional_per_min: float
    delist_ms: int | None = None  # no candle opens after this time
    underlying_type: str = "COIN"
    # (start, end) ms after 00:00 UTC of a daily closed market session: no candle lies in it.
    closed_daily: tuple[int, int] | None = None

    def exchange_info(self) -> dict:
        """The symbol's exchangeInfo entry, keys in the order of the 2026 recording."""
        tick = _step(self.price_precision)
        step = _step(self.quantity_precision)
        return {
            "symbol": self.symbol, "pair": self.pair, "contractType": self.contract_type,
            "deliveryDate": self.delivery_ms, "onboardDate": self.onboard_ms,
            "status": self.status, "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000", "baseAsset": self.base_asset,
            "quoteAsset": self.quote_asset, "marginAsset": self.quote_asset,
            "pricePrecision": self.price_precision,
            "quantityPrecision": self.quantity_precision,
            "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": self.underlying_type,
            "underlyingSubType": ["Crypto"] if self.seed % 3 else [],
            "triggerProtect": "0.0500", "liquidationFee": "0.012500",
            "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "4529764",
                 "tickSize": tick},
                {"filterType": "LOT_SIZE", "minQty": step, "stepSize": step, "maxQty": "1000"},
                {"stepSize": step, "filterType": "MARKET_LOT_SIZE", "minQty": step,
                 "maxQty": "120"},
                {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
                {"filterType": "MIN_NOTIONAL", "notional": "5"},
                {"multiplierUp": "1.0500", "multiplierDecimal": "4",
                 "filterType": "PERCENT_PRICE", "multiplierDown": "0.9500"},
                {"positionControlSide": "NONE", "filterType": "POSITION_RISK_CONTROL"},
            ],
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                           "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
            "permissionSets": ["GRID", "COPY", "DCA", "PSB"],
        }


def _step(precision: int) -> str:
    return "1" if precision == 0 else "0." + "0" * (precision - 1) + "1"


def precisions_for(price: float) -> tuple[int, int]:
    """(pricePrecision, quantityPrecision) giving ~5-6 significant price digits."""
    mag = math.floor(math.log10(price))
    price_prec = max(2 if price >= 1 else 1, min(7, 5 - mag))
    qty_prec = 3 if price >= 1000 else (1 if price >= 10 else 0)
    return price_prec, qty_prec


def make_spec(rng: random.Random, symbol: str, *, base_asset: str, quote: str = "USDT",
              pair: str | None = None, contract_type: str = "PERPETUAL",
              status: str = "TRADING", onboard_ms: int, base_price: float,
              delivery_ms: int = PERPETUAL_DELIVERY_MS, delist_ms: int | None = None) -> SymbolSpec:
    pp, qp = precisions_for(base_price)
    return SymbolSpec(
        symbol=symbol, pair=pair or symbol, contract_type=contract_type, status=status,
        base_asset=base_asset, quote_asset=quote, onboard_ms=onboard_ms,
        delivery_ms=delivery_ms, price_precision=pp, quantity_precision=qp,
        base_price=base_price, seed=rng.getrandbits(62),
        notional_per_min=rng.uniform(2e4, 4e6) if symbol not in ("BTCUSDT", "ETHUSDT") else 2e7,
        delist_ms=delist_ms)


TRADFI = (("XAUUSDT", "XAU", 2650.0, "COMMODITY"), ("TSLAUSDT", "TSLA", 410.0, "EQUITY"),
          ("XAGUSDT", "XAG", 31.0, "COMMODITY"), ("NVDAUSDT", "NVDA", 140.0, "EQUITY"),
          ("SPXUSDT", "SPX", 6000.0, "INDEX"), ("AAPLUSDT", "AAPL", 230.0, "EQUITY"),
          ("EURUSDT", "EUR", 1.05, "FX"), ("0700HKUSDT", "0700HK", 52.0, "HK_EQUITY"))
ODD = ("币安人生USDT", "BtcUSDT", "BTC-USDT", "我踏马来了USDT", "Pepe.USDT")
CLOSED_SESSION = (21 * 3_600_000, 22 * 3_600_000)
HALTED_FOR_MS = 2 * DAY


def build_universe(seed: int, n_symbols: int, anchor_ms: int, tradfi: int = 0, odd: int = 0,
                   halted: int = 0) -> list[SymbolSpec]:
    """All symbols, deterministic from (seed, n_symbols, anchor_ms, tradfi, odd, halted)."""
    rng = random.Random(seed * 1_000_003 + 17)
    anchor_day = floor_open("1d", anchor_ms)
    six_years = 6 * 365 * DAY
    specs = [
        make_spec(rng, "BTCUSDT", base_asset="BTC", onboard_ms=1567965300000, base_price=60000.0),
        make_spec(rng, "ETHUSDT", base_asset="ETH", onboard_ms=1569398400000, base_price=3000.0),
        make_spec(rng, "1000PEPEUSDT", base_asset="1000PEPE",
                  onboard_ms=anchor_day - 900 * DAY + 3_600_000, base_price=0.0105),
        make_spec(rng, "1000SHIBUSDT", base_asset="1000SHIB",
                  onboard_ms=anchor_day - 1400 * DAY + 7_200_000, base_price=0.0235),
    ]
    fixed = {"BTCUSDC", "ETHUSDC", "BTCSTUSDT", "SRMUSDT", "BTSUSDT", "BTCBUSD"}
    fixed |= {t[0] for t in TRADFI[:tradfi]} | {f"HALT{chr(65 + i)}USDT" for i in range(min(halted, 26))}
    names = {s.symbol for s in specs} | fixed
    for i in range(max(0, n_symbols - len(specs))):
        while True:
            base = "".join(rng.choice(_ALNUM) for _ in range(rng.randint(2, 8)))
            if base[0].isalpha() and base + "USDT" not in names:
                break
        names.add(base + "USDT")
        if i % 4 == 1:  # recent listing: inside a 1000-candle 1h backfill
            onboard = anchor_ms - rng.randint(3 * DAY, 40 * DAY)
        else:
            onboard = anchor_ms - rng.randint(45 * DAY, six_years)
        onboard = onboard // 60_000 * 60_000 + rng.choice((0, 15_000))
        price = 10 ** rng.uniform(-3.5, 3.5)
        specs.append(make_spec(rng, base + "USDT", base_asset=base, onboard_ms=onboard,
                               base_price=price))
    specs += [
        make_spec(rng, "BTCUSDC", base_asset="BTC", quote="USDC",
                  onboard_ms=anchor_day - 1000 * DAY, base_price=60010.0),
        make_spec(rng, "ETHUSDC", base_asset="ETH", quote="USDC",
                  onboard_ms=anchor_day - 1000 * DAY, base_price=3001.0),
        make_spec(rng, "BTCUSDT_261225", base_asset="BTC", pair="BTCUSDT",
                  contract_type="CURRENT_QUARTER", onboard_ms=1782460800000,
                  base_price=61000.0, delivery_ms=QUARTER_DELIVERY_MS),
        make_spec(rng, "ETHUSDT_261225", base_asset="ETH", pair="ETHUSDT",
                  contract_type="CURRENT_QUARTER", onboard_ms=1782460800000,
                  base_price=3050.0, delivery_ms=QUARTER_DELIVERY_MS),
        make_spec(rng, "BTCSTUSDT", base_asset="BTCST", contract_type="",
                  status="PENDING_TRADING", onboard_ms=anchor_day + 7 * DAY, base_price=12.5),
        make_spec(rng, "SRMUSDT", base_asset="SRM", status="SETTLING",
                  onboard_ms=anchor_day - 1200 * DAY, base_price=0.85,
                  delist_ms=anchor_day - 5 * DAY),
        make_spec(rng, "BTSUSDT", base_asset="BTS", status="CLOSE",
                  onboard_ms=anchor_day - 1500 * DAY, base_price=0.031,
                  delist_ms=anchor_day - 200 * DAY),
        make_spec(rng, "BTCBUSD", base_asset="BTC", quote="BUSD",
                  onboard_ms=anchor_day - 1100 * DAY, base_price=59990.0),
    ]
    # Extras draw from their own generator, so the default universe stays byte-identical.
    extra = random.Random(seed * 7_919 + 3)
    for i in range(tradfi):
        symbol, base, price, kind = TRADFI[i] if i < len(TRADFI) else (f"EQ{i}USDT", f"EQ{i}", 100.0, "EQUITY")
        spec = make_spec(extra, symbol, base_asset=base, contract_type="TRADIFI_PERPETUAL",
                         onboard_ms=anchor_day - extra.randint(60, 400) * DAY, base_price=price)
        spec.underlying_type = kind
        spec.closed_daily = CLOSED_SESSION if i % 2 == 0 else None
        specs.append(spec)
    for i in range(odd):
        symbol = ODD[i] if i < len(ODD) else f"币{i}USDT"
        onboard = anchor_day - extra.randint(30, 700) * DAY + extra.choice((0, 15 * 60_000))
        specs.append(make_spec(extra, symbol, base_asset=symbol[:-4], onboard_ms=onboard,
                               base_price=10 ** extra.uniform(-2, 2)))
    for i in range(halted):
        symbol = f"HALT{chr(65 + i % 26)}{i // 26 or ''}USDT"
        specs.append(make_spec(extra, symbol, base_asset=symbol[:-4], status="TRADING_HALT",
                               onboard_ms=anchor_day - extra.randint(100, 700) * DAY,
                               base_price=10 ** extra.uniform(-2, 2),
                               delist_ms=anchor_ms - HALTED_FOR_MS))
    return specs


def listed_spec(seed: int, symbol: str, onboard_ms: int) -> SymbolSpec:
    """A symbol listed at run time (admin `list`): a TRADING USDT perpetual."""
    rng = random.Random(f"{seed}:{symbol}")
    base = symbol[:-4] if symbol.endswith("USDT") else symbol
    return make_spec(rng, symbol, base_asset=base, onboard_ms=onboard_ms,
                     base_price=10 ** rng.uniform(-2, 2))
