"""The read API's pure rules: parameters and their codes, the window, the live candle, weight per
client, completeness, exchangeInfo (kl_actors/core/api_rules.py)."""

from __future__ import annotations

import json

import msgspec
import pytest

from kl_actors.config import SymbolsConfig
from kl_actors.core import api_rules as r
from kl_actors.core import discovery, intervals

M = intervals.MINUTE_MS
T0 = 1_790_000_040_000 - 1_790_000_040_000 % (24 * 3600 * 1000)  # a day's start
KNOWN = {"BTCUSDT", "ETHUSDT"}.__contains__


def code(query: dict) -> int:
    with pytest.raises(r.ApiError) as info:
        r.parse_klines(query, KNOWN)
    return info.value.code


def row(open_ms: int, interval: str = "1m") -> tuple:
    return (open_ms, "1.0", "1.0", "1.0", "1.0", "0", intervals.close_time(interval, open_ms), "0", 0, "0", "0", "0")


# -- parameters ------------------------------------------------------------------------------------
@pytest.mark.parametrize("query,expected", [
    ({}, -1102),
    ({"interval": "1m"}, -1102),
    ({"symbol": "BTCUSDT"}, -1102),
    ({"symbol": "", "interval": "1m"}, -1102),
    ({"symbol": "NOPEUSDT", "interval": "1s"}, -1120),       # interval before symbol
    ({"symbol": "BTCUSDT", "interval": "1s"}, -1120),
    ({"symbol": "BTCUSDT", "interval": "1mo"}, -1120),
    ({"symbol": "NOPEUSDT", "interval": "1m"}, -1121),
    ({"symbol": "BTCUSDT", "interval": "1m", "limit": "abc"}, -1100),
    ({"symbol": "BTCUSDT", "interval": "1m", "startTime": "12.5"}, -1100),
    ({"symbol": "BTCUSDT", "interval": "1m", "endTime": "１２"}, -1100),    # not ASCII digits
    ({"symbol": "BTCUSDT", "interval": "1m", "startTime": "1" * 21}, -1100),
    ({"symbol": "BTCUSDT", "interval": "1s", "limit": "x"}, -1100),       # numbers before interval
    ({"symbol": "BTCUSDT", "interval": "1m", "limit": "0"}, -1130),
    ({"symbol": "BTCUSDT", "interval": "1m", "limit": "-5"}, -1130),
    ({"symbol": "BTCUSDT", "interval": "1m", "limit": "1501"}, -1130),
    ({"symbol": "BTCUSDT", "interval": "1s", "limit": "2000"}, -1130),    # limit before interval
    ({"symbol": "BTCUSDT", "interval": "1m", "startTime": "5", "endTime": "4"}, -1023),
    ({"symbol": "NOPEUSDT", "interval": "1m", "startTime": "5", "endTime": "4"}, -1121),
])
def test_bad_parameters_get_the_exchange_code_in_its_order(query, expected):
    assert code(query) == expected


def test_error_bodies_are_the_exchange_texts():
    with pytest.raises(r.ApiError) as info:
        r.parse_klines({"interval": "1m"}, KNOWN)
    assert json.loads(info.value.body()) == {
        "code": -1102, "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."}
    assert info.value.status == 400
    with pytest.raises(r.ApiError) as info:
        r.parse_klines({"symbol": "BTCUSDT", "interval": "1m", "limit": "2000"}, KNOWN)
    assert json.loads(info.value.body()) == {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."}
    assert json.loads(r.too_many("127.0.0.1", 2400).body())["code"] == -1003
    assert r.too_many("127.0.0.1", 2400).status == 429
    assert r.not_found("/x", "GET").status == 404


def test_good_parameters_and_their_window():
    q = r.parse_klines({"symbol": "BTCUSDT", "interval": "1M"}, KNOWN)
    assert q == r.KlineQuery("BTCUSDT", "1M", None, None, 500)
    assert r.window(q) == r.Window(r.MIN_MS, r.MAX_MS, 500, newest=True)
    q = r.parse_klines({"symbol": "BTCUSDT", "interval": "1m", "startTime": str(T0), "limit": "1500"}, KNOWN)
    assert r.window(q) == r.Window(T0, r.MAX_MS, 1500, newest=False)
    q = r.parse_klines({"symbol": "BTCUSDT", "interval": "1m", "endTime": str(T0), "limit": "1"}, KNOWN)
    assert r.window(q) == r.Window(r.MIN_MS, T0, 1, newest=True)
    # Out-of-range times are clamped to what SQLite and the calendar hold, not refused.
    q = r.parse_klines({"symbol": "BTCUSDT", "interval": "1m", "startTime": "-7", "endTime": "9" * 20}, KNOWN)
    assert r.window(q) == r.Window(r.MIN_MS, r.MAX_MS, 500, newest=False)


@pytest.mark.parametrize("limit,weight", [
    ("1", 1), ("99", 1), ("100", 2), ("499", 2), ("500", 5), ("1000", 5), ("1001", 10), ("1500", 10),
    (None, 5), ("abc", 5), ("2000", 10), ("0", 1),
])
def test_klines_weight_by_limit_as_the_exchange_counts(limit, weight):
    query = {} if limit is None else {"limit": limit}
    assert r.request_weight(r.KLINES_PATH, query) == weight


def test_other_paths_weigh_one():
    for path in ("/fapi/v1/ping", "/fapi/v1/time", "/fapi/v1/exchangeInfo", "/nope"):
        assert r.request_weight(path, {"limit": "1500"}) == 1


# -- the live candle -------------------------------------------------------------------------------
def test_live_candle_joins_only_where_the_exchange_puts_it():
    stored = [row(T0 + i * M) for i in range(5)]
    live = row(T0 + 5 * M)
    newest = r.Window(r.MIN_MS, r.MAX_MS, 3, newest=True)
    assert r.with_live(stored[-3:], live, newest) == [*stored[-2:], live]          # newest: one slot
    oldest = r.Window(T0, r.MAX_MS, 10, newest=False)
    assert r.with_live(stored, live, oldest) == [*stored, live]
    assert r.with_live(stored, live, r.Window(T0, r.MAX_MS, 5, newest=False)) == stored  # full page
    assert r.with_live(stored, live, r.Window(T0, T0 + 4 * M, 10, newest=False)) == stored  # endTime before it
    assert r.with_live(stored, None, oldest) == stored
    assert r.with_live([*stored, live], live, oldest) == [*stored, live]   # stored already: not twice
    assert r.with_live([], live, newest) == [live]


def test_live_candles_keep_the_newest_open_one_and_serve_it_only_while_current():
    live = r.LiveCandles()
    live.update("BTCUSDT", "1m", False, row(T0))
    live.update("BTCUSDT", "1m", False, row(T0 + M))
    live.update("BTCUSDT", "1m", False, row(T0))              # late and older: ignored
    assert live.current("BTCUSDT", "1m", T0 + M + 5)[0] == T0 + M
    assert live.current("BTCUSDT", "1m", T0 + 2 * M) is None  # the clock left it: closed now
    assert live.current("BTCUSDT", "1m", T0 + M - 1) is None  # not yet open by our clock
    assert live.current("ETHUSDT", "1m", T0 + M) is None
    live.update("BTCUSDT", "1m", True, row(T0 + M))           # its close: gone (the database has it)
    assert live.current("BTCUSDT", "1m", T0 + M + 5) is None


def test_live_candles_are_bounded():
    live = r.LiveCandles()
    live.MAX_KEYS = 3
    for i in range(5):
        live.update(f"S{i}USDT", "1m", False, row(T0))
    assert len(live.latest) == 3 and live.refused == 2
    live.update("S0USDT", "1m", False, row(T0 + M))  # a known key still moves on
    assert live.latest[("S0USDT", "1m")][0] == T0 + M


# -- completeness ----------------------------------------------------------------------------------
def complete(w, rows, first=None, newest=T0 + 99 * M, holes=(), interval="1m"):
    span = r.expected_span(interval, w, rows, first, newest, None)
    inside = [h for h in holes if span and h[0] <= span[1] and h[1] >= span[0]]
    return r.is_complete(interval, span, rows, newest is not None, inside)


def test_a_full_page_inside_history_is_complete_and_one_missing_candle_is_not():
    rows = [row(T0 + i * M) for i in range(10)]
    assert complete(r.Window(T0, r.MAX_MS, 10, False), rows)
    assert complete(r.Window(T0 - 30_000, T0 + 9 * M, 500, False), rows)       # start off the grid
    assert not complete(r.Window(T0, r.MAX_MS, 10, False), rows[:4] + rows[5:])
    assert not complete(r.Window(T0 - M, r.MAX_MS, 10, False), rows)           # one before is missing
    assert not complete(r.Window(T0, T0 + 10 * M, 500, False), rows)           # one after is missing


def test_confirmed_exchange_holes_are_not_missing():
    rows = [row(T0 + i * M) for i in range(10) if not 3 <= i <= 5]
    w = r.Window(T0, T0 + 9 * M, 500, False)
    assert not complete(w, rows)
    assert complete(w, rows, holes=[(T0 + 3 * M, T0 + 5 * M)])
    assert complete(w, rows, holes=[(T0 + 3 * M, T0 + 4 * M), (T0 + 4 * M, T0 + 5 * M)])  # overlapping
    assert not complete(w, rows, holes=[(T0 + 3 * M, T0 + 4 * M)])


def test_newest_candles_need_the_current_one_and_the_listing_when_short():
    rows = [row(T0 + i * M) for i in range(100)]
    now_open = T0 + 99 * M
    assert complete(r.Window(r.MIN_MS, r.MAX_MS, 50, True), rows[-50:], newest=now_open)
    assert not complete(r.Window(r.MIN_MS, r.MAX_MS, 50, True), rows[-51:-1], newest=now_open)  # no current
    # Fewer than asked: complete only if the history starts at the listing.
    assert complete(r.Window(r.MIN_MS, r.MAX_MS, 500, True), rows, first=T0, newest=now_open)
    assert not complete(r.Window(r.MIN_MS, r.MAX_MS, 500, True), rows, first=None, newest=now_open)
    assert not complete(r.Window(r.MIN_MS, r.MAX_MS, 500, True), rows, first=T0 - M, newest=now_open)


def test_nothing_expected_is_complete_and_unknown_is_not():
    before_listing = r.Window(T0 - 100 * M, T0 - M, 500, False)
    assert complete(before_listing, [], first=T0)
    future = r.Window(T0 + 200 * M, r.MAX_MS, 500, False)
    assert complete(future, [], newest=T0 + 99 * M)
    assert not complete(r.Window(T0, r.MAX_MS, 500, False), [], newest=None)  # newest unknown


def test_month_and_week_spans_count_their_own_grid():
    months = [intervals.step("1M", intervals.align("1M", T0), i) for i in range(-5, 1)]
    rows = [row(o, "1M") for o in months]
    w = r.Window(months[0], months[-1], 500, False)
    assert complete(w, rows, newest=months[-1], interval="1M")
    assert not complete(w, rows[:2] + rows[3:], newest=months[-1], interval="1M")
    phase = intervals.phase_of("1w", intervals.align("1w", T0))
    weeks = [intervals.step("1w", intervals.align("1w", T0, phase), i) for i in range(5)]
    span = r.expected_span("1w", r.Window(weeks[0] - 1, weeks[-1] + 1, 500, False), [], None, weeks[-1], phase)
    assert span == (weeks[0], weeks[-1])


# -- weight per client -----------------------------------------------------------------------------
def test_client_weight_is_counted_per_address_and_minute_and_refused_over_the_limit():
    w = r.ClientWeights(limit=12)
    now = T0 + 10_500
    assert w.charge("127.0.0.2", 5, now) == (True, 5, 50)
    assert w.charge("127.0.0.2", 5, now) == (True, 10, 50)
    assert w.charge("127.0.0.2", 5, now) == (False, 10, 50)   # refused: not counted
    assert w.charge("127.0.0.2", 2, now) == (True, 12, 50)
    assert w.charge("127.0.0.3", 5, now) == (True, 5, 50)     # another client has its own
    assert w.charge("127.0.0.2", 1, T0 + M) == (True, 1, 60)  # a new minute
    assert w.charge("127.0.0.2", 1, T0 + 2 * M - 1)[2] == 1
    unlimited = r.ClientWeights(limit=0)
    assert all(unlimited.charge("a", 10, now)[0] for _ in range(1000))
    assert unlimited.charge("a", 10, now)[1] == 10_010


def test_client_table_is_bounded():
    w = r.ClientWeights(limit=0)
    w.MAX_CLIENTS = 2
    for i in range(5):
        w.charge(f"10.0.0.{i}", 1, T0)
    assert set(w.used) == {"10.0.0.0", "10.0.0.1", w.OTHERS} and w.used[w.OTHERS] == 3


# -- exchangeInfo ----------------------------------------------------------------------------------
def test_exchange_info_serves_the_entry_as_last_seen_and_a_fallback_for_old_files(fixtures_dir):
    real = json.loads((fixtures_dir / "fapi_exchangeInfo.json").read_text())["symbols"][0]
    rows = [r.SymbolRow("BTCUSDT", "TRADING", 1567965300000, json.dumps(real)),
            r.SymbolRow("ETHUSDT", "SETTLING", 1569398400000, "")]
    body = json.loads(r.exchange_info_body(r.exchange_info_tail(rows, 2400), 1_790_000_000_123))
    assert list(body)[:3] == ["timezone", "serverTime", "futuresType"] and body["serverTime"] == 1_790_000_000_123
    assert body["rateLimits"][0]["limit"] == 2400
    assert body["symbols"][0] == real
    eth = body["symbols"][1]
    assert (eth["symbol"], eth["status"], eth["contractType"], eth["quoteAsset"], eth["marginAsset"], eth["baseAsset"]) \
        == ("ETHUSDT", "SETTLING", "PERPETUAL", "USDT", "USDT", "ETH")


def test_an_entry_kept_from_an_earlier_discovery_shows_the_latest_status():
    kept = '{"symbol":"BTCUSDT","status":"TRADING","pricePrecision":2}'
    assert msgspec.json.decode(r.symbol_entry(r.SymbolRow("BTCUSDT", "SETTLING", 1, kept))) == {
        "symbol": "BTCUSDT", "status": "SETTLING", "pricePrecision": 2}
    assert bytes(r.symbol_entry(r.SymbolRow("BTCUSDT", "TRADING", 1, kept))) == kept.encode()  # as kept
    fallback = msgspec.json.decode(r.symbol_entry(r.SymbolRow("BTCUSDT", "TRADING", 1, "not json")))
    assert fallback["symbol"] == "BTCUSDT" and fallback["contractType"] == "PERPETUAL"


def test_discovery_keeps_each_entry_as_sent_and_bounded(fixtures_dir):
    info = json.loads((fixtures_dir / "fapi_exchangeInfo.json").read_text())
    big = dict(info["symbols"][0], symbol="BIGUSDT", pair="BIGUSDT", orderTypes=["X" * 100] * 200)
    info["symbols"].append(big)
    found = discovery.parse_exchange_info(msgspec.json.encode(info), SymbolsConfig())
    by_symbol = {s.symbol: s for s in found.trading}
    assert json.loads(by_symbol["BTCUSDT"].info_json) == info["symbols"][0]
    assert len(json.dumps(big)) > discovery.MAX_ENTRY_BYTES and by_symbol["BIGUSDT"].info_json == ""
