"""The simulator's issue-12 behaviours: TradFi perpetuals with a closed session, odd names, a
halted symbol and its resumption, and the 3d phase; all off by default."""

import pytest

from kl_actors.sim import timeframes as tf
from kl_actors.sim.market import Market

ANCHOR = 1795478400000  # 2026-11-24 00:00 UTC
NOW = ANCHOR + 17 * 3_600_000 + 1_234


def test_extras_are_added_and_the_default_universe_is_unchanged():
    plain = Market(seed=7, n_symbols=10, anchor_ms=ANCHOR)
    extra = Market(seed=7, n_symbols=10, anchor_ms=ANCHOR, tradfi=3, odd=5, halted=2)
    assert {s: vars(v) for s, v in plain.specs.items()} == {
        s: vars(v) for s, v in extra.specs.items() if s in plain.specs}
    added = {s: v for s, v in extra.specs.items() if s not in plain.specs}
    assert [s for s, v in added.items() if v.contract_type == "TRADIFI_PERPETUAL"] == ["XAUUSDT", "TSLAUSDT", "XAGUSDT"]
    assert {"币安人生USDT", "BtcUSDT", "BTC-USDT", "我踏马来了USDT", "Pepe.USDT"} <= set(added)
    halted = [v for v in added.values() if v.status == "TRADING_HALT"]
    assert len(halted) == 2 and all(v.contract_type == "PERPETUAL" for v in halted)
    info = extra.specs["XAUUSDT"].exchange_info()
    assert info["underlyingType"] == "COMMODITY" and info["contractType"] == "TRADIFI_PERPETUAL"


def test_closed_session_has_no_candles_inside_it_and_longer_candles_exist():
    m = Market(seed=7, n_symbols=4, anchor_ms=ANCHOR, tradfi=2)
    day = ANCHOR - tf.DAY
    inside = [m.kline("XAUUSDT", "1m", day + 21 * 3_600_000 + i * 60_000) for i in (0, 30, 59)]
    assert inside == [None, None, None]
    assert m.kline("XAUUSDT", "1h", day + 21 * 3_600_000) is None
    assert m.kline("XAUUSDT", "1m", day + 22 * 3_600_000) is not None
    assert m.kline("XAUUSDT", "1m", day + 21 * 3_600_000 - 60_000) is not None
    assert m.kline("XAUUSDT", "2h", day + 20 * 3_600_000) is not None  # spans open hours too
    assert m.kline("XAUUSDT", "1d", day) is not None
    assert m.kline("TSLAUSDT", "1m", day + 21 * 3_600_000) is not None  # the other one never closes
    opens = m.select_opens("XAUUSDT", "1m", day + 20 * 3_600_000, None, 200, NOW)
    assert len(opens) == 200 and opens[60] == day + 22 * 3_600_000


def test_halted_symbol_has_no_candles_until_resumed_and_none_for_the_halt():
    m = Market(seed=7, n_symbols=4, anchor_ms=ANCHOR, halted=1)
    symbol = next(s for s, v in m.specs.items() if v.status == "TRADING_HALT")
    halt = m.specs[symbol].delist_ms
    assert m.kline(symbol, "1h", halt - 3_600_000) is not None
    assert m.select_opens(symbol, "1h", halt + 3_600_000, NOW, 100, NOW) == []
    m.resume(symbol, NOW - 3_600_000)
    assert m.specs[symbol].status == "TRADING"
    assert m.select_opens(symbol, "1h", halt + 3_600_000, NOW - 4 * 3_600_000, 100, NOW) == []
    assert m.select_opens(symbol, "1h", NOW - 3 * 3_600_000, NOW, 100, NOW) != []


@pytest.mark.parametrize("days", [0, 1, 2])
def test_3d_phase(days):
    try:
        tf.set_phase_3d(days)
        o = tf.floor_open("3d", NOW)
        assert (o // tf.DAY) % 3 == days and o <= NOW < tf.next_open("3d", o)
        assert tf.floor_open("1w", NOW) % tf.WEEK == 4 * tf.DAY  # nothing else moves
    finally:
        tf.set_phase_3d(0)


@pytest.mark.parametrize("days", [0, 2, 5, 6])
def test_1w_phase(days):
    try:
        tf.set_phase_1w(days)
        o = tf.floor_open("1w", NOW)
        assert (o // tf.DAY) % 7 == days and o <= NOW < tf.next_open("1w", o)
        assert tf.floor_open("3d", NOW) % (3 * tf.DAY) == 0  # nothing else moves
    finally:
        tf.set_phase_1w(4)


def test_months_shifted_off_the_calendar():
    nov_4 = 1_793_750_400_000  # 2026-11-04 00:00 UTC
    try:
        tf.set_month_shift(3)
        assert tf.floor_open("1M", nov_4) == nov_4 == tf.floor_open("1M", nov_4 + 29 * tf.DAY)
        assert tf.next_open("1M", nov_4) == nov_4 + 30 * tf.DAY  # 2026-12-04
        assert tf.floor_open("1M", nov_4 - 1) == nov_4 - 31 * tf.DAY  # 2026-10-04
    finally:
        tf.set_month_shift(0)
    assert tf.floor_open("1M", nov_4) == nov_4 - 3 * tf.DAY
