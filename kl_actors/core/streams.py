"""WebSocket stream bookkeeping (pure): names, groups per connection, URLs, timing, dedupe.

Owns the rules the websocket actor follows but no sockets, threads or clocks: every function that
needs the time takes it as an argument. It must never import zmq, requests or websocket.

- Stream names: `<symbol lower>@kline_<interval>`, or `<pair lower>_perpetual@continuousKline_<i>`.
  The exchange's stream names are lower case, so two symbols that differ only in case share one
  stream; the event's own `s` field names the symbol (`stream_key` is only a lower-case guess).
- Groups: streams are split into groups of at most N (the exchange allows 200 per connection);
  one group is one combined connection `{ws_url}/stream?streams=a/b/c`, streams in the URL, so no
  SUBSCRIBE messages count against the 10 incoming messages/s limit. When the symbol list
  changes, `plan_groups` keeps every surviving stream in its group and fills gaps, so only the
  groups that really changed need a new connection.
- Handover: a replacement connection takes over a group; the old one is closed only once the
  replacement is live and the old one has had time to deliver the closes (`x: true`) of candles
  that ended before the replacement subscribed (`handover_wait_ms`).
- Dedupe: `StreamTracker` drops events seen twice during an overlap, and stale live updates.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import quote, unquote, urlsplit

from .intervals import MINUTE_MS
# The exchange sent closed candles up to ~2 s after the close in a real capture (binance-api.md
# §5.4); the old connection of a handover is kept this long past the latest minute boundary.
HANDOVER_GRACE_MS = 3_000


def stream_name(symbol: str, interval: str, kind: str = "kline") -> str:
    if kind == "continuousKline":
        return f"{symbol.lower()}_perpetual@continuousKline_{interval}"
    return f"{symbol.lower()}@kline_{interval}"


def stream_key(stream: str) -> tuple[str, str]:
    """(SYMBOL, interval) of a stream name; the inverse of `stream_name` for either kind."""
    head, _, kind_interval = stream.partition("@")
    interval = kind_interval.rpartition("_")[2]
    return head.removesuffix("_perpetual").upper(), interval


def stream_names(symbols: list[str], intervals: list[str], kind: str = "kline") -> list[str]:
    """Every symbol x interval, symbol-major, in the given order."""
    return [stream_name(s, i, kind) for s in symbols for i in intervals]


def plan_groups(previous: list[tuple[str, ...]], wanted: list[str], per_connection: int) -> list[tuple[str, ...]]:
    """New groups for `wanted`, as close to `previous` as possible; index i continues group i.

    Streams no longer wanted leave their group; new streams fill groups with room (in order),
    then open new groups at the end. A group may become empty (its connection is retired); the
    list never shrinks, so indices stay stable.
    """
    if per_connection < 1:
        raise ValueError("per_connection must be at least 1")
    wanted_set = set(wanted)
    groups = [[s for s in g if s in wanted_set] for g in previous]
    placed = {s for g in groups for s in g}
    fresh = [s for s in dict.fromkeys(wanted) if s not in placed]
    at = 0
    for g in groups:
        room = per_connection - len(g)
        if room > 0 and at < len(fresh):
            g.extend(fresh[at:at + room])
            at += room
    while at < len(fresh):
        groups.append(fresh[at:at + per_connection])
        at += per_connection
    return [tuple(g) for g in groups]


def combined_url(ws_url: str, streams: tuple[str, ...] | list[str]) -> str:
    """`wss://host/market` + streams -> `wss://host/market/stream?streams=a/b/c`.

    A symbol outside ASCII (`币安人生usdt@kline_1m`) is percent-encoded as UTF-8, as any URL must
    carry it; plain stream names are unchanged."""
    return f"{ws_url.rstrip('/')}/stream?streams={quote('/'.join(streams), safe='/@_-.')}"


def backoff_s(failures: int, initial_s: float, max_s: float, jitter: float) -> float:
    """Delay before reconnect number `failures` (1, 2, ...): doubling, capped, then jittered.

    `jitter` in [0, 1) spreads reconnects of many connections: the delay is scaled by 0.5..1.0
    (never below `initial_s / 2`), so they do not all retry in the same instant.
    """
    base = min(max_s, initial_s * 2 ** max(0, failures - 1))
    return base * (0.5 + 0.5 * jitter)


def renew_due(opened_at_s: float, lifetime_s: float, renew_before_s: float) -> float:
    """When a replacement for a connection opened at `opened_at_s` should be opened."""
    return opened_at_s + max(0.0, lifetime_s - renew_before_s)


def handover_wait_ms(first_event_time_ms: int, grace_ms: int = HANDOVER_GRACE_MS) -> int:
    """How long the old connection must stay open after the replacement's first event.

    The replacement subscribed at about `first_event_time_ms` (server time), so it reports
    candles open at that moment, but not the close of a candle that ended at the minute boundary
    just before (every interval's boundaries are minute boundaries). The old connection delivers
    that close within `grace_ms` of the boundary.
    """
    boundary = first_event_time_ms - first_event_time_ms % MINUTE_MS
    return max(0, boundary + grace_ms - first_event_time_ms)


class ProxySettings(NamedTuple):
    """For websocket-client's run_forever; host None means "from the environment"."""

    host: str | None
    port: int
    auth: tuple[str, str] | None
    kind: str


def parse_proxy(proxy: str) -> ProxySettings:
    """`http://user:pw@host:3128` or `socks5h://host:1080` -> settings; "" -> environment."""
    if not proxy:
        return ProxySettings(None, 0, None, "http")
    parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
    kind = parts.scheme or "http"
    if kind == "https":
        kind = "http"  # websocket-client speaks HTTP CONNECT to the proxy either way
    port = parts.port or (1080 if kind.startswith("socks") else 80)
    auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username else None
    return ProxySettings(parts.hostname, port, auth, kind)


class StreamTracker:
    """Per (symbol, interval): which events are new. Closes arrive once; live updates in order.

    - a closed event for a candle at or before the last closed one is a duplicate;
    - a live event for a candle already closed is stale (an overlapping connection lagging);
    - a live event not newer (by event time) than the last one for the same candle is a
      duplicate from the other connection of an overlap.
    """

    def __init__(self) -> None:
        self.last_closed_open: dict[tuple[str, str], int] = {}
        self.last_live: dict[tuple[str, str], tuple[int, int]] = {}

    def accept(self, symbol: str, interval: str, open_ms: int, closed: bool, event_time_ms: int) -> bool:
        key = (symbol, interval)
        if open_ms <= self.last_closed_open.get(key, -1):
            return False
        if closed:
            self.last_closed_open[key] = open_ms
            return True
        if (open_ms, event_time_ms) <= self.last_live.get(key, (-1, -1)):
            return False
        self.last_live[key] = (open_ms, event_time_ms)
        return True
