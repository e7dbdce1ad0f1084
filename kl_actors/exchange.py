"""The exchange's HTTP surface, in one narrow interface: its paths, the weight header, the one way
to make a `requests` session, and the exchangeInfo read. Actors call these; no other module builds
an exchange URL or a session.

Owns: URLs (`url`), the session (`session`: keep-alive, the egress group's way out: its local
address or its proxy; else the configured proxy over the environment's), exchangeInfo read,
capped and parsed (`read_exchange_info`). Never decides what an
answer means for a task (`core/answers.py` does, purely), never retries and never spends weight.
"""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter

from .config import EgressConfig, ExchangeConfig, SymbolsConfig
from .core.answers import KLINES_PATH, WEIGHT_HEADER, error_text, weight_used
from .core.discovery import Discovered, DiscoveryError, parse_exchange_info
from .httpcap import EXCHANGE_INFO_CAP_BYTES, get_capped

EXCHANGE_INFO_PATH = "/fapi/v1/exchangeInfo"
TIME_PATH = "/fapi/v1/time"
__all__ = ["EXCHANGE_INFO_PATH", "KLINES_PATH", "TIME_PATH", "WEIGHT_HEADER", "read_exchange_info",
           "session", "url"]


def url(exchange: ExchangeConfig, path: str) -> str:
    return exchange.rest_url.rstrip("/") + path


class SourceAddressAdapter(HTTPAdapter):
    """Binds every connection (direct or to a proxy) to one local address: requests has no option
    for it, urllib3's pools take `source_address`."""

    def __init__(self, source_address: str, **kwargs) -> None:
        self.source_address = (source_address, 0)  # before super(): it builds the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs) -> None:
        kwargs["source_address"] = self.source_address
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy, **kwargs):
        kwargs["source_address"] = self.source_address
        return super().proxy_manager_for(proxy, **kwargs)


def session(exchange: ExchangeConfig, group: EgressConfig | None = None) -> requests.Session:
    """A keep-alive session through `group` (`config.egress_groups`): its `source_address` bound
    on every connection, or its `proxy`. A group that names its way out ignores the HTTP(S)_PROXY
    environment: a proxy from there would change the IP the group's budget counts. Without either
    (the default group), `exchange.proxy` set overrides the environment (which applies otherwise)."""
    s = requests.Session()
    s.trust_env = True
    if group is not None and (group.source_address or group.proxy):
        s.trust_env = False
        if group.source_address:
            adapter = SourceAddressAdapter(group.source_address)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
        else:
            s.proxies.update({"http": group.proxy, "https": group.proxy})
    elif exchange.proxy:
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
