"""Every config key a harmful value can reach is refused at start, with one line naming the key."""

from __future__ import annotations

import math

import msgspec
import pytest

from kl_actors import config as cfg


def _with(section: str, **changes) -> cfg.Config:
    base = cfg.Config()
    return msgspec.structs.replace(base, **{section: msgspec.structs.replace(getattr(base, section), **changes)})


NAN, INF = math.nan, math.inf

BAD = [
    ("exchange.request_timeout_s", "exchange", {"request_timeout_s": 0.0}),
    ("exchange.request_timeout_s", "exchange", {"request_timeout_s": -1.0}),
    ("exchange.request_timeout_s", "exchange", {"request_timeout_s": NAN}),
    ("exchange.request_timeout_s", "exchange", {"request_timeout_s": INF}),
    ("symbols.rediscover_s", "symbols", {"rediscover_s": 0.0}),
    ("symbols.rediscover_s", "symbols", {"rediscover_s": NAN}),
    ("klines.depth.1m", "klines", {"depth": {"1m": 0}}),
    ("klines.phase_3d_days", "klines", {"phase_3d_days": 3}),
    ("klines.phase_3d_days", "klines", {"phase_3d_days": -1}),
    ("symbols.contract_types", "symbols", {"contract_types": []}),
    ("symbols.contract_types", "symbols", {"contract_types": ["PERPETUAL", "perpetual"]}),
    ("klines.depth.1m", "klines", {"depth": {"1m": 10_000_001}}),
    ("downloader.lease_s", "downloader", {"lease_s": 0.0}),
    ("downloader.lease_s", "downloader", {"lease_s": NAN}),
    ("downloader.max_attempts", "downloader", {"max_attempts": 0}),
    ("downloader.max_attempts", "downloader", {"max_attempts": -3}),
    ("downloader.max_uncommitted", "downloader", {"max_uncommitted": 7}),
    ("klines.hole_confirm_s", "klines", {"hole_confirm_s": -1.0}),
    ("klines.hole_confirm_s", "klines", {"hole_confirm_s": NAN}),
    ("weight.usable_fraction", "weight", {"usable_fraction": NAN}),
    ("weight.usable_fraction", "weight", {"usable_fraction": 0.0}),
    ("database.path", "database", {"path": ""}),
    ("database.busy_timeout_ms", "database", {"busy_timeout_ms": -1}),
    ("database.cache_size_kib", "database", {"cache_size_kib": -1}),
    ("database.mmap_size_mib", "database", {"mmap_size_mib": -1}),
    ("writer.max_rows_per_txn", "writer", {"max_rows_per_txn": 0}),
    ("writer.max_delay_ms", "writer", {"max_delay_ms": -1}),
    ("supervisor.heartbeat_s", "supervisor", {"heartbeat_s": NAN}),
    ("supervisor.heartbeat_s", "supervisor", {"heartbeat_s": 0.0}),
    ("supervisor.heartbeat_timeout_s", "supervisor", {"heartbeat_timeout_s": NAN}),
    ("supervisor.heartbeat_timeout_s", "supervisor", {"heartbeat_timeout_s": 0.5}),
    ("supervisor.start_timeout_s", "supervisor", {"start_timeout_s": NAN}),
    ("supervisor.start_timeout_s", "supervisor", {"start_timeout_s": 0.0}),
    ("display.log_max_mib", "display", {"log_max_mib": 0.0}),
    ("display.log_max_mib", "display", {"log_max_mib": NAN}),
    ("display.log_keep", "display", {"log_keep": 0}),
    ("supervisor.restart_backoff_initial_s", "supervisor", {"restart_backoff_initial_s": -0.1}),
    ("supervisor.restart_backoff_initial_s", "supervisor", {"restart_backoff_initial_s": 0.0}),
    ("supervisor.restart_backoff_max_s", "supervisor", {"restart_backoff_max_s": -1.0}),
    ("supervisor.restart_backoff_max_s", "supervisor", {"restart_backoff_max_s": INF}),
    ("supervisor.max_restarts", "supervisor", {"max_restarts": -1}),
    ("supervisor.restart_window_s", "supervisor", {"restart_window_s": 0.0}),
    ("supervisor.stop_timeout_s", "supervisor", {"stop_timeout_s": 0.0}),
    ("live.boundary_margin_ms", "live", {"boundary_margin_ms": -1}),
    ("live.not_final_retry_ms", "live", {"not_final_retry_ms": 0}),
    ("live.final_recheck_ms", "live", {"final_recheck_ms": -1}),
    ("live.clock_samples", "live", {"clock_samples": 0}),
    ("live.ws_streams_per_connection", "live", {"ws_streams_per_connection": 0}),
    ("live.ws_streams_per_connection", "live", {"ws_streams_per_connection": 1025}),
    ("live.ws_lifetime_s", "live", {"ws_lifetime_s": 0.0}),
    ("live.ws_lifetime_s", "live", {"ws_lifetime_s": NAN}),
    ("live.ws_renew_before_s", "live", {"ws_renew_before_s": 86400.0}),
    ("live.ws_renew_before_s", "live", {"ws_renew_before_s": -1.0}),
    ("live.ws_reconnect_initial_s", "live", {"ws_reconnect_initial_s": 0.0}),
    ("live.ws_reconnect_initial_s", "live", {"ws_reconnect_initial_s": -0.5}),
    ("live.ws_reconnect_max_s", "live", {"ws_reconnect_max_s": 0.1}),
    ("archive.base_url", "archive", {"base_url": "data.binance.vision"}),
    ("archive.base_url", "archive", {"base_url": "ftp://127.0.0.1:9"}),
    ("archive.horizon_days", "archive", {"horizon_days": 0}),
    ("archive.horizon_days", "archive", {"horizon_days": 367}),
    ("archive.concurrency", "archive", {"concurrency": 0}),
    ("archive.concurrency", "archive", {"concurrency": 65}),
    # Internal endpoints: no authentication yet, so never reachable from the network.
    ("endpoints.tasks", "endpoints", {"tasks": "tcp://0.0.0.0:7000"}),
    ("endpoints.results", "endpoints", {"results": "tcp://*:7001"}),
    ("endpoints.writer", "endpoints", {"writer": "tcp://192.168.1.5:7002"}),
    ("endpoints.bus_pub", "endpoints", {"bus_pub": "tcp://[::]:7003"}),
    ("endpoints.bus_sub", "endpoints", {"bus_sub": "tcp://eth0:7004"}),
    ("endpoints.control", "endpoints", {"control": "tcp://example.com:7005"}),
    ("endpoints.feed_in", "endpoints", {"feed_in": "tcp://10.0.0.1:7006"}),
    ("endpoints.feed", "endpoints", {"feed": "tcp://0.0.0.0:7755"}),
    # Two keys on one endpoint: the second bind fails, or two roles share a socket.
    ("endpoints.results", "endpoints", {"results": "ipc://{runtime_dir}/tasks"}),
    ("endpoints.feed", "endpoints", {"feed_in": "tcp://127.0.0.1:7755"}),
]


@pytest.mark.parametrize("key,section,changes", BAD, ids=[f"{k}={list(c.values())[0]!r}" for k, _, c in BAD])
def test_harmful_value_is_refused_naming_its_key(key, section, changes):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.check(_with(section, **changes), "bad.toml")
    message = str(info.value)
    assert message.startswith(f"bad.toml: key {key}: "), message
    assert "\n" not in message


def test_every_float_key_is_covered_for_nan():
    """NaN passes every `<` comparison silently; each float key of the tree must refuse it."""
    base = cfg.Config()
    keys = list(cfg._floats(base))
    assert len(keys) >= 14
    for key, _ in keys:
        section, name = key.split(".")
        with pytest.raises(cfg.ConfigError, match=f"key {section}.{name}: must be a finite number"):
            cfg.check(_with(section, **{name: NAN}), "bad.toml")


OK = [
    ("endpoints", {"tasks": "tcp://127.0.0.1:7000", "results": "tcp://[::1]:7001", "writer": "tcp://localhost:7002"}),
    ("endpoints", {"feed": "tcp://0.0.0.0:7755", "allow_public_feed": True}),
    ("live", {"final_recheck_ms": 0, "boundary_margin_ms": 0, "ws_renew_before_s": 0.0}),
    ("supervisor", {"max_restarts": 0}),
    ("database", {"cache_size_kib": 0, "busy_timeout_ms": 0, "mmap_size_mib": 0}),
    ("klines", {"depth": {"1m": 10_000_000}}),
    ("weight", {"limit_per_minute": 0, "usable_fraction": 1.0}),
    ("archive", {"horizon_days": 1, "concurrency": 64, "base_url": "http://127.0.0.1:1"}),
    ("archive", {"enabled": False, "base_url": ""}),
]


@pytest.mark.parametrize("section,changes", OK)
def test_edge_values_that_work_are_accepted(section, changes):
    cfg.check(_with(section, **changes), "ok.toml")


def test_defaults_and_shipped_files_pass():
    from kl_actors import cli
    cfg.load(cli.DEFAULT_CONFIG)
    cfg.load(cli.SIM_CONFIG)
    cfg.check(cfg.Config(), "<defaults>")


def _args(*argv: str):
    from kl_actors import cli
    return cli.parser().parse_args(list(argv))


def test_archive_is_used_only_with_the_real_exchange_the_simulator_or_when_named():
    from kl_actors import cli
    # The real exchange's default REST URL: the real archive.
    assert cfg.archive_url(cli.effective_config(_args())) == cfg.REAL_ARCHIVE_URL
    # REST elsewhere and no archive named: off, so a simulator run never reaches the real archive.
    assert cfg.archive_url(cli.effective_config(_args("--rest-url", "http://127.0.0.1:9"))) == ""
    assert cfg.archive_url(cli.effective_config(_args("--config", str(cli.SIM_CONFIG)))) == ""
    # Named on the command line: that one, whatever the REST URL.
    named = cli.effective_config(_args("--rest-url", "http://127.0.0.1:9", "--archive-url", "http://127.0.0.1:8/"))
    assert cfg.archive_url(named) == "http://127.0.0.1:8"
    # Switched off: off, even with the real exchange.
    off = _with("archive", enabled=False)
    assert cfg.archive_url(off) == ""
    # An explicit base_url in the file counts as named.
    assert cfg.archive_url(_with("archive", base_url="http://127.0.0.1:7")) == "http://127.0.0.1:7"


def test_bad_archive_url_on_the_command_line_is_refused():
    from kl_actors import cli
    with pytest.raises(cfg.ConfigError, match="key archive.base_url"):
        cli.effective_config(_args("--archive-url", "127.0.0.1:8"))


def _egress(toml: str) -> cfg.Config:
    return cfg.check(cfg.decode(toml.encode(), "egress.toml"), "egress.toml")


EGRESS_BAD = [
    ("egress[1].name", "duplicate", '[[egress]]\nname = "a"\n[[egress]]\nname = "a"\nproxy = "http://127.0.0.1:3128"\n'),
    ("egress[0]", "both source_address and proxy",
     '[[egress]]\nname = "a"\nsource_address = "127.0.0.2"\nproxy = "http://127.0.0.1:3128"\n'),
    ("egress[0].source_address", "not an IP address", '[[egress]]\nname = "a"\nsource_address = "127.0.0.300"\n'),
    ("egress[0].source_address", "not an IP address", '[[egress]]\nname = "a"\nsource_address = "eth0"\n'),
    ("egress[1].source_address", "one IP is one weight budget",
     '[[egress]]\nname = "a"\nsource_address = "127.0.0.2"\n[[egress]]\nname = "b"\nsource_address = "127.0.0.2"\n'),
    ("egress[0].proxy", "must start with", '[[egress]]\nname = "a"\nproxy = "127.0.0.1:3128"\n'),
    ("egress[0].name", "letters, digits", '[[egress]]\nname = "a b"\n'),
    ("egress[0].name", "letters, digits", '[[egress]]\nname = ""\n'),
    ("egress[0].downloaders", "no other host can join", '[[egress]]\nname = "a"\ndownloaders = 0\n'),
    ("egress[0].downloaders", "must be 0..64", '[[egress]]\nname = "a"\ndownloaders = 65\n'),
    ("remote.egress", "only with remote.connect", '[[egress]]\nname = "a"\n[remote]\negress = "a"\n'),
    ("remote.egress", "is not the name", '[[egress]]\nname = "a"\n[remote]\nconnect = "h"\nkeys_dir = "k"\negress = "b"\n'),
    ("remote.group_tasks_port", "must differ",
     '[[egress]]\nname = "a"\n[[egress]]\nname = "b"\n[remote]\nlisten = "127.0.0.1"\nkeys_dir = "k"\ngroup_tasks_port = 7762\n'),
    ("egress[0].name", "required, not given", '[[egress]]\nsource_address = "127.0.0.2"\n'),
    ("egress[0].sorce_address", "unknown key", '[[egress]]\nname = "a"\nsorce_address = "127.0.0.2"\n'),
    ("downloader.max_uncommitted", "at least 48",
     '[downloader]\nmax_uncommitted = 40\n[[egress]]\nname = "a"\ndownloaders = 12\n[[egress]]\nname = "b"\ndownloaders = 12\n'),
    ("endpoints.tasks", "fixed port",
     '[endpoints]\ntasks = "tcp://127.0.0.1:0"\n[[egress]]\nname = "a"\n[[egress]]\nname = "b"\n'),
    ("endpoints.tasks", "which is endpoints.results",
     '[endpoints]\ntasks = "tcp://127.0.0.1:7000"\nresults = "tcp://127.0.0.1:7001"\n'
     '[[egress]]\nname = "a"\n[[egress]]\nname = "b"\n'),
]


@pytest.mark.parametrize("key,text,toml", EGRESS_BAD, ids=[f"{k}:{t}" for k, t, _ in EGRESS_BAD])
def test_bad_egress_groups_are_refused_naming_the_group(key, text, toml):
    with pytest.raises(cfg.ConfigError) as info:
        _egress(toml)
    message = str(info.value)
    assert message.startswith(f"egress.toml: key {key}: "), message
    assert text in message and "\n" not in message


def test_egress_groups_number_downloaders_and_tasks_endpoints_across_groups():
    default = cfg.resolve_endpoints(cfg.Config())
    # No [[egress]]: one group on the default route with downloader.processes, endpoints unchanged.
    assert [(g.name, g.downloaders, g.source_address, g.proxy) for g in cfg.egress_groups(default)] == \
        [("default", 4, "", "")]
    assert cfg.tasks_endpoint(default, 0) == default.endpoints.tasks
    two = cfg.resolve_endpoints(_egress(
        '[[egress]]\nname = "lo2"\nsource_address = "127.0.0.2"\n'
        '[[egress]]\nname = "lo3"\nsource_address = "127.0.0.3"\ndownloaders = 3\n'
        '[[egress]]\nname = "px"\nproxy = "socks5h://127.0.0.1:1080"\ndownloaders = 1\n'))
    assert cfg.downloader_count(two) == 6
    assert [cfg.downloader_group(two, f"downloader-{n}")[1].name for n in range(1, 7)] == \
        ["lo2", "lo2", "lo3", "lo3", "lo3", "px"]
    # Past the count (a host joining another runs downloader-9 by name): this host's first way out.
    assert cfg.downloader_group(two, "downloader-9") == (0, cfg.egress_groups(two)[0])
    assert cfg.tasks_endpoint(two, 0) == two.endpoints.tasks
    assert cfg.tasks_endpoint(two, 1) == two.endpoints.tasks + "-lo3"
    tcp = msgspec.structs.replace(two, endpoints=msgspec.structs.replace(two.endpoints, tasks="tcp://127.0.0.1:7100"))
    assert [cfg.tasks_endpoint(tcp, i) for i in range(3)] == \
        ["tcp://127.0.0.1:7100", "tcp://127.0.0.1:7101", "tcp://127.0.0.1:7102"]
    from kl_actors.supervisor import actor_names
    assert [n for n in actor_names(two) if n.startswith("downloader")] == [f"downloader-{n}" for n in range(1, 7)]


def test_egress_session_binds_the_group_address_or_uses_its_proxy():
    from kl_actors import exchange
    from kl_actors.config import EgressConfig, ExchangeConfig
    bound = exchange.session(ExchangeConfig(proxy="http://127.0.0.1:3128"), EgressConfig(name="a", source_address="127.0.0.2"))
    adapter = bound.get_adapter("http://127.0.0.1:1/")
    assert isinstance(adapter, exchange.SourceAddressAdapter)
    assert adapter.poolmanager.connection_pool_kw["source_address"] == ("127.0.0.2", 0)
    # The group names its way out: neither exchange.proxy nor the environment's proxy applies.
    assert bound.proxies == {} and bound.trust_env is False
    proxied = exchange.session(ExchangeConfig(), EgressConfig(name="b", proxy="socks5h://127.0.0.1:1080"))
    assert proxied.proxies == {"http": "socks5h://127.0.0.1:1080", "https": "socks5h://127.0.0.1:1080"}
    assert proxied.trust_env is False
    default = exchange.session(ExchangeConfig(), EgressConfig(name="default"))
    assert default.trust_env is True and default.proxies == {}


def test_the_commented_egress_example_in_default_toml_is_a_valid_config():
    import re
    from kl_actors import cli
    text = cli.DEFAULT_CONFIG.read_text()
    example = re.sub(r"^# (\[\[egress\]\]|name |source_address |downloaders )", r"\1", text, flags=re.M)
    config = cfg.check(cfg.decode(example.encode(), "example"), "example")
    assert [(g.name, g.source_address, g.downloaders) for g in config.egress] == \
        [("a", "203.0.113.10", 2), ("b", "203.0.113.11", 2)]


def test_downloaders_flag_is_refused_when_egress_groups_say_how_many(tmp_path):
    from kl_actors import cli
    path = tmp_path / "groups.toml"
    path.write_text('[[egress]]\nname = "a"\nsource_address = "127.0.0.2"\n')
    assert cfg.downloader_count(cli.effective_config(_args("--config", str(path)))) == 2
    with pytest.raises(cfg.ConfigError, match="--downloaders: with \\[\\[egress\\]\\] groups"):
        cli.effective_config(_args("--config", str(path), "--downloaders", "8"))


# -- [metrics] ----------------------------------------------------------------------------------

METRICS_BAD = [
    ({"listen": "0.0.0.0:9108"}, "is not loopback; set metrics.allow_public_metrics = true"),
    ({"listen": "[::]:9108"}, "is not loopback"),
    ({"listen": "192.168.1.5:9108"}, "is not loopback"),
    ({"listen": "example.com:9108"}, "must be an IP address"),
    ({"listen": "127.0.0.1"}, "HOST:PORT"),
    ({"listen": "127.0.0.1:0"}, "HOST:PORT"),
    ({"listen": "127.0.0.1:70000"}, "HOST:PORT"),
    ({"listen": "9108"}, "HOST:PORT"),
    ({"listen": "example.com:9108", "allow_public_metrics": True}, "must be an IP address"),
]


@pytest.mark.parametrize("changes, text", METRICS_BAD, ids=[c["listen"] for c, _ in METRICS_BAD])
def test_metrics_listen_refused_unless_loopback_or_allowed(changes, text):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.check(_with("metrics", **changes), "bad.toml")
    assert str(info.value).startswith("bad.toml: key metrics.listen: ") and text in str(info.value)


@pytest.mark.parametrize("changes", [
    {"listen": ""}, {"listen": "127.0.0.1:9108"}, {"listen": "127.0.0.5:1"}, {"listen": "[::1]:9108"},
    {"listen": "localhost:65535"}, {"listen": "0.0.0.0:9108", "allow_public_metrics": True},
])
def test_metrics_listen_accepted(changes):
    cfg.check(_with("metrics", **changes), "ok.toml")


def test_metrics_flag_sets_listen_and_is_checked():
    from kl_actors import cli
    assert cli.effective_config(_args()).metrics.listen == ""
    assert cli.effective_config(_args("--metrics", "127.0.0.1:9108")).metrics.listen == "127.0.0.1:9108"
    with pytest.raises(cfg.ConfigError, match="key metrics.listen: '0.0.0.0:9108' is not loopback"):
        cli.effective_config(_args("--metrics", "0.0.0.0:9108"))
