"""streams.py: stream names, groups per connection, URLs, backoff, handover, dedupe (pure)."""

import ast
from pathlib import Path

import pytest

from kl_actors.core import streams
from kl_actors.core.streams import (
    StreamTracker,
    backoff_s,
    combined_url,
    handover_wait_ms,
    parse_proxy,
    plan_groups,
    renew_due,
    stream_name,
    stream_names,
)


def test_stream_names():
    assert stream_name("BTCUSDT", "1m") == "btcusdt@kline_1m"
    assert stream_name("1000PEPEUSDT", "1M") == "1000pepeusdt@kline_1M"
    assert stream_name("BTCUSDT", "5m", "continuousKline") == "btcusdt_perpetual@continuousKline_5m"
    assert stream_names(["AUSDT", "BUSDT"], ["1m", "5m"]) == [
        "ausdt@kline_1m", "ausdt@kline_5m", "busdt@kline_1m", "busdt@kline_5m"]


def test_stream_key_inverts_stream_name_for_both_kinds():
    for kind in ("kline", "continuousKline"):
        for symbol, interval in [("BTCUSDT", "1m"), ("1000PEPEUSDT", "1M"), ("ETHUSDT", "3d")]:
            assert streams.stream_key(streams.stream_name(symbol, interval, kind)) == (symbol, interval)


def test_plan_groups_from_nothing_splits_at_the_limit():
    wanted = [f"s{i}" for i in range(60)]
    groups = plan_groups([], wanted, 25)
    assert [len(g) for g in groups] == [25, 25, 10]
    assert [s for g in groups for s in g] == wanted


def test_plan_groups_keeps_surviving_streams_in_place():
    old = [("a", "b", "c"), ("d", "e", "f"), ("g",)]
    new = plan_groups(old, ["a", "c", "d", "e", "f", "g", "h", "i", "j", "k"], 3)
    assert new[0] == ("a", "c", "h")       # b left, h fills the gap
    assert new[1] == ("d", "e", "f")       # unchanged: its connection stays
    assert new[2] == ("g", "i", "j")
    assert new[3] == ("k",)


def test_plan_groups_empty_group_stays_at_its_index():
    assert plan_groups([("a",), ("b",)], ["b"], 5) == [(), ("b",)]
    assert plan_groups([("a", "a2")], ["a", "a", "x"], 5) == [("a", "x")]
    with pytest.raises(ValueError):
        plan_groups([], ["a"], 0)


def test_combined_url():
    assert combined_url("ws://h:1/market/", ("a@kline_1m", "b@kline_1m")) == \
        "ws://h:1/market/stream?streams=a@kline_1m/b@kline_1m"


def test_backoff_doubles_caps_and_jitters():
    assert backoff_s(1, 0.5, 30, 0.999999) == pytest.approx(0.5)
    assert backoff_s(1, 0.5, 30, 0.0) == pytest.approx(0.25)
    assert backoff_s(3, 0.5, 30, 0.999999) == pytest.approx(2.0)
    assert backoff_s(20, 0.5, 30, 0.999999) == pytest.approx(30)
    assert backoff_s(20, 0.5, 30, 0.0) == pytest.approx(15)


def test_renew_due():
    assert renew_due(100.0, 86400, 600) == 100.0 + 85800
    assert renew_due(100.0, 20, 5) == 115.0
    assert renew_due(100.0, 5, 20) == 100.0


def test_handover_waits_for_closes_of_the_last_boundary():
    minute = 1_700_000_000_000 - 1_700_000_000_000 % 60_000
    assert handover_wait_ms(minute + 500) == 2_500        # just after a boundary: wait
    assert handover_wait_ms(minute + 3_000) == 0
    assert handover_wait_ms(minute + 45_000) == 0         # mid-minute: hand over at once
    assert handover_wait_ms(minute, grace_ms=1000) == 1000


def test_parse_proxy():
    assert parse_proxy("") == (None, 0, None, "http")
    assert parse_proxy("http://u:p%40ss@proxy:3128") == ("proxy", 3128, ("u", "p@ss"), "http")
    assert parse_proxy("socks5h://10.0.0.1") == ("10.0.0.1", 1080, None, "socks5h")
    assert parse_proxy("proxy.local:8080").port == 8080


def test_tracker_passes_each_close_once_and_drops_stale_live_updates():
    t = StreamTracker()
    assert t.accept("A", "1m", 0, False, 10)
    assert not t.accept("A", "1m", 0, False, 10)       # same update from the other connection
    assert not t.accept("A", "1m", 0, False, 5)        # older update
    assert t.accept("A", "1m", 0, False, 20)
    assert t.accept("A", "1m", 0, True, 60_300)
    assert not t.accept("A", "1m", 0, True, 60_350)    # the other connection's close
    assert not t.accept("A", "1m", 0, False, 60_400)   # a lagging live update of a closed candle
    assert t.accept("A", "1m", 60_000, False, 60_500)
    assert t.accept("A", "5m", 0, True, 300_300)       # other interval, own bookkeeping
    assert t.accept("B", "1m", 0, True, 60_300)


def test_pure_core_imports_no_io_library():
    tree = ast.parse(Path(streams.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"zmq", "requests", "websocket", "apsw", "time", "socket"}


def test_odd_symbol_streams_are_lower_case_and_percent_encoded_in_the_url():
    from kl_actors import messages

    names = stream_names(["币安人生USDT", "BTC-USDT", "BTCUSDT"], ["1m"])
    assert names == ["币安人生usdt@kline_1m", "btc-usdt@kline_1m", "btcusdt@kline_1m"]
    url = combined_url("wss://fstream.binance.com/market", names)
    assert url == ("wss://fstream.binance.com/market/stream?streams="
                   "%E5%B8%81%E5%AE%89%E4%BA%BA%E7%94%9Fusdt@kline_1m/btc-usdt@kline_1m/btcusdt@kline_1m")
    assert combined_url("ws://h/market", ["btcusdt@kline_1m"]) == "ws://h/market/stream?streams=btcusdt@kline_1m"
    assert messages.feed_topic("币安人生USDT", "1m") == "kline.币安人生USDT.1m".encode("utf-8")
    assert messages.feed_topic("BTCUSDT", "1m") == b"kline.BTCUSDT.1m"
