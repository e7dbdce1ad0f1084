"""Symbol validation and kline table naming (pure).

This is the only place where a name from outside becomes part of SQL, and it never does so as
itself unless it is plain: a table name is built only from `[a-z0-9_]`, whatever the symbol.

- A plain symbol (`[A-Z0-9]+USDT`: `BTCUSDT`, `1000PEPEUSDT`, `XAUUSDT`) keeps the readable name
  `k_<base>_<suffix>`, base = the symbol without USDT in lower case (existing databases stay
  valid).
- Any other symbol the exchange lists (`币安人生USDT`, mixed case, punctuation) gets
  `k_x_<hex of its UTF-8 bytes>_<suffix>`: reversible, ASCII, and collision-free, since the hex
  spells every byte (case and punctuation included) and a plain base never contains `_`.
A symbol is accepted if it is 1..`MAX_SYMBOL_LEN` printable characters without whitespace or any
of `/ @ ? & # % " ' \\` (they would break stream names, URLs and log lines); quoting is never
used in SQL. SQLite compares identifiers case-insensitively, so `k_btc_1m` (minute) and
`k_btc_1M` (month) would be the same table: the month interval is stored under the suffix `1mo`.
"""

from __future__ import annotations

import re

from .intervals import INTERVALS, MONTH

QUOTE = "USDT"
MAX_SYMBOL_LEN = 32
_PLAIN_RE = re.compile(r"[A-Z0-9]{1,28}USDT")
_FORBIDDEN = frozenset("/@?&#%\"'\\")
_TABLE_PREFIX = "k_"
_HEX_PREFIX = "x_"
_SUFFIX_BY_INTERVAL = {i: ("1mo" if i == MONTH else i) for i in INTERVALS}
_INTERVAL_BY_SUFFIX = {s: i for i, s in _SUFFIX_BY_INTERVAL.items()}
_SUFFIX_GROUP = "(" + "|".join(map(re.escape, _INTERVAL_BY_SUFFIX)) + ")"
_TABLE_RE = re.compile(r"k_([a-z0-9]{1,28})_" + _SUFFIX_GROUP)
_HEX_TABLE_RE = re.compile(r"k_x_((?:[0-9a-f]{2}){1,%d})_" % (4 * MAX_SYMBOL_LEN) + _SUFFIX_GROUP)


class SymbolError(ValueError):
    """A symbol that may not become part of a table name."""


def validate_symbol(symbol: object) -> str:
    """Return the symbol if a table, a URL and a stream name can be made of it, else raise."""
    if not isinstance(symbol, str):
        raise SymbolError(f"symbol must be a string, got {type(symbol).__name__}")
    if not 0 < len(symbol) <= MAX_SYMBOL_LEN:
        raise SymbolError(f"invalid symbol {symbol[:40]!r}: expected 1..{MAX_SYMBOL_LEN} characters")
    if not symbol.isprintable() or any(ch.isspace() or ch in _FORBIDDEN for ch in symbol):
        raise SymbolError(f"invalid symbol {symbol[:40]!r}: control, space or one of / @ ? & # % \" ' \\")
    return symbol


def is_valid_symbol(symbol: object) -> bool:
    try:
        validate_symbol(symbol)
    except SymbolError:
        return False
    return True


def is_plain(symbol: str) -> bool:
    """A symbol whose table keeps the readable `k_<base>_` name."""
    return _PLAIN_RE.fullmatch(symbol) is not None


def table_suffix(interval: str) -> str:
    try:
        return _SUFFIX_BY_INTERVAL[interval]
    except KeyError:
        raise SymbolError(f"unknown interval {interval!r}") from None


def table_base(symbol: str) -> str:
    """`BTCUSDT` -> `btc`; `币安人生USDT` -> `x_e5b881...54`: the part between `k_` and the suffix."""
    validate_symbol(symbol)
    if is_plain(symbol):
        return symbol[: -len(QUOTE)].lower()
    return _HEX_PREFIX + symbol.encode("utf-8").hex()


def table_name(symbol: str, interval: str) -> str:
    """`BTCUSDT`, `1m` -> `k_btc_1m`; `1M` -> `k_btc_1mo`; `BtcUSDT`, `1m` -> `k_x_427463555344545f_1m`."""
    return f"{_TABLE_PREFIX}{table_base(symbol)}_{table_suffix(interval)}"


def parse_table_name(name: str) -> tuple[str, str] | None:
    """`k_btc_1m` -> (`BTCUSDT`, `1m`); None for any name that is not a kline table."""
    match = _TABLE_RE.fullmatch(name)
    if match is not None:
        base, suffix = match.groups()
        return base.upper() + QUOTE, _INTERVAL_BY_SUFFIX[suffix]
    match = _HEX_TABLE_RE.fullmatch(name)
    if match is None:
        return None
    raw, suffix = match.groups()
    try:
        symbol = bytes.fromhex(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None
    # Only the one name table_name() gives: a hex name of a plain symbol, or of a symbol that
    # fails validation, is some other table.
    if is_plain(symbol) or not is_valid_symbol(symbol):
        return None
    return symbol, _INTERVAL_BY_SUFFIX[suffix]
