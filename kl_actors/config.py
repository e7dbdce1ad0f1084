"""The service's configuration: one msgspec Struct tree decoded from TOML, defaults in one place.

`load()` returns a checked `Config` or raises `ConfigError` whose message is the one line the
supervisor prints (naming the file, the key and the problem) before exiting with status 2.
Endpoints may contain `{runtime_dir}`, filled in after loading so every actor sees the same paths.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Literal

import msgspec

from . import intervals
from .symbols import SymbolError, validate_symbol


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line for the operator."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ExchangeConfig(_Section):
    rest_url: str = "https://fapi.binance.com"
    # Klines moved under the /market route in 2026; legacy unrouted paths are retired.
    ws_url: str = "wss://fstream.binance.com/market"
    stream_kind: Literal["kline", "continuousKline"] = "kline"
    # Empty: the standard HTTP(S)_PROXY / NO_PROXY environment variables apply.
    proxy: str = ""
    request_timeout_s: float = 10.0


class SymbolsConfig(_Section):
    quote_asset: str = "USDT"
    contract_type: str = "PERPETUAL"
    # Non-empty: only these symbols (still subject to the exchange's list).
    include: list[str] = []
    exclude: list[str] = []
    rediscover_s: float = 300.0


DEFAULT_INTERVALS = ["1m", "5m", "15m", "1h", "4h", "1d", "1w"]
# Candles fetched for a new symbol, per interval (1m: last 1000 candles, 1w: last 200).
DEFAULT_DEPTH = {
    "1m": 1000, "3m": 1000, "5m": 1000, "15m": 1000, "30m": 1000, "1h": 1000, "2h": 1000,
    "4h": 1000, "6h": 1000, "8h": 1000, "12h": 1000, "1d": 500, "3d": 300, "1w": 200, "1M": 60,
}


class KlinesConfig(_Section):
    intervals: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_INTERVALS))
    depth: dict[str, int] = msgspec.field(default_factory=lambda: dict(DEFAULT_DEPTH))
    # True: new symbols are fetched from their listing date (onboardDate), ignoring depth.
    since_listing: bool = False


class DownloaderConfig(_Section):
    processes: int = 4
    concurrency: int = 2
    # limit=499 costs weight 2: 249.5 candles per weight unit, the cheapest page there is.
    page_limit: int = 499
    lease_s: float = 30.0
    max_attempts: int = 8


class WeightConfig(_Section):
    # 0: read the limit from exchangeInfo.rateLimits (never hard-code the exchange's number).
    limit_per_minute: int = 0
    # Share of the limit the scheduler may spend; the rest is headroom for other programs on the
    # same IP until their use shows in the exchange's header. (Clock skew, late sends and our own
    # unbudgeted requests are accounted for separately, see budget.py.)
    usable_fraction: float = 0.95


ENDPOINT_KEYS = ("tasks", "results", "writer", "bus_pub", "bus_sub", "control", "feed_in", "feed")


class EndpointsConfig(_Section):
    # Empty: $XDG_RUNTIME_DIR/kl-actors, else /tmp/kl-actors-<uid>; created mode 0700.
    runtime_dir: str = ""
    tasks: str = "ipc://{runtime_dir}/tasks"
    results: str = "ipc://{runtime_dir}/results"
    writer: str = "ipc://{runtime_dir}/writer"
    # The internal bus: publishers connect to bus_pub, subscribers to bus_sub (broker in between).
    bus_pub: str = "ipc://{runtime_dir}/bus-pub"
    bus_sub: str = "ipc://{runtime_dir}/bus-sub"
    control: str = "ipc://{runtime_dir}/control"
    feed_in: str = "ipc://{runtime_dir}/feed-in"
    # The one socket outside programs connect to: loopback unless configured otherwise.
    feed: str = "tcp://127.0.0.1:7755"
    allow_public_feed: bool = False


class DatabaseConfig(_Section):
    path: str = "data/klines.sqlite"
    synchronous: Literal["OFF", "NORMAL", "FULL"] = "NORMAL"
    busy_timeout_ms: int = 5000
    cache_size_kib: int = 65536
    mmap_size_mib: int = 256
    # The WAL file is cut back to this size after a checkpoint; the writer also truncates it when
    # idle. (It can grow past it only while an outside reader keeps an old snapshot open.)
    wal_limit_mib: int = 64


class WriterConfig(_Section):
    # Batches are grouped into one transaction up to this many rows or this delay.
    max_rows_per_txn: int = 10_000
    max_delay_ms: int = 20


class SupervisorConfig(_Section):
    heartbeat_s: float = 1.0
    heartbeat_timeout_s: float = 15.0
    restart_backoff_initial_s: float = 0.1
    restart_backoff_max_s: float = 5.0
    # Restart intensity: more than max_restarts within window_s stops the service.
    max_restarts: int = 5
    restart_window_s: float = 60.0
    stop_timeout_s: float = 5.0


class LiveConfig(_Section):
    # Margin after a boundary before the just-closed candle is asked over REST.
    boundary_margin_ms: int = 300
    not_final_retry_ms: int = 500
    # The exchange gives no finality flag and may serve a just-closed candle with provisional
    # values for a moment: each boundary candle is fetched again this long after its close
    # (REST overwrites REST). 0 disables the re-fetch.
    final_recheck_ms: int = 5000
    clock_samples: int = 5
    ws_streams_per_connection: int = 200
    # The exchange closes a connection after 24 h; a replacement is opened this long before.
    ws_lifetime_s: float = 86400.0
    ws_renew_before_s: float = 600.0
    ws_reconnect_initial_s: float = 0.5
    ws_reconnect_max_s: float = 30.0


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Config(_Section):
    exchange: ExchangeConfig = msgspec.field(default_factory=ExchangeConfig)
    symbols: SymbolsConfig = msgspec.field(default_factory=SymbolsConfig)
    klines: KlinesConfig = msgspec.field(default_factory=KlinesConfig)
    downloader: DownloaderConfig = msgspec.field(default_factory=DownloaderConfig)
    weight: WeightConfig = msgspec.field(default_factory=WeightConfig)
    endpoints: EndpointsConfig = msgspec.field(default_factory=EndpointsConfig)
    database: DatabaseConfig = msgspec.field(default_factory=DatabaseConfig)
    writer: WriterConfig = msgspec.field(default_factory=WriterConfig)
    supervisor: SupervisorConfig = msgspec.field(default_factory=SupervisorConfig)
    live: LiveConfig = msgspec.field(default_factory=LiveConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    mode: Literal["normal", "stream-only", "once"] = "normal"


_PATH_RE = re.compile(r"at `\$\.?([^`]*)`")


def _where(message: str) -> tuple[str, str]:
    """msgspec's 'Expected int, got str - at `$.a.b`' -> ('a.b', 'Expected int, got str')."""
    match = _PATH_RE.search(message)
    key = match.group(1) if match else ""
    text = message.split(" - at ")[0].replace("`", "")
    unknown = re.fullmatch(r"Object contains unknown field (.+)", text)
    if unknown:
        return (f"{key}.{unknown.group(1)}" if key else unknown.group(1)), "unknown key"
    return key, text


def decode(data: bytes, source: str = "<config>") -> Config:
    try:
        config = msgspec.toml.decode(data, type=Config)
    except msgspec.ValidationError as exc:
        key, text = _where(str(exc))
        raise ConfigError(f"{source}: key {key or '(top level)'}: {text}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return config


def load(path: str | os.PathLike[str] | None) -> Config:
    if path is None:
        return check(Config(), "<defaults>")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    return check(decode(data, str(path)), str(path))


def _endpoint_is_loopback(endpoint: str) -> bool:
    if not endpoint.startswith("tcp://"):
        return endpoint.startswith(("ipc://", "inproc://"))
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(config: Config, source: str) -> Config:
    """Rules that types alone cannot say; raises ConfigError naming the key."""

    def fail(key: str, text: str) -> None:
        raise ConfigError(f"{source}: key {key}: {text}")

    for url_key, url, schemes in (
        ("exchange.rest_url", config.exchange.rest_url, ("http://", "https://")),
        ("exchange.ws_url", config.exchange.ws_url, ("ws://", "wss://")),
    ):
        if not url.startswith(schemes):
            fail(url_key, f"{url!r} must start with {' or '.join(schemes)}")
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
        if depth < 1:
            fail(f"klines.depth.{name}", f"must be at least 1, got {depth}")
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
    if d.lease_s <= 0:
        fail("downloader.lease_s", "must be positive")
    if config.weight.limit_per_minute < 0:
        fail("weight.limit_per_minute", "must be 0 (from exchangeInfo) or positive")
    if not 0 < config.weight.usable_fraction <= 1:
        fail("weight.usable_fraction", "must be in (0, 1]")
    e = config.endpoints
    for key in ENDPOINT_KEYS:
        value = getattr(e, key)
        if not value.startswith(("ipc://", "tcp://", "inproc://")):
            fail(f"endpoints.{key}", f"{value!r} must be an ipc:// or tcp:// endpoint")
    if not e.allow_public_feed and not _endpoint_is_loopback(e.feed):
        fail("endpoints.feed", f"{e.feed!r} is not loopback; set endpoints.allow_public_feed = true to expose it")
    s = config.supervisor
    if s.max_restarts < 0 or s.restart_window_s <= 0 or s.heartbeat_s <= 0 or s.stop_timeout_s <= 0:
        fail("supervisor", "restart and heartbeat settings must be positive")
    if s.heartbeat_timeout_s <= s.heartbeat_s:
        fail("supervisor.heartbeat_timeout_s", "must be longer than supervisor.heartbeat_s")
    if config.writer.max_rows_per_txn < 1 or config.writer.max_delay_ms < 0:
        fail("writer", "max_rows_per_txn must be >= 1 and max_delay_ms >= 0")
    return config


def default_runtime_dir() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return os.path.join(base, "kl-actors")
    return f"/tmp/kl-actors-{os.getuid()}"


def resolve_endpoints(config: Config) -> Config:
    """Fill `{runtime_dir}` into every endpoint; returns a new Config."""
    runtime_dir = config.endpoints.runtime_dir or default_runtime_dir()
    fields = {
        f: getattr(config.endpoints, f).replace("{runtime_dir}", runtime_dir)
        for f in ENDPOINT_KEYS
    }
    endpoints = msgspec.structs.replace(config.endpoints, runtime_dir=runtime_dir, **fields)
    return msgspec.structs.replace(config, endpoints=endpoints)


def to_toml_dict(config: Config) -> dict:
    return msgspec.to_builtins(config)
