from pathlib import Path

import pytest

from kl_actors import discovery
from kl_actors.clock import ServerClock, best_sample
from kl_actors.config import SymbolsConfig
from kl_actors.messages import ClockSync

CORE = Path(__file__).parent.parent / "fixtures" / "core"


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
      {"symbol":"BAD-USDT","status":"TRADING","contractType":"PERPETUAL","quoteAsset":"USDT","onboardDate":3}]}'''
    found = discovery.parse_exchange_info(body, SymbolsConfig(exclude=["ETHUSDT"]))
    assert [s.symbol for s in found.trading] == ["BTCUSDT"]
    assert [s.symbol for s in found.not_trading] == ["OLDUSDT"] and found.rejected == ["BAD-USDT"]
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
