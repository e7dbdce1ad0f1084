"""Which symbols to follow, from an exchangeInfo body (pure).

Keeps the configured contract types (`symbols.contract_types`: PERPETUAL and TRADIFI_PERPETUAL
by default), `quoteAsset == USDT`, names that pass symbol validation (any name a table can be
made of, see `symbols`; the rest are reported, never used in SQL), then applies the configured
include/exclude lists. By status:
- `TRADING`: followed (backfill, boundary fetches, streams);
- halted (`TRADING_HALT`, `TRADING_CANCEL_ONLY`, and any other `TRADING_*`): kept, not
  delisted: its history is fetched once, nothing live until it trades again;
- everything else (`PENDING_TRADING`, `SETTLING`, `CLOSE`, delivery states): `not_trading`, so a
  symbol that was followed and moved there is known as delisted (its data stays).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import msgspec

from ..config import SymbolsConfig
from ..messages import SymbolInfo
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
    # Raw: each entry is also kept as the exchange sent it (`SymbolInfo.info_json`).
    symbols: list[msgspec.Raw]
    rateLimits: list[_RateLimit] = []


# An entry larger than this is not kept (the real BTCUSDT entry is about 1.3 KB): a symbol's
# row in meta_symbols and its share of a SymbolsUpdate stay bounded whatever the exchange sends.
MAX_ENTRY_BYTES = 16_384


class DiscoveryError(ValueError):
    pass


class Discovered(msgspec.Struct, frozen=True):
    trading: list[SymbolInfo]          # to follow now, sorted by symbol
    not_trading: list[SymbolInfo]      # matching perpetuals in another status (delisted, pending)
    rejected: list[str]                # matching the filter but not a valid table-name symbol
    weight_limit_per_minute: int       # REQUEST_WEIGHT per minute from rateLimits; 0 if absent
    halted: list[SymbolInfo] = []      # trading suspended, not delisted (TRADING_HALT, ...)


def is_halted(status: str) -> bool:
    """A suspended symbol: still listed, may trade again (never a delisting)."""
    return status != "TRADING" and status.startswith("TRADING")


_decoder = msgspec.json.Decoder(_ExchangeInfo)
_symbol_decoder = msgspec.json.Decoder(_Symbol)


def parse_exchange_info(body: bytes, rules: SymbolsConfig) -> Discovered:
    try:
        info = _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DiscoveryError(f"malformed exchangeInfo: {exc}") from None
    include, exclude = set(rules.include), set(rules.exclude)
    contract_types = set(rules.contract_types)
    trading, halted, not_trading, rejected = [], [], [], []
    for raw in info.symbols:
        try:
            s = _symbol_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise DiscoveryError(f"malformed exchangeInfo symbol entry: {exc}") from None
        if s.contractType not in contract_types or s.quoteAsset != rules.quote_asset:
            continue
        if not is_valid_symbol(s.symbol):
            rejected.append(s.symbol[:40])
            continue
        if (include and s.symbol not in include) or s.symbol in exclude:
            continue
        entry_json = bytes(raw).decode() if len(raw) <= MAX_ENTRY_BYTES else ""
        entry = SymbolInfo(symbol=s.symbol, status=s.status, onboard_ms=s.onboardDate, info_json=entry_json)
        if s.status == "TRADING":
            trading.append(entry)
        elif is_halted(s.status):
            halted.append(entry)
        else:
            not_trading.append(entry)
    limit = 0
    for r in info.rateLimits:
        if r.rateLimitType == "REQUEST_WEIGHT" and r.interval == "MINUTE" and r.intervalNum == 1:
            limit = r.limit
    key = lambda s: s.symbol  # noqa: E731
    return Discovered(sorted(trading, key=key), sorted(not_trading, key=key), sorted(rejected), limit,
                      halted=sorted(halted, key=key))


class Changes(NamedTuple):
    listed: list[str]     # new to us: backfill from scratch
    resumed: list[str]    # halted before, trading again: tail backfill, then live (not "listed")
    halted: list[str]     # trading before, halted now: nothing live, data kept (not "delisted")
    delisted: list[str]   # followed before (trading or halted), now neither: data kept


def changes(trading: Iterable[str], halted: Iterable[str], found: Discovered, first: bool) -> Changes:
    """What moved between the last list (`trading`, `halted`) and `found`; `first`: no last list."""
    old_trading, old_halted = set(trading), set(halted)
    new_trading = {s.symbol for s in found.trading}
    new_halted = {s.symbol for s in found.halted}
    known = old_trading | old_halted
    return Changes(listed=sorted(new_trading - known), resumed=sorted(new_trading & old_halted),
                   halted=sorted(new_halted & old_trading),
                   delisted=[] if first else sorted(known - new_trading - new_halted))
