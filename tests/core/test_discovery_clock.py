from pathlib import Path

import pytest

from kl_actors.core import discovery
from kl_actors.core.clock import ServerClock, best_sample
from kl_actors.config import SymbolsConfig
from kl_actors.messages import ClockSync

CORE = Path(__file__).parent.parent / "fixtures"


def test_real_2021_exchange_info_filter():
    found = discovery.parse_exchange_info((CORE / "fapi_exchangeInfo_2021-07-21.json").read_bytes(), SymbolsConfig())
    names = [s.symbol for s in found.trading]
    assert len(names) == 117 and "BTCUSDT" in names and "1000SHIBUSDT" in names
    assert not any("_" in n or not n.endswith("USDT") for n in names)
    assert "BTCSTUSDT" not in names  # contractType "" while PENDING_TRADING
    assert found.weight_limit_per_minute == 2400


def test_include_exclude_and_rejects():
    body = b'''{"rateLimits":[],"symbols":[
      {"symbol":"BTCUSDT","status":"TRADING","contractType":"PERPETUAL","quoteAsset":"USDT","onboardDate":1},
      {"symbol":"ETHUSDT","status":"TRADING","contractType":"PERPETUAL","quoteAsset":"USDT","onboardDate":2},
      {"symbol":"OLDUSDT","status":"SETTLING","contractType":"PERPETUAL","quoteAsset":"USDT","onboardDate":3},
      {"symbol":"BAD/USDT","status":"TRADING","contractType":"PERPETUAL","quoteAsset":"USDT","onboardDate":3}]}'''
    found = discovery.parse_exchange_info(body, SymbolsConfig(exclude=["ETHUSDT"]))
    assert [s.symbol for s in found.trading] == ["BTCUSDT"]
    assert [s.symbol for s in found.not_trading] == ["OLDUSDT"] and found.rejected == ["BAD/USDT"]
    only = discovery.parse_exchange_info(body, SymbolsConfig(include=["ETHUSDT"]))
    assert [s.symbol for s in only.trading] == ["ETHUSDT"]
    with pytest.raises(discovery.DiscoveryError):
        discovery.parse_exchange_info(b'{"symbols": 5}', SymbolsConfig())


def test_best_clock_sample_is_lowest_round_trip():
    sync = best_sample([(1000, 6100, 1200), (2000, 7010, 2020), (3000, 8300, 3500)])
    assert sync.rtt_ms == 20 and sync.offset_ms == 5000
    clock = ServerClock()
    assert not clock.synced and clock.now_ms(100) == 100
    clock.update(sync)
    assert clock.synced and clock.now_ms(100) == 5100 and clock.to_local_ms(5100) == 100
    clock.update(ClockSync(offset_ms=1.0, rtt_ms=1.0, measured_at_ms=1))  # older: ignored
    assert clock.offset_ms == 5000


UNIVERSE = """{"rateLimits":[],"symbols":[
  {"symbol":"BTCUSDT","status":"TRADING","contractType":"PERPETUAL","quoteAsset":"USDT","onboardDate":1},
  {"symbol":"XAUUSDT","status":"TRADING","contractType":"TRADIFI_PERPETUAL","quoteAsset":"USDT","onboardDate":2},
  {"symbol":"币安人生USDT","status":"TRADING","contractType":"PERPETUAL","quoteAsset":"USDT","onboardDate":3},
  {"symbol":"BtcUSDT","status":"TRADING","contractType":"PERPETUAL","quoteAsset":"USDT","onboardDate":3},
  {"symbol":"HALTUSDT","status":"TRADING_HALT","contractType":"PERPETUAL","quoteAsset":"USDT","onboardDate":4},
  {"symbol":"COUSDT","status":"TRADING_CANCEL_ONLY","contractType":"TRADIFI_PERPETUAL","quoteAsset":"USDT","onboardDate":4},
  {"symbol":"SETUSDT","status":"SETTLING","contractType":"PERPETUAL","quoteAsset":"USDT","onboardDate":5},
  {"symbol":"CLOUSDT","status":"CLOSE","contractType":"PERPETUAL","quoteAsset":"USDT","onboardDate":5},
  {"symbol":"NEWUSDT","status":"PENDING_TRADING","contractType":"PERPETUAL","quoteAsset":"USDT","onboardDate":9},
  {"symbol":"BTCUSDT_261225","status":"TRADING","contractType":"CURRENT_QUARTER","quoteAsset":"USDT","onboardDate":1},
  {"symbol":"BTCUSDC","status":"TRADING","contractType":"PERPETUAL","quoteAsset":"USDC","onboardDate":1}]}""".encode()


def test_default_universe_has_tradfi_odd_names_and_halted_kept_apart():
    found = discovery.parse_exchange_info(UNIVERSE, SymbolsConfig())
    assert [s.symbol for s in found.trading] == sorted(["BTCUSDT", "XAUUSDT", "币安人生USDT", "BtcUSDT"])
    assert [(s.symbol, s.status) for s in found.halted] == [("COUSDT", "TRADING_CANCEL_ONLY"),
                                                             ("HALTUSDT", "TRADING_HALT")]
    assert sorted(s.symbol for s in found.not_trading) == ["CLOUSDT", "NEWUSDT", "SETUSDT"]
    assert found.rejected == []


def test_crypto_only_when_configured():
    found = discovery.parse_exchange_info(UNIVERSE, SymbolsConfig(contract_types=["PERPETUAL"]))
    assert "XAUUSDT" not in {s.symbol for s in found.trading}
    assert "COUSDT" not in {s.symbol for s in found.halted}
    assert "BTCUSDT" in {s.symbol for s in found.trading}


@pytest.mark.parametrize("status,halted", [("TRADING_HALT", True), ("TRADING_CANCEL_ONLY", True),
                                           ("TRADING", False), ("SETTLING", False), ("CLOSE", False),
                                           ("PENDING_TRADING", False), ("DELIVERING", False)])
def test_halted_is_not_delisted(status, halted):
    assert discovery.is_halted(status) is halted


def _found(trading=(), halted=()):
    info = lambda s, st: discovery.SymbolInfo(symbol=s, status=st, onboard_ms=1)  # noqa: E731
    return discovery.Discovered([info(s, "TRADING") for s in trading], [], [], 0,
                                halted=[info(s, "TRADING_HALT") for s in halted])


def test_a_halt_is_neither_a_delisting_nor_a_listing():
    moved = discovery.changes(["BTCUSDT", "XAUUSDT"], [], _found(["BTCUSDT"], ["XAUUSDT"]), first=False)
    assert moved == discovery.Changes(listed=[], resumed=[], halted=["XAUUSDT"], delisted=[])
    # Trading again: resumed (its tail is fetched), not listed as new.
    moved = discovery.changes(["BTCUSDT"], ["XAUUSDT"], _found(["BTCUSDT", "XAUUSDT"]), first=False)
    assert moved == discovery.Changes(listed=[], resumed=["XAUUSDT"], halted=[], delisted=[])
    # Still halted: nothing happens.
    moved = discovery.changes(["BTCUSDT"], ["XAUUSDT"], _found(["BTCUSDT"], ["XAUUSDT"]), first=False)
    assert moved == discovery.Changes([], [], [], [])
    # Gone from both lists (SETTLING, CLOSE): delisted, whether it was trading or halted.
    moved = discovery.changes(["BTCUSDT", "ETHUSDT"], ["XAUUSDT"], _found(["BTCUSDT"]), first=False)
    assert moved == discovery.Changes(listed=[], resumed=[], halted=[], delisted=["ETHUSDT", "XAUUSDT"])


def test_first_list_lists_everything_and_delists_nothing():
    moved = discovery.changes([], [], _found(["BTCUSDT"], ["XAUUSDT"]), first=True)
    assert moved == discovery.Changes(listed=["BTCUSDT"], resumed=[], halted=[], delisted=[])
