"""The config's rules that types alone cannot say (`check`, re-exported as `config.check`):
each key a harmful value can reach, refused at start with one line naming the key; the listen
addresses of the read API and metrics (loopback unless allowed), egress groups. Pure: it reads
the Struct tree of config.py and never touches a file, a socket or the environment.
"""

from __future__ import annotations

import ipaddress
import math
import re

import msgspec

from .config import (CONTRACT_TYPES, ENDPOINT_KEYS, REMOTE_PORTS, Config, ConfigError, MetricsConfig,
                     _is_address, api_address, downloader_count, remote_tasks_port, tasks_endpoint)
from .core import intervals
from .core.symbols import SymbolError, validate_symbol

def _is_loopback(host: str) -> bool:
    """`localhost` or a loopback IP address (an unparsable host is not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _endpoint_is_loopback(endpoint: str) -> bool:
    if not endpoint.startswith("tcp://"):
        return endpoint.startswith(("ipc://", "inproc://"))
    return _is_loopback(endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]"))


# A depth beyond this is a typo, not a plan: 10 M one-minute candles is 19 years.
MAX_DEPTH = 10_000_000


def _floats(node: object, prefix: str = ""):
    """Every float in the tree as (dotted key, value): NaN and infinity are refused everywhere."""
    for name in node.__struct_fields__:
        value = getattr(node, name)
        key = f"{prefix}{name}"
        if isinstance(value, msgspec.Struct):
            yield from _floats(value, key + ".")
        elif isinstance(value, float):
            yield key, value


def check(config: Config, source: str) -> Config:
    """Rules that types alone cannot say; raises ConfigError naming the key.

    Every key that a harmful value can reach has a rule here (a test walks them all): a value
    that would crash an actor on every restart, or quietly disable it, is refused at start.
    """

    def fail(key: str, text: str) -> None:
        raise ConfigError(f"{source}: key {key}: {text}")

    def positive(key: str, value: float) -> None:
        if not value > 0:
            fail(key, f"must be positive, got {value}")

    def at_least(key: str, value: float, low: float) -> None:
        if not value >= low:
            fail(key, f"must be at least {low}, got {value}")

    for key, value in _floats(config):
        if not math.isfinite(value):
            fail(key, f"must be a finite number, got {value}")
    for url_key, url, schemes in (
        ("exchange.rest_url", config.exchange.rest_url, ("http://", "https://")),
        ("exchange.ws_url", config.exchange.ws_url, ("ws://", "wss://")),
    ):
        if not url.startswith(schemes):
            fail(url_key, f"{url!r} must start with {' or '.join(schemes)}")
    positive("exchange.request_timeout_s", config.exchange.request_timeout_s)
    positive("symbols.rediscover_s", config.symbols.rediscover_s)
    if not config.klines.intervals:
        fail("klines.intervals", "at least one interval is needed")
    for name in config.klines.intervals:
        if name not in intervals.INTERVALS:
            fail("klines.intervals", f"unknown interval {name!r}; expected one of {', '.join(intervals.INTERVALS)}")
    if len(set(config.klines.intervals)) != len(config.klines.intervals):
        fail("klines.intervals", "an interval is listed twice")
    for name, depth in config.klines.depth.items():
        if name not in intervals.INTERVALS:
            fail(f"klines.depth.{name}", "not an interval")
        if not 1 <= depth <= MAX_DEPTH:
            fail(f"klines.depth.{name}", f"must be 1..{MAX_DEPTH}, got {depth}")
    if not config.symbols.contract_types:
        fail("symbols.contract_types", "at least one contract type is needed")
    for name in config.symbols.contract_types:
        if name not in CONTRACT_TYPES:
            fail("symbols.contract_types", f"unknown contract type {name!r}; expected some of {', '.join(CONTRACT_TYPES)}")
    if not 0 <= config.klines.phase_3d_days <= 2:
        fail("klines.phase_3d_days", f"must be 0, 1 or 2 (epoch day mod 3), got {config.klines.phase_3d_days}")
    at_least("klines.hole_confirm_s", config.klines.hole_confirm_s, 0)
    for key in ("include", "exclude"):
        for symbol in getattr(config.symbols, key):
            try:
                validate_symbol(symbol)
            except SymbolError as exc:
                fail(f"symbols.{key}", str(exc))
    d = config.downloader
    if not 1 <= d.processes <= 64:
        fail("downloader.processes", f"must be 1..64, got {d.processes}")
    if not 1 <= d.concurrency <= 32:
        fail("downloader.concurrency", f"must be 1..32, got {d.concurrency}")
    if not 1 <= d.page_limit <= 1500:
        fail("downloader.page_limit", f"must be 1..1500 (the exchange's maximum), got {d.page_limit}")
    positive("downloader.lease_s", d.lease_s)
    at_least("downloader.max_attempts", d.max_attempts, 1)
    _check_egress(config, fail)
    # Fewer than the pool's request slots would leave slots idle at every moment.
    at_least("downloader.max_uncommitted", d.max_uncommitted, downloader_count(config) * d.concurrency)
    if config.weight.limit_per_minute < 0:
        fail("weight.limit_per_minute", "must be 0 (from exchangeInfo) or positive")
    if not 0 < config.weight.usable_fraction <= 1:
        fail("weight.usable_fraction", f"must be in (0, 1], got {config.weight.usable_fraction}")
    e = config.endpoints
    seen: dict[str, str] = {}
    for key in ENDPOINT_KEYS:
        value = getattr(e, key)
        if not value.startswith(("ipc://", "tcp://", "inproc://")):
            fail(f"endpoints.{key}", f"{value!r} must be an ipc:// or tcp:// endpoint")
        if value in seen:
            fail(f"endpoints.{key}", f"{value!r} is also endpoints.{seen[value]}; each needs its own")
        seen[value] = key
        # Internal sockets carry no authentication (no CURVE yet): a peer that reaches one can push
        # a KlineBatch that overwrites real rows, so only this host may.
        if key != "feed" and not _endpoint_is_loopback(value):
            fail(f"endpoints.{key}", f"{value!r} is not loopback; internal endpoints have no "
                                     "authentication and must be ipc:// or a loopback tcp:// address")
    if not e.allow_public_feed and not _endpoint_is_loopback(e.feed):
        fail("endpoints.feed", f"{e.feed!r} is not loopback; set endpoints.allow_public_feed = true to expose it")
    r = config.remote
    if r.listen and r.connect:
        fail("remote.connect", "a host either serves remote downloaders (remote.listen) or joins one (remote.connect)")
    if (r.listen or r.connect) and not r.keys_dir.strip():
        fail("remote.keys_dir", "remote downloaders need CURVE keys: make them with `python supervisor.py keygen DIR`")
    if r.listen and not _is_address(r.listen):
        fail("remote.listen", f"{r.listen!r} must be an IP address to bind (0.0.0.0 for every interface)")
    if r.connect and not re.fullmatch(r"[A-Za-z0-9.:\-\[\]]{1,253}", r.connect):
        fail("remote.connect", f"{r.connect[:60]!r} must be a host name or an IP address")
    for key in (*REMOTE_PORTS.values(), "group_tasks_port"):
        if not 1 <= getattr(r, key) <= 65535 - len(config.egress):
            fail(f"remote.{key}", f"must be 1..65535 (and leave a port per egress group), got {getattr(r, key)}")
    ports = [getattr(r, p) for p in REMOTE_PORTS.values()]
    ports += [remote_tasks_port(config, i) for i in range(1, len(config.egress))]
    if len(set(ports)) != len(ports):
        fail("remote.group_tasks_port", f"the remote ports (four, then one per further egress group) must differ, got {ports}")
    if r.egress and not r.connect:
        fail("remote.egress", "names the group of a downloader host's downloaders: only with remote.connect (--connect)")
    if r.egress and r.egress not in [g.name for g in config.egress]:
        fail("remote.egress", f"{r.egress[:40]!r} is not the name of an [[egress]] group of this config")
    db = config.database
    if not db.path.strip():
        fail("database.path", "must not be empty")
    at_least("database.busy_timeout_ms", db.busy_timeout_ms, 0)
    at_least("database.cache_size_kib", db.cache_size_kib, 0)
    at_least("database.mmap_size_mib", db.mmap_size_mib, 0)
    at_least("writer.max_rows_per_txn", config.writer.max_rows_per_txn, 1)
    at_least("writer.max_delay_ms", config.writer.max_delay_ms, 0)
    s = config.supervisor
    positive("supervisor.heartbeat_s", s.heartbeat_s)
    positive("supervisor.start_timeout_s", s.start_timeout_s)
    if s.heartbeat_timeout_s <= s.heartbeat_s:
        fail("supervisor.heartbeat_timeout_s", "must be longer than supervisor.heartbeat_s")
    positive("supervisor.restart_backoff_initial_s", s.restart_backoff_initial_s)
    if s.restart_backoff_max_s < s.restart_backoff_initial_s:
        fail("supervisor.restart_backoff_max_s", "must be at least supervisor.restart_backoff_initial_s")
    at_least("supervisor.max_restarts", s.max_restarts, 0)
    positive("supervisor.restart_window_s", s.restart_window_s)
    positive("supervisor.stop_timeout_s", s.stop_timeout_s)
    positive("display.log_max_mib", config.display.log_max_mib)
    at_least("display.log_keep", config.display.log_keep, 1)
    lv = config.live
    at_least("live.boundary_margin_ms", lv.boundary_margin_ms, 0)
    positive("live.not_final_retry_ms", lv.not_final_retry_ms)
    at_least("live.final_recheck_ms", lv.final_recheck_ms, 0)
    at_least("live.clock_samples", lv.clock_samples, 1)
    if not 1 <= lv.ws_streams_per_connection <= 1024:
        fail("live.ws_streams_per_connection", f"must be 1..1024 (the exchange's maximum), got {lv.ws_streams_per_connection}")
    positive("live.ws_lifetime_s", lv.ws_lifetime_s)
    at_least("live.ws_renew_before_s", lv.ws_renew_before_s, 0)
    if lv.ws_renew_before_s >= lv.ws_lifetime_s:
        fail("live.ws_renew_before_s", "must be shorter than live.ws_lifetime_s")
    positive("live.ws_reconnect_initial_s", lv.ws_reconnect_initial_s)
    if lv.ws_reconnect_max_s < lv.ws_reconnect_initial_s:
        fail("live.ws_reconnect_max_s", "must be at least live.ws_reconnect_initial_s")
    positive("live.boundary_deadline_s", lv.boundary_deadline_s)
    ar = config.archive
    if ar.base_url and not ar.base_url.startswith(("http://", "https://")):
        fail("archive.base_url", f"{ar.base_url!r} must start with http:// or https:// (or be empty)")
    if not 1 <= ar.horizon_days <= 366:
        fail("archive.horizon_days", f"must be 1..366 (the archive lacks at least the newest day), got {ar.horizon_days}")
    if not 1 <= ar.concurrency <= 64:
        fail("archive.concurrency", f"must be 1..64, got {ar.concurrency}")
    _check_api(config, fail)
    _check_metrics(config.metrics, fail)
    return config


def _check_api(config: Config, fail) -> None:
    api = config.api
    if api.client_weight_limit < 0:
        fail("api.client_weight_limit", f"must be 0 (unlimited) or positive, got {api.client_weight_limit}")
    if not api.listen:
        return
    try:
        host, _ = api_address(config)
    except ConfigError as exc:
        fail("api.listen", str(exc).split(": ", 2)[-1])
    if not api.allow_public_api and not _is_loopback(host):
        fail("api.listen", f"{api.listen!r} is not loopback; set api.allow_public_api = true to expose it")


def metrics_address(listen: str) -> tuple[str, int]:
    """`[metrics] listen` -> (host, port); raises ValueError saying what is wrong."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{listen[:60]!r} must be HOST:PORT with a port 1..65535, e.g. 127.0.0.1:9108")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host != "localhost" and not _is_address(host):
        raise ValueError(f"{listen[:60]!r}: the host must be an IP address (or localhost)")
    return host, int(port)


def _check_metrics(m: MetricsConfig, fail) -> None:
    if not m.listen:
        return
    try:
        host, _ = metrics_address(m.listen)
    except ValueError as exc:
        fail("metrics.listen", str(exc))
    # Metrics show what the service holds and does: only this host reads them unless asked.
    if not m.allow_public_metrics and not _is_loopback(host):
        fail("metrics.listen", f"{m.listen!r} is not loopback; set metrics.allow_public_metrics = true to expose it")


_EGRESS_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,32}")
PROXY_SCHEMES = ("http://", "https://", "socks5://", "socks5h://")


def _check_egress(config: Config, fail) -> None:
    names: set[str] = set()
    addresses: dict[str, str] = {}
    for i, g in enumerate(config.egress):
        key = f"egress[{i}]"
        if not _EGRESS_NAME_RE.fullmatch(g.name):
            fail(f"{key}.name", f"{g.name!r} must be 1..32 letters, digits or _ (it names sockets and log lines)")
        if g.name in names:
            fail(f"{key}.name", f"{g.name!r} is a duplicate name: an earlier [[egress]] group has it")
        names.add(g.name)
        if g.source_address and g.proxy:
            fail(key, f"group {g.name!r} has both source_address and proxy; give one (a proxy's own IP is the one counted)")
        if g.source_address:
            try:
                ipaddress.ip_address(g.source_address)
            except ValueError:
                fail(f"{key}.source_address", f"{g.source_address!r} is not an IP address of this host")
            if g.source_address in addresses:
                fail(f"{key}.source_address", f"{g.source_address!r} is also group {addresses[g.source_address]!r}'s; "
                                              "one IP is one weight budget, so one group")
            addresses[g.source_address] = g.name
        if g.proxy and not g.proxy.startswith(PROXY_SCHEMES):
            fail(f"{key}.proxy", f"{g.proxy!r} must start with {', '.join(PROXY_SCHEMES)}")
        if not 0 <= g.downloaders <= 64:
            fail(f"{key}.downloaders", f"must be 0..64 (0: all on other hosts, remote.listen), got {g.downloaders}")
    if config.egress and not config.remote.listen and not config.remote.connect:
        for i, g in enumerate(config.egress):
            if g.downloaders == 0:
                fail(f"egress[{i}].downloaders", f"group {g.name!r} has no downloader here and no other host can "
                                                  "join without remote.listen")
    if len(config.egress) > 1 and config.endpoints.tasks.startswith("tcp://"):
        port = config.endpoints.tasks.rpartition(":")[2]
        if not port.isdigit() or port == "0":
            fail("endpoints.tasks", "a tcp:// tasks endpoint needs a fixed port with several [[egress]] groups "
                                    "(the next groups use the following ports)")
    others = {getattr(config.endpoints, k): k for k in ENDPOINT_KEYS}
    for i in range(1, len(config.egress)):
        endpoint = tasks_endpoint(config, i)
        if endpoint in others:
            fail("endpoints.tasks", f"group {config.egress[i].name!r} would take its tasks on {endpoint!r}, "
                                    f"which is endpoints.{others[endpoint]}")


