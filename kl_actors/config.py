"""The service's configuration: one msgspec Struct tree decoded from TOML, defaults in one place.

`load()` returns a checked `Config` or raises `ConfigError` whose message is the one line the
supervisor prints (naming the file, the key and the problem) before exiting with status 2.
Endpoints may contain `{runtime_dir}`, filled in after loading so every actor sees the same paths.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from pathlib import Path
from typing import Literal

import msgspec

from .core import intervals
from .core.symbols import SymbolError, validate_symbol


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line for the operator."""


# An actor exits with this status when a restart cannot help (e.g. the database became read-only):
# the supervisor then stops the service with exit 2 instead of restarting into a crash loop.
# (78 is EX_CONFIG of sysexits.h; no actor exits with it by accident.)
EXIT_FATAL = 78


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


CONTRACT_TYPES = ("PERPETUAL", "TRADIFI_PERPETUAL", "CURRENT_QUARTER", "NEXT_QUARTER")


class SymbolsConfig(_Section):
    quote_asset: str = "USDT"
    # TradFi perpetuals (gold, indices, stocks) are USDT-margined perpetuals too; a user who
    # wants only crypto says ["PERPETUAL"].
    contract_types: list[str] = msgspec.field(default_factory=lambda: ["PERPETUAL", "TRADIFI_PERPETUAL"])
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
    # Where 3d candles open (epoch day mod 3) until the exchange's own candles say: stored 3d
    # candles, else one 3d candle asked at discovery. 1 is what the real spot archive shows.
    phase_3d_days: int = 1
    # An empty answer inside stored history is asked again this much later before it is recorded
    # as an exchange hole (never asked again): a blip of the exchange must not become permanent.
    hole_confirm_s: float = 45.0


class DownloaderConfig(_Section):
    processes: int = 4
    concurrency: int = 2
    # limit=499 costs weight 2: 249.5 candles per weight unit, the cheapest page there is.
    page_limit: int = 499
    lease_s: float = 30.0
    max_attempts: int = 8
    # Tasks released but not yet committed by the writer, at most: a stalled writer stops the
    # release of new work instead of filling socket queues with pages (~60 KB each).
    max_uncommitted: int = 256


class EgressConfig(_Section):
    """One way out to the exchange (an `[[egress]]` table): the exchange counts weight per IP, so
    each group gets its own budget. `source_address` binds every connection's local address (an
    extra IP of this host); `proxy` sends them through a proxy (its IP is the one counted);
    neither: this host's default route."""

    name: str
    source_address: str = ""
    proxy: str = ""
    # Downloader processes this host runs for the group (0: all on other hosts, see [remote]).
    downloaders: int = 2


class WeightConfig(_Section):
    # 0: read the limit from exchangeInfo.rateLimits (never hard-code the exchange's number).
    limit_per_minute: int = 0
    # Share of the limit the scheduler may spend; the rest is headroom for other programs on the
    # same IP until their use shows in the exchange's header. (Clock skew, late sends and our own
    # unbudgeted requests are accounted for separately, see budget.py.)
    usable_fraction: float = 0.98


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


class RemoteConfig(_Section):
    """Downloaders on other hosts (see curve.py). The service host sets `listen`: its scheduler,
    writer and broker also bind these ports there, CURVE only. A downloader host sets `connect`
    (or `--connect HOST`): its downloaders join that host's ports with the key bundle in `keys_dir`."""
    listen: str = ""
    connect: str = ""
    keys_dir: str = ""
    # A downloader host: the `[[egress]]` group its downloaders belong to (its own weight budget;
    # the service host lists the group, usually with `downloaders = 0`). Empty: the first group.
    egress: str = ""
    tasks_port: int = 7761         # the first egress group's tasks
    results_port: int = 7762
    writer_port: int = 7763
    bus_port: int = 7764
    group_tasks_port: int = 7770   # the tasks of egress group 2, 3, ...: this port, the next, ...


# Endpoint key -> the RemoteConfig port that serves it to downloaders on other hosts.
REMOTE_PORTS = {"tasks": "tasks_port", "results": "results_port", "writer": "writer_port", "bus_sub": "bus_port"}


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
    # A boundary whose candles are not all REST-confirmed this long after the close is logged late.
    boundary_deadline_s: float = 60.0
    clock_samples: int = 5
    ws_streams_per_connection: int = 200
    # The exchange closes a connection after 24 h; a replacement is opened this long before.
    ws_lifetime_s: float = 86400.0
    ws_renew_before_s: float = 600.0
    ws_reconnect_initial_s: float = 0.5
    ws_reconnect_max_s: float = 30.0


class ArchiveConfig(_Section):
    """The exchange's bulk archive (data.binance.vision), used for history older than the horizon."""

    # false: history only over REST.
    enabled: bool = True
    # Empty: the real archive when exchange.rest_url is the real exchange's default, the
    # simulator's with --sim, otherwise off (a run against a simulator never reaches the real one).
    base_url: str = ""
    # Days before today (UTC) the archive is not asked for: its files appear a day or more late.
    horizon_days: int = 2
    # Archive downloads in flight at once, across the pool; they spend no REST weight.
    concurrency: int = 4


REAL_ARCHIVE_URL = "https://data.binance.vision"
DEFAULT_EGRESS = "default"


def egress_groups(config: "Config") -> list[EgressConfig]:
    """The ways out, in order (the first also carries time-sync and exchangeInfo): the configured
    `[[egress]]` groups, else one group on the default route with `downloader.processes`."""
    if config.egress:
        return list(config.egress)
    return [EgressConfig(name=DEFAULT_EGRESS, downloaders=config.downloader.processes)]


def downloader_count(config: "Config") -> int:
    return sum(g.downloaders for g in egress_groups(config))


def downloader_group(config: "Config", actor_name: str) -> tuple[int, EgressConfig]:
    """(index, group) of `downloader-N`: downloaders are numbered across groups in their order
    (the first group's are 1..n1, the next group's follow), so `--actors downloader-3` names one
    process of one group."""
    number = int(actor_name.rpartition("-")[2])
    groups = egress_groups(config)
    if config.remote.connect and config.remote.egress:
        for index, group in enumerate(groups):
            if group.name == config.remote.egress:
                return index, group
        raise ConfigError(f"key remote.egress: no [[egress]] group named {config.remote.egress!r}")
    for index, group in enumerate(groups):
        if number <= group.downloaders:
            return index, group
        number -= group.downloaders
    # Numbered past every group: a downloader a host that joins another (`remote.connect`) runs
    # by name (`--actors downloader-3` where this config counts fewer); it goes out this host's
    # first way.
    return 0, groups[0]


def tasks_endpoint(config: "Config", group_index: int) -> str:
    """Where the scheduler hands out one group's tasks: the first group uses `endpoints.tasks`
    itself; the others a sibling (ipc: the path plus `-<name>`; tcp: the port plus the index).
    On a downloader host (`remote.connect`) a group joins its remote tasks port on the service host."""
    base = config.endpoints.tasks
    if config.remote.connect:
        return base.rpartition(":")[0] + f":{remote_tasks_port(config, group_index)}"
    if group_index == 0:
        return base
    if base.startswith("tcp://"):
        host, _, port = base.rpartition(":")
        if not port.isdigit():
            raise ConfigError(f"key endpoints.tasks: {base!r} needs a fixed port when egress groups are configured")
        return f"{host}:{int(port) + group_index}"
    return f"{base}-{egress_groups(config)[group_index].name}"


def remote_tasks_port(config: "Config", group_index: int) -> int:
    """The CURVE port of one egress group's tasks on the service host (remote downloaders)."""
    r = config.remote
    return r.tasks_port if group_index == 0 else r.group_tasks_port + group_index - 1


def archive_url(config: "Config") -> str:
    """The archive's base URL this config uses, or "" when the archive is off."""
    a = config.archive
    if not a.enabled:
        return ""
    if a.base_url:
        return a.base_url.rstrip("/")
    if config.exchange.rest_url.rstrip("/") == ExchangeConfig().rest_url:
        return REAL_ARCHIVE_URL
    return ""


class ApiConfig(_Section):
    """The exchange-compatible read API (actors/api.py): clients change only their base URL."""

    # "host:port" to serve on, e.g. "127.0.0.1:8090"; empty: no API actor.
    listen: str = ""
    # A non-loopback `listen` is refused unless this is true.
    allow_public_api: bool = False
    # Request weight per client address and minute (the exchange's weights); 0: unlimited.
    client_weight_limit: int = 2400


def api_address(config: "Config") -> tuple[str, int]:
    """(host, port) of `api.listen` ("[::1]:8090" for IPv6); raises ConfigError if malformed."""
    text = config.api.listen
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"key api.listen: {text[:60]!r} must be host:port with a port 1..65535")
    if host != "localhost" and not _is_address(host):
        raise ConfigError(f"key api.listen: {host[:60]!r} must be an IP address (or localhost)")
    return host, int(port)
class MetricsConfig(_Section):
    # "" = off; "HOST:PORT" ("127.0.0.1:9108", "[::1]:9108"): the supervisor serves Prometheus
    # metrics over HTTP at /metrics there. Loopback unless allow_public_metrics.
    listen: str = ""
    allow_public_metrics: bool = False


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class DisplayConfig(_Section):
    """The progress display on a terminal (display.py)."""

    # auto: when the supervisor's stderr is a terminal; on: always; off: never (log lines on stderr).
    progress: Literal["auto", "on", "off"] = "auto"
    # Where every log line goes while the display is on; empty: <runtime_dir>/service.log.
    log_file: str = ""


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
    archive: ArchiveConfig = msgspec.field(default_factory=ArchiveConfig)
    remote: RemoteConfig = msgspec.field(default_factory=RemoteConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    display: DisplayConfig = msgspec.field(default_factory=DisplayConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    # Empty: one group, this host's default route, with `downloader.processes` downloaders.
    egress: list[EgressConfig] = []
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
    missing = re.fullmatch(r"Object missing required field (.+)", text)
    if missing:
        return (f"{key}.{missing.group(1)}" if key else missing.group(1)), "required, not given"
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


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


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
    if s.heartbeat_timeout_s <= s.heartbeat_s:
        fail("supervisor.heartbeat_timeout_s", "must be longer than supervisor.heartbeat_s")
    positive("supervisor.restart_backoff_initial_s", s.restart_backoff_initial_s)
    if s.restart_backoff_max_s < s.restart_backoff_initial_s:
        fail("supervisor.restart_backoff_max_s", "must be at least supervisor.restart_backoff_initial_s")
    at_least("supervisor.max_restarts", s.max_restarts, 0)
    positive("supervisor.restart_window_s", s.restart_window_s)
    positive("supervisor.stop_timeout_s", s.stop_timeout_s)
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
    if not api.allow_public_api and host != "localhost" and not ipaddress.ip_address(host).is_loopback:
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
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback and not m.allow_public_metrics:
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


def default_runtime_dir() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return os.path.join(base, "kl-actors")
    return f"/tmp/kl-actors-{os.getuid()}"


def resolve_endpoints(config: Config) -> Config:
    """Fill `{runtime_dir}` into every endpoint; on a downloader host (`remote.connect`) the
    endpoints a downloader joins become the service host's CURVE ports. Returns a new Config."""
    runtime_dir = config.endpoints.runtime_dir or default_runtime_dir()
    fields = {
        f: getattr(config.endpoints, f).replace("{runtime_dir}", runtime_dir)
        for f in ENDPOINT_KEYS
    }
    r = config.remote
    if r.connect:
        host = f"[{r.connect}]" if ":" in r.connect and not r.connect.startswith("[") else r.connect
        fields.update({key: f"tcp://{host}:{getattr(r, port)}" for key, port in REMOTE_PORTS.items()})
    endpoints = msgspec.structs.replace(config.endpoints, runtime_dir=runtime_dir, **fields)
    return msgspec.structs.replace(config, endpoints=endpoints)
