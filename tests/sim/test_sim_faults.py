"""Weight limits (429 → 418), fault switches and runtime universe changes, each on its own
simulator process."""

import json
import time

import pytest
import requests

WEIGHT = "X-MBX-USED-WEIGHT-1M"


def fresh_window(sim, need_s=12):
    """Wait until at least `need_s` seconds remain in the server's calendar minute."""
    now = requests.get(sim.rest_url + "/_sim/info", timeout=5).json()["server_time_ms"]
    left = 60 - (now % 60_000) / 1000
    if left < need_s:
        time.sleep(left + 0.05)


def test_429_then_418_with_retry_after_and_growing_ban(sim_factory):
    sim = sim_factory(weight_limit=6, ban_base_s=1)
    fresh_window(sim)
    url = sim.rest_url + "/fapi/v1/ping"
    used = [int(requests.get(url).headers[WEIGHT]) for _ in range(6)]
    assert used == [1, 2, 3, 4, 5, 6]
    first = requests.get(url)
    assert first.status_code == 429 and first.headers[WEIGHT] == "6"
    body = first.json()
    assert body["code"] == -1003 and body["msg"] == (
        "Too many requests; current limit of IP(127.0.0.1) is 6 requests per minute. "
        "Please use the websocket for live updates to avoid polling the API.")
    assert 1 <= int(first.headers["Retry-After"]) <= 60
    for _ in range(5):
        assert requests.get(url).status_code == 429
    ban = requests.get(url)
    assert ban.status_code == 418 and ban.headers["Retry-After"] == "1"
    msg = ban.json()["msg"]
    assert msg.startswith("Way too many requests; IP banned until ") and msg.endswith(
        ". Please use the websocket for live updates to avoid bans.")
    until = int(msg.split("until ")[1].split(".")[0])
    assert requests.get(url).status_code == 418
    time.sleep(max(0, until / 1000 - time.time()) + 0.1)
    statuses = [requests.get(url).status_code for _ in range(7)]
    assert statuses == [429] * 6 + [418]
    second = requests.get(url)
    assert second.status_code == 418 and second.headers["Retry-After"] == "2"
    stats = sim.stats()
    assert stats["responses_by_status"]["429"] == 12
    assert stats["responses_by_status"]["418"] == 4
    assert stats["bans"]["127.0.0.1"]["bans"] == 2


def test_latency_5xx_reset_malformed_timeout(sim_factory):
    sim = sim_factory()
    url = sim.rest_url + "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=2"
    sim.set_faults(latency_ms=300)
    t0 = time.monotonic()
    assert requests.get(url).status_code == 200
    assert time.monotonic() - t0 >= 0.3
    sim.set_faults(latency_ms=0, error_5xx_rate=1.0)
    r = requests.get(url)
    assert r.status_code == 503 and r.json()["code"] == -1001 and WEIGHT in r.headers
    sim.set_faults(error_5xx_rate=0.0, reset_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)
    sim.set_faults(reset_rate=0.0, malformed_rate=1.0)
    r = requests.get(url)
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)
    sim.set_faults(malformed_rate=0.0, timeout_rate=1.0, timeout_s=2.0)
    with pytest.raises(requests.Timeout):
        requests.get(url, timeout=0.5)
    sim.set_faults(timeout_rate=0.0)
    assert len(requests.get(url).json()) == 2
    assert sim.stats()["responses_by_status"]["5xx"] == 1
    # admin is never faulted
    sim.set_faults(error_5xx_rate=1.0)
    assert sim.info()["seed"] == 1


def test_partial_rate_is_seeded_mix(sim_factory):
    sim = sim_factory(seed=5)
    sim.set_faults(error_5xx_rate=0.5)
    codes = [requests.get(sim.rest_url + "/fapi/v1/ping").status_code for _ in range(40)]
    assert set(codes) == {200, 503} and 8 < codes.count(503) < 32


def test_final_delay_serves_provisional_then_final(sim_factory):
    sim = sim_factory()
    sim.set_faults(final_delay_ms=600_000)  # 10 minutes
    url = sim.rest_url + "/fapi/v1/klines"
    rows = requests.get(url, params={"symbol": "BTCUSDT", "interval": "1m", "limit": 4}).json()
    last_closed = rows[-2]
    truth = sim.truth("BTCUSDT", "1m", last_closed[0], last_closed[0])[0]
    assert last_closed[0] == truth[0] and last_closed[:5] == truth[:5]
    assert last_closed != truth and last_closed[8] == truth[8] - 1
    sim.set_faults(final_delay_ms=0)
    rows = requests.get(url, params={"symbol": "BTCUSDT", "interval": "1m",
                                     "startTime": truth[0], "limit": 1}).json()
    assert rows == [truth]


def test_clock_offset(sim_factory):
    sim = sim_factory(clock_offset_ms=-7_200_000)
    server = requests.get(sim.rest_url + "/fapi/v1/time").json()["serverTime"]
    assert abs(server - (time.time() * 1000 - 7_200_000)) < 2000
    last = requests.get(sim.rest_url + "/fapi/v1/klines",
                        params={"symbol": "ETHUSDT", "interval": "1h", "limit": 1}).json()[0]
    assert last[0] <= server <= last[6]
    sim.set_faults(clock_offset_ms=3_600_000)
    server = requests.get(sim.rest_url + "/fapi/v1/time").json()["serverTime"]
    assert abs(server - (time.time() * 1000 + 3_600_000)) < 2000


def test_holes_listing_delisting(sim_factory):
    sim = sim_factory()
    url = sim.rest_url + "/fapi/v1/klines"
    h = 3_600_000
    base = 1795000000000 // h * h
    sim.add_hole("BTCUSDT", base, base + 2 * h - 1)
    rows = requests.get(url, params={"symbol": "BTCUSDT", "interval": "1h",
                                     "startTime": base - h, "limit": 3}).json()
    assert [r[0] for r in rows] == [base - h, base + 2 * h, base + 3 * h]
    assert [r[0] for r in sim.truth("BTCUSDT", "1h", base - h, base + 2 * h)] == [
        base - h, base + 2 * h]
    sim.add_hole("*", base + 3 * h, base + 4 * h - 1)
    rows = requests.get(url, params={"symbol": "ETHUSDT", "interval": "1h",
                                     "startTime": base + 3 * h, "limit": 2}).json()
    assert [r[0] for r in rows] == [base + 4 * h, base + 5 * h]

    now = requests.get(sim.rest_url + "/fapi/v1/time").json()["serverTime"]
    entry = sim.list_symbol("FRESHUSDT", now - 125_000)
    assert entry["status"] == "TRADING" and entry["contractType"] == "PERPETUAL"
    info = requests.get(sim.rest_url + "/fapi/v1/exchangeInfo").json()
    fresh = [s for s in info["symbols"] if s["symbol"] == "FRESHUSDT"]
    assert fresh and fresh[0]["onboardDate"] == now - 125_000
    rows = requests.get(url, params={"symbol": "FRESHUSDT", "interval": "1m"}).json()
    assert 3 <= len(rows) <= 4 and rows[0][0] == (now - 125_000) // 60_000 * 60_000

    sim.delist("FRESHUSDT")
    info = requests.get(sim.rest_url + "/fapi/v1/exchangeInfo").json()
    assert [s["status"] for s in info["symbols"] if s["symbol"] == "FRESHUSDT"] == ["SETTLING"]
    again = requests.get(url, params={"symbol": "FRESHUSDT", "interval": "1m"}).json()
    assert [r[0] for r in again] == [r[0] for r in rows][: len(again)] and again
