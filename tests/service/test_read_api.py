"""The read API end to end: the whole service against the simulator, read by the clients users
point at it (ccxt `binanceusdm`, binance-futures-connector) with only their base URL changed.

One service for the module (`served`): 3 symbols x 1m, 1h backfilled with recorded exchange holes
(maintenance windows set in the simulator before the start), polled through the API while the
writer commits the backfill. Every answer is compared with the simulator: its truth for closed
candles, its own `/fapi/v1/klines` answer for the same query (holes, parameter combinations, bad
parameters).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path

import ccxt
import pytest
import requests
from binance import um_futures

from harness import RunningService, backfill_config, free_port, server_ms, wait_for
from kl_actors import exchange
from kl_actors.config import EgressConfig, ExchangeConfig
from kl_actors.core import intervals
from kl_actors.sim.process import SimProcess
from kl_actors.store import Store

# One worker runs this module: its module-scoped fixture (a whole service backfilled from the
# simulator, ~20 s alone) is built once, not once per xdist worker (scripts/test.sh uses
# --dist loadgroup).
pytestmark = [pytest.mark.xdist_group("read_api"), pytest.mark.slow(40)]

SYMBOLS = ("BTCUSDT", "ETHUSDT", "1000PEPEUSDT")
DEPTH = {"1m": 30000, "1h": 3200}
WEIGHT_LIMIT = 1000  # per client and minute: the clients below stay under it, the 429 test goes over
M, H = intervals.MINUTE_MS, intervals.HOUR_MS
DEAD_URL = "http://127.0.0.1:9"  # nothing listens there: a client reaching for another URL fails


class Served:
    def __init__(self, sim, service, base, holes, polls, workdir):
        self.sim, self.service, self.base, self.holes, self.polls, self.workdir = \
            sim, service, base, holes, polls, workdir

    def get(self, path, session=None, **params):
        return (session or requests).get(self.base + path, params=params, timeout=10)

    def sim_get(self, path, **params):
        return requests.get(self.sim.rest_url + path, params=params, timeout=10)


def _poll_during_backfill(base: str, first_open: int, stop: threading.Event, polls: list) -> None:
    """Read every 1m page of BTCUSDT's depth round after round while the writer commits it: each
    round's (status codes, rows seen). Each round from its own loopback address (127.0.2.x): the
    rounds together weigh more than one client may spend in a minute."""
    rounds = 0
    while not stop.wait(0.05):
        rounds += 1
        session = exchange.session(ExchangeConfig(), EgressConfig(name="poll", source_address=f"127.0.2.{rounds % 250 + 1}"))
        statuses, seen = [], 0
        for page in range(0, DEPTH["1m"], 1500):
            try:
                answer = session.get(base + "/fapi/v1/klines", timeout=10, params={
                    "symbol": "BTCUSDT", "interval": "1m", "startTime": first_open + page * M, "limit": 1500,
                    "endTime": first_open + (page + 1499) * M})
            except requests.ConnectionError:
                statuses.append(0)  # not listening yet
                continue
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                rows = answer.json()
                opens = [r[0] for r in rows]
                assert opens == sorted(set(opens)), "rows out of order or repeated"
                seen += len(rows)
            else:
                statuses[-1] = (answer.status_code, answer.json()["code"])
        session.close()
        polls.append((statuses, seen))


@pytest.fixture(scope="module")
def served():
    workdir = Path(tempfile.mkdtemp(prefix="kl-api-", dir="/tmp"))
    sim = SimProcess(symbols=3, seed=3, weight_limit=1_000_000, ws_push_ms=200).start()
    service = None
    stop = threading.Event()
    try:
        now = server_ms(sim)
        last_hour = intervals.last_closed_open("1h", now)
        last_minute = intervals.last_closed_open("1m", now)
        # Maintenance windows the exchange (the simulator) has no candles for: 3 hours of
        # BTCUSDT (its 1m candles too), 25 minutes of ETHUSDT.
        holes = {"BTCUSDT": (intervals.step("1h", last_hour, -1000), intervals.step("1h", last_hour, -997) - 1),
                 "ETHUSDT": (intervals.step("1m", last_minute, -3000), intervals.step("1m", last_minute, -2975) - 1)}
        for symbol, (start, end) in holes.items():
            sim.add_hole(symbol, start, end)
        port = free_port()
        config = backfill_config(workdir, sim, DEPTH, api={"listen": f"127.0.0.1:{port}",
                                                           "client_weight_limit": WEIGHT_LIMIT})
        base = f"http://127.0.0.1:{port}"
        polls: list = []
        first_1m = intervals.step("1m", last_minute, -(DEPTH["1m"] - 1))
        poller = threading.Thread(target=_poll_during_backfill, args=(base, first_1m, stop, polls), daemon=True)
        service = RunningService(config, workdir)
        poller.start()

        def backfilled():
            assert service.proc.poll() is None, service.log_text()[-3000:]
            try:
                store = Store.open_readonly(path=config.database.path)
            except Exception:
                return False
            try:
                return all(store.count(s, i) >= depth - 3 * 60 - 5 for s in SYMBOLS for i, depth in DEPTH.items())
            finally:
                store.close()

        wait_for(backfilled, 120, interval=0.5, what="backfill of 3 symbols x 1m, 1h")
        wait_for(lambda: len(polls) >= 2, 20, what="a round of polls after the backfill")
        stop.set()
        poller.join(timeout=20)
        yield Served(sim, service, base, holes, polls, workdir)
    finally:
        stop.set()
        if service is not None:
            service.stop()
            service.cleanup()
        sim.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def closed_truth(served, symbol, interval, start_ms, end_ms):
    return served.sim.truth(symbol, interval, start_ms, end_ms)


def test_the_api_keeps_answering_while_the_writer_commits_the_backfill(served):
    rounds = served.polls
    assert len(rounds) >= 3, rounds
    for statuses, _ in rounds:
        # Before the symbol is recorded it is unknown (-1121); never a 503, never an error of ours.
        assert all(s in (0, 200, (400, -1121)) for s in statuses), statuses
    seen = [s for _, s in rounds]
    assert seen[-1] >= DEPTH["1m"] - 3 * 60 - 5
    assert any(0 < s < seen[-1] for s in seen), f"no round saw the table part-way filled: {seen}"
    assert seen == sorted(seen), f"rows vanished between rounds: {seen}"


def test_ccxt_reads_every_candle_of_three_symbols_over_several_pages(served):
    exchange_ = ccxt.binanceusdm({"enableRateLimit": False, "timeout": 10_000})
    for key, url in list(exchange_.urls["api"].items()):
        # Only the base changes; any other API of the exchange is pointed at nothing.
        exchange_.urls["api"][key] = re.sub(r"^https://fapi\.binance\.com", served.base, url) \
            if "fapi.binance.com" in url else DEAD_URL
    markets = exchange_.load_markets()
    for symbol in SYMBOLS:
        market = markets[f"{symbol[:-4]}/USDT:USDT"]
        assert market["swap"] and market["linear"] and market["settle"] == "USDT" and market["id"] == symbol
    now = server_ms(served.sim)
    for symbol in SYMBOLS:
        for interval, pages in (("1m", 3), ("1h", 2)):
            last = intervals.last_closed_open(interval, now)
            since = intervals.step(interval, last, -(pages * 1500 - 200))
            got = []
            cursor = since
            while cursor <= last:
                page = exchange_.fetch_ohlcv(f"{symbol[:-4]}/USDT:USDT", interval, since=cursor, limit=1500)
                assert page, (symbol, interval, cursor)
                got += page
                cursor = page[-1][0] + 1
            got = [c for c in got if c[0] <= last]
            truth = closed_truth(served, symbol, interval, since, last)
            assert len(got) == len(truth) >= pages * 1500 - 200 - 30, (symbol, interval, len(got), len(truth))
            for mine, true in zip(got, truth):
                # ccxt turns the exchange's strings into numbers: equal as numbers, candle by candle.
                assert mine == [true[0], *map(float, true[1:6])], (symbol, interval, mine, true)


def test_binance_futures_connector_reads_the_exact_rows(served):
    client = um_futures.UMFutures(base_url=served.base, timeout=10)
    assert client.ping() == {}
    now = server_ms(served.sim)
    for symbol in SYMBOLS:
        for interval, pages in (("1m", 3), ("1h", 2)):
            last = intervals.last_closed_open(interval, now)
            start = intervals.step(interval, last, -(pages * 1500 - 100))
            rows = []
            cursor = start
            while cursor <= last:
                page = client.klines(symbol, interval, startTime=cursor, endTime=last, limit=1500)
                assert page
                rows += page
                cursor = page[-1][0] + 1
            # The exchange's 12-element rows with its decimal strings, exactly.
            assert rows == closed_truth(served, symbol, interval, start, last), (symbol, interval)


def api_and_sim(served, **params):
    mine, theirs = served.get("/fapi/v1/klines", **params), served.sim_get("/fapi/v1/klines", **params)
    return mine, theirs


def test_ranges_with_exchange_holes_come_back_as_the_exchange_serves_them(served):
    cases = []
    for symbol, (start, end) in served.holes.items():
        interval = "1h" if symbol == "BTCUSDT" else "1m"
        step = intervals.nominal_ms(interval)
        cases += [
            {"symbol": symbol, "interval": interval, "startTime": start - 10 * step, "endTime": end + 10 * step},
            {"symbol": symbol, "interval": interval, "startTime": start - 5 * step, "limit": 12},
            {"symbol": symbol, "interval": interval, "endTime": end + 4 * step, "limit": 9},
            {"symbol": symbol, "interval": interval, "startTime": start + step, "endTime": end - step},  # inside
            {"symbol": symbol, "interval": interval, "startTime": start - 30 * step + 17, "endTime": end + 61 * step - 5,
             "limit": 40},
        ]
    for params in cases:
        mine, theirs = api_and_sim(served, **params)
        assert mine.status_code == theirs.status_code == 200
        assert mine.json() == theirs.json(), params
        assert mine.headers["X-KL-Complete"] == "true", params  # the hole is confirmed, not missing


def test_parameter_combinations_select_what_the_exchange_selects(served):
    now = server_ms(served.sim)
    for interval in ("1m", "1h"):
        step = intervals.nominal_ms(interval)
        last = intervals.last_closed_open(interval, now)
        cases = [
            {"startTime": last - 2000 * step},
            {"startTime": last - 300 * step + 1, "limit": 100},
            {"endTime": last - 50 * step, "limit": 1500},
            {"endTime": last - 50 * step - 1},
            {"startTime": last - 99 * step, "endTime": last - 10 * step, "limit": 1500},
            {"startTime": last - 99 * step, "endTime": last - 10 * step, "limit": 7},
            {"startTime": last - 10 * step, "endTime": last - 10 * step},
            {"startTime": last - 10 * step + 1, "endTime": last - 10 * step + 2},   # no open time inside
        ]
        for extra in cases:
            params = {"symbol": "ETHUSDT", "interval": interval, **extra}
            mine, theirs = api_and_sim(served, **params)
            assert mine.status_code == theirs.status_code == 200
            assert mine.json() == theirs.json(), params
            assert mine.headers["X-KL-Complete"] == "true", params
    # Before the stored depth: what is held, and the header says it is not all.
    old = intervals.step("1m", intervals.last_closed_open("1m", now), -(DEPTH["1m"] + 500))
    mine, theirs = api_and_sim(served, symbol="ETHUSDT", interval="1m", startTime=old, limit=1000)
    assert mine.headers["X-KL-Complete"] == "false"
    held = mine.json()
    assert theirs.json()[0][0] == old < held[0][0]  # the exchange has older candles than we hold
    assert held == closed_truth(served, "ETHUSDT", "1m", held[0][0], held[-1][0]) and len(held) == 1000


def test_the_newest_candle_is_the_open_one_from_the_live_feed(served):
    def newest():
        rows = served.get("/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=3).json()
        now = server_ms(served.sim)
        return rows if rows[-1][0] == intervals.align("1m", now) else None

    rows = wait_for(newest, 30, interval=0.2, what="the open candle served")
    assert len(rows) == 3
    open_candle = rows[-1]
    assert open_candle[6] == intervals.close_time("1m", open_candle[0])
    theirs = served.sim_get("/fapi/v1/klines", symbol="BTCUSDT", interval="1m", startTime=open_candle[0], limit=1).json()
    if theirs and theirs[0][0] == open_candle[0]:  # still the same minute: the same open price
        assert theirs[0][1] == open_candle[1]
    assert rows[:2] == closed_truth(served, "BTCUSDT", "1m", rows[0][0], rows[1][0])


BAD = [
    ("/fapi/v1/klines", {"interval": "1m"}),
    ("/fapi/v1/klines", {"symbol": "BTCUSDT"}),
    ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1s"}),
    ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": "2000"}),
    ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": "0"}),
    ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": "abc"}),
    ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "startTime": "yesterday"}),
    ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "startTime": "20", "endTime": "10"}),
    ("/fapi/v1/klines", {"symbol": "NOPEUSDT", "interval": "1m"}),
    ("/fapi/v1/klines", {"symbol": "BTC/USDT", "interval": "1m"}),
    ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": "1500", "startTime": "1", "endTime": "0"}),
    ("/fapi/v1/nothing", {}),
]


@pytest.mark.parametrize("path,params", BAD, ids=[f"{p}?{q}" for p, q in BAD])
def test_bad_parameters_get_the_exchange_codes(served, path, params):
    mine, theirs = served.get(path, **params), served.sim_get(path, **params)
    assert (mine.status_code, mine.json()) == (theirs.status_code, theirs.json())
    assert mine.headers["X-MBX-USED-WEIGHT-1M"].isdigit()


def test_exchange_info_time_and_ping_answer_like_the_exchange(served):
    mine, theirs = served.get("/fapi/v1/exchangeInfo").json(), served.sim_get("/fapi/v1/exchangeInfo").json()
    assert list(mine)[:3] == ["timezone", "serverTime", "futuresType"]
    by_symbol = {s["symbol"]: s for s in theirs["symbols"]}
    # Every USDT perpetual the service recorded (delisted ones too, with their status), none other.
    wanted = {s["symbol"] for s in theirs["symbols"]
              if s["contractType"] in ("PERPETUAL", "TRADIFI_PERPETUAL") and s["quoteAsset"] == "USDT"}
    assert {s["symbol"] for s in mine["symbols"]} == wanted and set(SYMBOLS) <= wanted
    for entry in mine["symbols"]:
        assert entry == by_symbol[entry["symbol"]]  # the exchange's own entry, as last seen
    assert served.get("/fapi/v1/ping").json() == {}
    server_time = served.get("/fapi/v1/time").json()["serverTime"]
    assert abs(server_time - server_ms(served.sim)) < 2000


def test_one_client_over_its_weight_limit_gets_429_and_others_are_served(served):
    runaway = exchange.session(ExchangeConfig(), EgressConfig(name="runaway", source_address="127.0.0.5"))
    other = exchange.session(ExchangeConfig(), EgressConfig(name="other", source_address="127.0.0.6"))
    params = {"symbol": "BTCUSDT", "interval": "1h", "limit": "1500"}  # weight 10
    refused = None
    for _ in range(2 * WEIGHT_LIMIT // 10 + 5):  # a minute edge may reset the count once
        answer = served.get("/fapi/v1/klines", session=runaway, **params)
        if answer.status_code == 429:
            refused = answer
            break
        assert answer.status_code == 200
    assert refused is not None
    assert refused.json()["code"] == -1003 and "127.0.0.5" in refused.json()["msg"]
    assert int(refused.headers["X-MBX-USED-WEIGHT-1M"]) > WEIGHT_LIMIT - 10
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    answer = served.get("/fapi/v1/klines", session=other, **params)
    assert answer.status_code == 200 and answer.headers["X-MBX-USED-WEIGHT-1M"] == "10"


def test_a_killed_api_actor_is_restarted_and_answers_again(served):
    service = served.service
    old = service.wait_running(["api"])["api"]["pid"]
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: (service.pid("api") or old) != old, 20, what="a new api process")
    wait_for(lambda: "event=actor_exited name=api why=\"killed by SIGKILL\"" in service.log_text()
             or "name=api why=" in service.log_text(), 10, what="the exit logged")

    def answers():
        try:
            return served.get("/fapi/v1/klines", symbol="ETHUSDT", interval="1h", limit=5).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(answers, 20, what="the restarted api answering")
    now = server_ms(served.sim)
    last = intervals.last_closed_open("1h", now)
    rows = served.get("/fapi/v1/klines", symbol="ETHUSDT", interval="1h", startTime=last - 20 * H,
                      endTime=last).json()
    assert rows == closed_truth(served, "ETHUSDT", "1h", last - 20 * H, last)


def test_the_readme_freqtrade_settings_reach_only_the_api(served):
    """freqtrade passes `ccxt_config` to ccxt's `binance`: with the README's settings its markets
    and candles come from the API, and nothing else is asked (every other URL points at nothing)."""
    settings = {"urls": {"api": {"fapiPublic": served.base + "/fapi/v1"}},
                "options": {"fetchMarkets": {"types": ["linear"]}, "defaultType": "swap"}}
    client = ccxt.binance(settings)
    for key in client.urls["api"]:
        if key != "fapiPublic":
            client.urls["api"][key] = DEAD_URL
    markets = client.load_markets()
    assert {m["id"] for m in markets.values()} >= set(SYMBOLS)
    last = intervals.last_closed_open("1h", server_ms(served.sim))
    candles = client.fetch_ohlcv("ETH/USDT:USDT", "1h", since=last - 99 * H, limit=100)
    truth = closed_truth(served, "ETHUSDT", "1h", last - 99 * H, last)
    assert [c[0] for c in candles] == [t[0] for t in truth] and candles[-1][4] == float(truth[-1][4])
