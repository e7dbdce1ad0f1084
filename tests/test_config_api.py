"""`[api]` config rules, `--api`, and when the supervisor starts the api actor."""

from __future__ import annotations

import msgspec
import pytest

from kl_actors import cli
from kl_actors import config as cfg
from kl_actors.supervisor import actor_names


def with_api(**changes) -> cfg.Config:
    base = cfg.Config()
    return msgspec.structs.replace(base, api=msgspec.structs.replace(base.api, **changes))


@pytest.mark.parametrize("changes,text", [
    ({"listen": "0.0.0.0:8090"}, "not loopback; set api.allow_public_api = true"),
    ({"listen": "192.168.1.5:8090"}, "not loopback"),
    ({"listen": "127.0.0.1"}, "host:port"),
    ({"listen": "127.0.0.1:0"}, "port 1..65535"),
    ({"listen": "127.0.0.1:70000"}, "port 1..65535"),
    ({"listen": "127.0.0.1:８０"}, "port 1..65535"),
    ({"listen": "example.com:8090"}, "must be an IP address"),
    ({"listen": ":8090"}, "must be an IP address"),
    ({"client_weight_limit": -1}, "api.client_weight_limit"),
])
def test_bad_api_settings_are_refused_naming_the_key(changes, text):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.check(with_api(**changes), "test")
    message = str(info.value)
    assert "key api." in message and text in message and "\n" not in message


@pytest.mark.parametrize("changes", [
    {"listen": "127.0.0.1:8090"}, {"listen": "127.0.0.2:1"}, {"listen": "[::1]:8090"},
    {"listen": "localhost:8090"}, {"listen": "0.0.0.0:8090", "allow_public_api": True},
    {"listen": "127.0.0.1:8090", "client_weight_limit": 0},
])
def test_good_api_settings_pass(changes):
    config = cfg.check(with_api(**changes), "test")
    host, port = cfg.api_address(config)
    assert port == int(changes["listen"].rpartition(":")[2]) and "[" not in host


def test_api_is_off_by_default_and_started_only_when_listening_and_not_once():
    assert cfg.Config().api.listen == ""
    assert "api" not in actor_names(cfg.Config())
    on = with_api(listen="127.0.0.1:8090")
    assert actor_names(on)[-1] == "api"
    assert "api" not in actor_names(msgspec.structs.replace(on, mode="once"))
    assert "api" in actor_names(msgspec.structs.replace(on, mode="stream-only"))


def test_api_flag_sets_listen_and_is_checked():
    config = cli.effective_config(cli.parser().parse_args(["--api", "127.0.0.1:8091"]))
    assert config.api.listen == "127.0.0.1:8091"
    with pytest.raises(cfg.ConfigError, match="api.listen"):
        cli.effective_config(cli.parser().parse_args(["--api", "0.0.0.0:8091"]))
