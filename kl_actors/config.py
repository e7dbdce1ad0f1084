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
    # From an actor's start to its first heartbeat. Longer than heartbeat_timeout_s: on a busy host
    # a fresh interpreter importing its modules (and compiling them once after an upgrade) beside
    # every other actor doing the same can take several times that, and killing it then only
    # starts the same slow import again.
    start_timeout_s: float = 60.0
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
    # Past this size the log is copied to <log>.1 and cut (logfile.py); this many copies are kept.
    log_max_mib: float = 64.0
    log_keep: int = 3


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


# The rules live in config_rules.py (one idea: what types alone cannot say); `cfg.check` stays
# the one name callers use.
from .config_rules import MAX_DEPTH, PROXY_SCHEMES, _floats, check, metrics_address  # noqa: E402,F401
