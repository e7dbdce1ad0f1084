"""The exchange's HTTP surface, in one narrow interface: its paths, the weight header, the one way
to make a `requests` session, and the exchangeInfo read. Actors call these; no other module builds
an exchange URL or a session.

Owns: URLs (`url`), the session (`session`: keep-alive, the configured proxy over the
environment's), exchangeInfo read, capped and parsed (`read_exchange_info`). Never decides what an
answer means for a task (`core/answers.py` does, purely), never retries and never spends weight.
"""

from __future__ import annotations

import requests

from .config import ExchangeConfig, SymbolsConfig
from .core.answers import KLINES_PATH, WEIGHT_HEADER, error_text, weight_used
from .core.discovery import Discovered, DiscoveryError, parse_exchange_info
from .httpcap import EXCHANGE_INFO_CAP_BYTES, get_capped

EXCHANGE_INFO_PATH = "/fapi/v1/exchangeInfo"
TIME_PATH = "/fapi/v1/time"
__all__ = ["EXCHANGE_INFO_PATH", "KLINES_PATH", "TIME_PATH", "WEIGHT_HEADER", "read_exchange_info",
           "session", "url"]


def url(exchange: ExchangeConfig, path: str) -> str:
    return exchange.rest_url.rstrip("/") + path


def session(exchange: ExchangeConfig) -> requests.Session:
    """A keep-alive session; `exchange.proxy` set overrides the HTTP(S)_PROXY environment variables
    (which apply otherwise)."""
    s = requests.Session()
    s.trust_env = True
    if exchange.proxy:
        s.proxies.update({"http": exchange.proxy, "https": exchange.proxy})
    return s


def read_exchange_info(http: requests.Session, exchange: ExchangeConfig,
                       symbols: SymbolsConfig) -> tuple[int, Discovered]:
    """GET exchangeInfo (body capped) and parse it: (the weight header, -1 if unusable; the symbols).
    Raises `DiscoveryError` (status or body), `httpcap.BodyTooLarge` or what `requests` raises."""
    response, body = get_capped(http, url(exchange, EXCHANGE_INFO_PATH), cap_bytes=EXCHANGE_INFO_CAP_BYTES,
                                timeout_s=exchange.request_timeout_s)
    if response.status_code != 200:
        raise DiscoveryError(f"HTTP {response.status_code}: {error_text(body)[:200]}")
    return weight_used(response.headers), parse_exchange_info(body, symbols)
