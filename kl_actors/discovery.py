"""Which symbols to follow, from an exchangeInfo body (pure).

Keeps `contractType == PERPETUAL`, `quoteAsset == USDT`, `status == TRADING`, names that pass
symbol validation (others are reported, never used in SQL), then applies the configured
include/exclude lists. Symbols of other statuses are returned as well, so that a symbol that was
followed and moved to SETTLING/CLOSE is known as delisted (its data stays).
"""

from __future__ import annotations

import msgspec

from .config import SymbolsConfig
from .messages import SymbolInfo
from .symbols import is_valid_symbol


class _RateLimit(msgspec.Struct):
    rateLimitType: str
    interval: str
    intervalNum: int
    limit: int


class _Symbol(msgspec.Struct):
    symbol: str
    status: str = ""
    contractType: str = ""
    quoteAsset: str = ""
    onboardDate: int = 0


class _ExchangeInfo(msgspec.Struct):
    symbols: list[_Symbol]
    rateLimits: list[_RateLimit] = []


class DiscoveryError(ValueError):
    pass


class Discovered(msgspec.Struct, frozen=True):
    trading: list[SymbolInfo]          # to follow now, sorted by symbol
    not_trading: list[SymbolInfo]      # matching perpetuals in another status (delisted, pending)
    rejected: list[str]                # matching the filter but not a valid table-name symbol
    weight_limit_per_minute: int       # REQUEST_WEIGHT per minute from rateLimits; 0 if absent


_decoder = msgspec.json.Decoder(_ExchangeInfo)


def parse_exchange_info(body: bytes, rules: SymbolsConfig) -> Discovered:
    try:
        info = _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DiscoveryError(f"malformed exchangeInfo: {exc}") from None
    include, exclude = set(rules.include), set(rules.exclude)
    trading, not_trading, rejected = [], [], []
    for s in info.symbols:
        if s.contractType != rules.contract_type or s.quoteAsset != rules.quote_asset:
            continue
        if not is_valid_symbol(s.symbol):
            rejected.append(s.symbol)
            continue
        if (include and s.symbol not in include) or s.symbol in exclude:
            continue
        entry = SymbolInfo(symbol=s.symbol, status=s.status, onboard_ms=s.onboardDate)
        (trading if s.status == "TRADING" else not_trading).append(entry)
    limit = 0
    for r in info.rateLimits:
        if r.rateLimitType == "REQUEST_WEIGHT" and r.interval == "MINUTE" and r.intervalNum == 1:
            limit = r.limit
    key = lambda s: s.symbol  # noqa: E731
    return Discovered(sorted(trading, key=key), sorted(not_trading, key=key), sorted(rejected), limit)
