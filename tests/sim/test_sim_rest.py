"""The simulator's REST API against the recorded real responses, parameter rules and weights."""

import json
import re
import time

import pytest
import requests

WEIGHT = "X-MBX-USED-WEIGHT-1M"


def get(sim, path, **params):
    r = requests.get(sim.rest_url + path, params=params, timeout=10)
    assert r.headers[WEIGHT].isdigit()
    return r


def load(fixtures_dir, name):
    return json.loads((fixtures_dir / name).read_text())


def shape(value):
    """JSON type and, for decimal strings, the digits pattern (e.g. 'str:5.2')."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        m = re.fullmatch(r"(\d+)\.(\d+)", value)
        return f"dec.{len(m.group(2))}" if m else ("int-str" if value.isdigit() else "str")
    return type(value).__name__


def test_ping_and_time(sim):
    r = get(sim, "/fapi/v1/ping")
    assert r.status_code == 200 and r.json() == {} and r.text == "{}"
    before = int(time.time() * 1000)
    r = get(sim, "/fapi/v1/time")
    body = r.json()
    assert list(body) == ["serverTime"] and isinstance(body["serverTime"], int)
    assert abs(body["serverTime"] - before) < 2000


def test_exchange_info_matches_recording(sim, fixtures_dir):
    real = load(fixtures_dir, "fapi_exchangeInfo.json")
    ours = get(sim, "/fapi/v1/exchangeInfo", symbol="BTCUSDT").json()
    assert list(ours) == list(real)
    assert ours["timezone"] == "UTC" and ours["futuresType"] == "U_MARGINED"
    assert ours["rateLimits"][1:] == real["rateLimits"][1:]
    assert ours["rateLimits"][0] == {**real["rateLimits"][0], "limit": 1_000_000}
    assert isinstance(ours["serverTime"], int) and ours["exchangeFilters"] == []
    assert len(ours["symbols"]) > 20  # the symbol parameter is ignored
    real_btc = real["symbols"][0]
    btc = next(s for s in ours["symbols"] if s["symbol"] == "BTCUSDT")
    assert list(btc) == list(real_btc)
    for key, value in real_btc.items():
        if key == "filters":
            assert [f["filterType"] for f in btc[key]] == [f["filterType"] for f in value]
            for ours_f, real_f in zip(btc[key], value):
                assert list(ours_f) == list(real_f)
                assert [shape(x) for x in ours_f.values()] == [shape(x) for x in real_f.values()]
        elif key == "underlyingSubType":
            assert isinstance(btc[key], list)
        else:
            assert shape(btc[key]) == shape(value), key
    for key in ("symbol", "pair", "contractType", "deliveryDate", "onboardDate", "status",
                "baseAsset", "quoteAsset", "marginAsset", "pricePrecision",
                "quantityPrecision"):
        assert btc[key] == real_btc[key], key
    for s in ours["symbols"]:
        assert list(s) == list(real_btc)


@pytest.mark.parametrize("path,params,fixture", [
    ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 3},
     "fapi_klines_BTCUSDT_1m.json"),
    ("/fapi/v1/continuousKlines", {"pair": "BTCUSDT", "contractType": "PERPETUAL",
                                   "interval": "1m", "limit": 1},
     "fapi_continuousKlines_BTCUSDT_PERPETUAL_1m.json"),
    ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "5m", "limit": 2,
                         "endTime": 1616339399999}, "fapi_klines_BTCUSDT_5m_2021.json"),
])
def test_klines_match_recording_field_by_field(sim, fixtures_dir, path, params, fixture):
    real = load(fixtures_dir, fixture)
    ours = get(sim, path, **params).json()
    assert len(ours) == len(real) == params["limit"]
    for o_row, r_row in zip(ours, real):
        assert len(o_row) == len(r_row) == 12
        assert [type(x) for x in o_row] == [type(x) for x in r_row]
        if "2021" in fixture:  # the Elixir docs example has 2 price decimals, 5 quote decimals
            assert o_row[0] == r_row[0] and o_row[6] == r_row[6]
        for i in (1, 2, 3, 4, 5, 7, 9, 10):
            if "2021" not in fixture or i in (5, 7, 9):
                assert shape(o_row[i]) == shape(r_row[i]), (i, o_row[i], r_row[i])
        assert o_row[11] == "0" and o_row[6] - o_row[0] == r_row[6] - r_row[0]


def test_error_bodies_match_recording(sim, fixtures_dir):
    for case in load(fixtures_dir, "fapi_errors.json"):
        path = case["request"].replace("/ticker/24hr?symbol=NOTAREALSYM",
                                       "/klines?symbol=NOTAREALSYM&interval=1m")
        r = requests.get(sim.rest_url + path, timeout=10)
        assert r.status_code == case["http"]
        assert r.text == json.dumps(case["body"], separators=(",", ":"))
        assert r.headers[WEIGHT].isdigit()


@pytest.mark.parametrize("params,code", [
    ({"symbol": "BTCUSDT", "interval": "1m", "limit": 0}, -1130),
    ({"symbol": "BTCUSDT", "interval": "1m", "limit": -5}, -1130),
    ({"symbol": "BTCUSDT", "interval": "1m", "limit": 1501}, -1130),
    ({"symbol": "BTCUSDT", "interval": "1m", "limit": "ab"}, -1100),
    ({"symbol": "BTCUSDT", "interval": "1m", "startTime": 2, "endTime": 1}, -1023),
    ({"interval": "1m"}, -1102),
    ({"symbol": "BTCUSDT"}, -1102),
    ({"symbol": "BTCUSDT", "interval": "1H"}, -1120),
])
def test_klines_parameter_errors(sim, params, code):
    r = get(sim, "/fapi/v1/klines", **params)
    body = r.json()
    assert r.status_code == 400 and list(body) == ["code", "msg"] and body["code"] == code
    assert isinstance(body["msg"], str) and body["msg"]


def test_continuous_errors_and_empty(sim):
    r = get(sim, "/fapi/v1/continuousKlines", pair="BTCUSDT", contractType="WEEKLY",
            interval="1m")
    assert r.status_code == 400 and r.json()["code"] == -1130
    r = get(sim, "/fapi/v1/continuousKlines", pair="NOPEUSDT", contractType="PERPETUAL",
            interval="1m")
    assert r.status_code == 400 and r.json() == {"code": -1121, "msg": "Invalid symbol."}
    r = get(sim, "/fapi/v1/continuousKlines", pair="BTCUSDT", interval="1m")
    assert r.json()["code"] == -1102
    r = get(sim, "/fapi/v1/continuousKlines", pair="BTCUSDT", contractType="NEXT_QUARTER",
            interval="1m")
    assert r.status_code == 200 and r.json() == []
    q = get(sim, "/fapi/v1/continuousKlines", pair="BTCUSDT", contractType="CURRENT_QUARTER",
            interval="1h", limit=2, endTime=1795478400000).json()
    k = get(sim, "/fapi/v1/klines", symbol="BTCUSDT_261225", interval="1h", limit=2,
            endTime=1795478400000).json()
    assert q == k and len(q) == 2


def test_limits_and_default(sim):
    for limit, n in ((1, 1), (1500, 1500), (None, 500)):
        params = {"symbol": "BTCUSDT", "interval": "1m", "endTime": 1790000000000}
        if limit:
            params["limit"] = limit
        rows = get(sim, "/fapi/v1/klines", **params).json()
        assert len(rows) == n
        assert all(b[0] - a[0] == 60_000 for a, b in zip(rows, rows[1:]))
        assert rows[-1][0] == 1790000000000 // 60_000 * 60_000


def test_range_rules(sim):
    h = 3_600_000
    base = 1790000000000 // h * h
    rows = get(sim, "/fapi/v1/klines", symbol="ETHUSDT", interval="1h",
               startTime=base + 1, limit=3).json()  # misaligned start
    assert [r[0] for r in rows] == [base + h, base + 2 * h, base + 3 * h]
    rows = get(sim, "/fapi/v1/klines", symbol="ETHUSDT", interval="1h",
               endTime=base + 1, limit=3).json()
    assert [r[0] for r in rows] == [base - 2 * h, base - h, base]
    rows = get(sim, "/fapi/v1/klines", symbol="ETHUSDT", interval="1h",
               startTime=base, endTime=base + 100 * h, limit=4).json()
    assert [r[0] for r in rows] == [base + i * h for i in range(4)]
    rows = get(sim, "/fapi/v1/klines", symbol="ETHUSDT", interval="1h",
               startTime=base, endTime=base + 2 * h - 1).json()
    assert [r[0] for r in rows] == [base, base + h]


def test_open_candle_is_last(sim):
    r = get(sim, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=5)
    server_ms = get(sim, "/fapi/v1/time").json()["serverTime"]
    rows = r.json()
    assert len(rows) == 5
    assert rows[-1][0] <= server_ms <= rows[-1][6] + 1000 and rows[-1][6] > server_ms - 1000
    assert rows[-2][6] < server_ms
    rows = get(sim, "/fapi/v1/klines", symbol="BTCUSDT", interval="1d",
               startTime=server_ms - 86_400_000).json()
    assert rows[-1][6] > server_ms  # open daily candle included when in range


def test_rest_equals_truth_and_local_market(sim):
    market = sim.market()
    end = 1795000000000
    rows = get(sim, "/fapi/v1/klines", symbol="1000PEPEUSDT", interval="15m",
               endTime=end, limit=100).json()
    truth = sim.truth("1000PEPEUSDT", "15m", rows[0][0], rows[-1][0])
    assert rows == truth
    assert rows == market.klines("1000PEPEUSDT", "15m", rows[0][0], rows[-1][0], end + 10**7)
    for row in rows[:3]:
        assert market.kline("1000PEPEUSDT", "15m", row[0]) == row


def test_listing_date_and_special_symbols(sim):
    info = get(sim, "/fapi/v1/exchangeInfo").json()
    by_name = {s["symbol"]: s for s in info["symbols"]}
    recent = next(s for s in info["symbols"] if s["status"] == "TRADING"
                  and info["serverTime"] - s["onboardDate"] < 40 * 86_400_000)
    rows = get(sim, "/fapi/v1/klines", symbol=recent["symbol"], interval="1h",
               limit=1000).json()
    assert 0 < len(rows) < 1000
    assert rows[0][0] == recent["onboardDate"] // 3_600_000 * 3_600_000
    assert get(sim, "/fapi/v1/klines", symbol=recent["symbol"], interval="1h",
               endTime=recent["onboardDate"] - 3_600_000).json() == []
    assert by_name["BTCSTUSDT"]["status"] == "PENDING_TRADING"
    assert get(sim, "/fapi/v1/klines", symbol="BTCSTUSDT", interval="1m").json() == []
    assert by_name["SRMUSDT"]["status"] == "SETTLING"
    old = get(sim, "/fapi/v1/klines", symbol="SRMUSDT", interval="1d", limit=10).json()
    assert len(old) == 10 and old[-1][6] < info["serverTime"]


def test_weight_header_and_accounting(sim):
    cases = [("/fapi/v1/ping", {}, 1), ("/fapi/v1/time", {}, 1),
             ("/fapi/v1/exchangeInfo", {}, 1),
             ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 99}, 1),
             ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 100}, 2),
             ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 499}, 2),
             ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m"}, 5),
             ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 1000}, 5),
             ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 1001}, 10),
             ("/fapi/v1/continuousKlines", {"pair": "BTCUSDT", "contractType": "PERPETUAL",
                                            "interval": "1m", "limit": 1500}, 10),
             ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1s"}, 5)]
    for path, params, weight in cases:
        for _attempt in range(3):
            before = int(get(sim, "/fapi/v1/ping").headers[WEIGHT])
            after = int(get(sim, path, **params).headers[WEIGHT])
            if after > before:  # else the minute window rolled over in between
                break
        assert after - before == weight, (path, params)


def test_stats_count_requests_not_admin(sim):
    sim.reset_stats()
    get(sim, "/fapi/v1/klines", symbol="ETHUSDT", interval="5m", limit=2)
    get(sim, "/fapi/v1/klines", symbol="ETHUSDT", interval="1x")
    sim.truth("ETHUSDT", "5m", 0, 1)
    stats = sim.stats()
    assert stats["requests_by_path"] == {"/fapi/v1/klines": 2}
    assert stats["requests_by_symbol_interval"] == {"ETHUSDT 5m": 1}
    assert stats["responses_by_status"]["200"] == 1 and stats["responses_by_status"]["4xx"] == 1
    ip_windows = stats["weight_by_ip_minute"]["127.0.0.1"]
    assert all(int(k) % 60_000 == 0 and v > 0 for k, v in ip_windows.items())


def _from(source_ip: str) -> requests.Session:
    """A session whose connections leave from `source_ip` (any 127.x reaches a 127.0.0.1 listener
    on Linux; the peer address is what the simulator counts)."""
    from requests.adapters import HTTPAdapter

    class Bound(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            kwargs["source_address"] = (source_ip, 0)
            super().init_poolmanager(*args, **kwargs)

    s = requests.Session()
    s.mount("http://", Bound())
    return s


def test_stats_by_ip_count_two_loopback_clients_apart(sim_factory):
    sim = sim_factory(symbols=2, weight_limit=20)
    two, three = _from("127.0.0.2"), _from("127.0.0.3")
    url = sim.rest_url + "/fapi/v1/klines"
    # 127.0.0.2: four pages of weight 5 fill its limit of 20; the fifth is refused. Unless the
    # minute rolls over in between (then its count restarts): try again in the next minute.
    for _attempt in range(2):
        sim.reset_stats()
        window = sim.info()["server_time_ms"] // 60_000
        statuses = [two.get(url, params={"symbol": "BTCUSDT", "interval": "1m", "limit": 500}, timeout=10).status_code
                    for _ in range(5)]
        header = three.get(url, params={"symbol": "BTCUSDT", "interval": "1m", "limit": 1}, timeout=10).headers[WEIGHT]
        if sim.info()["server_time_ms"] // 60_000 == window:
            break
    assert statuses == [200, 200, 200, 200, 429]
    assert header == "1"  # 127.0.0.3 has its own window: 127.0.0.2's 20 are not in it
    stats = sim.stats()
    assert stats["by_ip"]["127.0.0.2"] == {"requests": 5, "weight": 20, "429": 1, "418": 0}
    assert stats["by_ip"]["127.0.0.3"] == {"requests": 1, "weight": 1, "429": 0, "418": 0}
    # The existing fields are still there and agree.
    assert stats["responses_by_status"]["429"] == 1
    assert sum(stats["weight_by_ip_minute"]["127.0.0.2"].values()) == 20
