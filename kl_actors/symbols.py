"""Symbol validation and kline table naming (pure).

This is the only place where a name from outside becomes part of SQL. A symbol is accepted only
if it has the shape the exchange gives USDT-margined perpetuals: upper-case ASCII letters and
digits ending in USDT (`BTCUSDT`, `1000PEPEUSDT`). Anything else (delivery contracts like
`BTCUSDT_261225`, other quote assets, non-ASCII names the exchange has used for meme listings) is
rejected with a clear reason, never escaped or quoted into SQL.

Table names are `k_<base>_<suffix>`: base is the symbol without its USDT suffix in lower case,
suffix the interval. SQLite compares identifiers case-insensitively, so `k_btc_1m` (minute) and
`k_btc_1M` (month) would be the same table: the month interval is stored under the suffix `1mo`.
"""

from __future__ import annotations

import re

from .intervals import INTERVALS, MONTH

QUOTE = "USDT"
MAX_SYMBOL_LEN = 32
_SYMBOL_RE = re.compile(r"[A-Z0-9]{1,28}USDT")
_TABLE_PREFIX = "k_"
_SUFFIX_BY_INTERVAL = {i: ("1mo" if i == MONTH else i) for i in INTERVALS}
_INTERVAL_BY_SUFFIX = {s: i for i, s in _SUFFIX_BY_INTERVAL.items()}
_TABLE_RE = re.compile(r"k_([a-z0-9]{1,28})_(" + "|".join(map(re.escape, _INTERVAL_BY_SUFFIX)) + r")")


class SymbolError(ValueError):
    """A symbol that may not become part of a table name."""


def validate_symbol(symbol: object) -> str:
    """Return the symbol if it is a valid USDT-margined name, else raise SymbolError."""
    if not isinstance(symbol, str):
        raise SymbolError(f"symbol must be a string, got {type(symbol).__name__}")
    if len(symbol) > MAX_SYMBOL_LEN or not _SYMBOL_RE.fullmatch(symbol):
        raise SymbolError(f"invalid symbol {symbol[:40]!r}: expected A-Z/0-9 ending in USDT")
    return symbol


def is_valid_symbol(symbol: object) -> bool:
    try:
        validate_symbol(symbol)
    except SymbolError:
        return False
    return True


def table_suffix(interval: str) -> str:
    try:
        return _SUFFIX_BY_INTERVAL[interval]
    except KeyError:
        raise SymbolError(f"unknown interval {interval!r}") from None


def table_name(symbol: str, interval: str) -> str:
    """`BTCUSDT`, `1m` -> `k_btc_1m`; `1M` -> `k_btc_1mo`."""
    base = validate_symbol(symbol)[: -len(QUOTE)].lower()
    return f"{_TABLE_PREFIX}{base}_{table_suffix(interval)}"


def parse_table_name(name: str) -> tuple[str, str] | None:
    """`k_btc_1m` -> (`BTCUSDT`, `1m`); None for any name that is not a kline table."""
    match = _TABLE_RE.fullmatch(name)
    if match is None:
        return None
    base, suffix = match.groups()
    return base.upper() + QUOTE, _INTERVAL_BY_SUFFIX[suffix]
