"""The simulator's pure market: universe, determinism, listing dates, holes, OHLC and formats."""

import re

import pytest

from kl_actors.sim import timeframes as tf
from kl_actors.sim.market import Market
from kl_actors.sim.pages import PageRenderer

ANCHOR = 1795478400000  # 2026-11-24 00:00 UTC
NOW = ANCHOR + 17 * 3_600_000 + 1_234


@pytest.fixture(scope="module")
def market():
    return Market(seed=7, n_symbols=30, anchor_ms=ANCHOR)


def test_universe_composition(market):
    specs = {s.symbol: s for s in market.symbols()}
    usdt_perp = [s for s in specs.values() if s.contract_type == "PERPETUAL"
                 and s.quote_asset == "USDT" and s.status == "TRADING"]
    assert len(usdt_perp) == 30
    for name in ("BTCUSDT", "ETHUSDT", "1000PEPEUSDT", "1000SHIBUSDT"):
        assert specs[name].status == "TRADING"
    for s in usdt_perp:
        assert re.fullmatch(r"[A-Z0-9]{2,8}USDT", s.symbol)
    assert specs["BTCUSDC"].quote_asset == "USDC" and specs["ETHUSDC"].quote_asset == "USDC"
    assert specs["BTCUSDT_261225"].contract_type == "CURRENT_QUARTER"
    assert specs["BTCUSDT_261225"].pair == "BTCUSDT"
    assert specs["BTCSTUSDT"].contract_type == "" and specs["BTCSTUSDT"].status == "PENDING_TRADING"
    assert {s.status for s in specs.values()} >= {"SETTLING", "CLOSE", "TRADING"}
    assert any(s.quote_asset == "BUSD" for s in specs.values())
    assert specs["BTCUSDT"].onboard_ms == 1567965300000
    recent = [s for s in usdt_perp if ANCHOR - s.onboard_ms < 1000 * 3_600_000]
    assert recent and all(ANCHOR - s.onboard_ms >= 3 * 86_400_000 for s in recent)


def test_deterministic_across_instances(market):
    other = Market(seed=7, n_symbols=30, anchor_ms=ANCHOR)
    assert [s.symbol for s in other.symbols()] == [s.symbol for s in market.symbols()]
    for sym in ("BTCUSDT", market.symbols()[10].symbol):
        assert other.klines(sym, "1h", NOW - 50 * 3_600_000, NOW, NOW) == \
            market.klines(sym, "1h", NOW - 50 * 3_600_000, NOW, NOW)
    assert Market(seed=8, n_symbols=30, anchor_ms=ANCHOR).kline("BTCUSDT", "1m", ANCHOR) != \
        market.kline("BTCUSDT", "1m", ANCHOR)


def _check_row(row, interval, pp, qp):
    o, h, l, c = (float(x) for x in row[1:5])
    assert l <= min(o, c) <= max(o, c) <= h and l > 0
    assert row[6] == tf.next_open(interval, row[0]) - 1
    price = rf"\d+\.\d{{{pp}}}"
    qty = rf"\d+\.\d{{{qp}}}" if qp else r"\d+"
    for x in row[1:5]:
        assert re.fullmatch(price, x), x
    assert re.fullmatch(qty, row[5]) and re.fullmatch(qty, row[9])
    assert re.fullmatch(r"\d+\.\d{5}", row[7]) and re.fullmatch(r"\d+\.\d{5}", row[10])
    assert isinstance(row[0], int) and isinstance(row[6], int) and isinstance(row[8], int)
    assert row[11] == "0" and len(row) == 12
    v, q, tv, tq = float(row[5]), float(row[7]), float(row[9]), float(row[10])
    assert 0 <= tv <= v and 0 <= tq <= q + 1e-6
    assert l * v * 0.999 <= q <= h * v * 1.001


@pytest.mark.parametrize("interval", tf.INTERVALS)
def test_ohlc_invariants_and_formats(market, interval):
    for sym in ("BTCUSDT", "1000PEPEUSDT", "ETHUSDT"):
        spec = market.spec(sym)
        span = tf.FIXED_MS.get(interval, 31 * 86_400_000) * 50
        rows = market.klines(sym, interval, NOW - span, NOW, NOW)
        assert len(rows) >= 20
        for r in rows:
            _check_row(r, interval, spec.price_precision, spec.quantity_precision)
            assert r[8] >= 2
        # continuity: each close is the next open
        for a, b in zip(rows, rows[1:]):
            assert a[4] == b[1] and a[6] + 1 == b[0]


def test_btc_formats_like_real(market):
    row = market.kline("BTCUSDT", "1m", ANCHOR)
    assert re.fullmatch(r"\d{5}\.\d{2}", row[1]) and re.fullmatch(r"\d+\.\d{3}", row[5])


def test_listing_date_bounds(market):
    spec = next(s for s in market.symbols()
                if s.contract_type == "PERPETUAL" and 0 < ANCHOR - s.onboard_ms < 40 * 86_400_000)
    first = tf.floor_open("1h", spec.onboard_ms)
    opens = market.select_opens(spec.symbol, "1h", None, None, 1000, NOW)
    assert opens[0] == first and opens[-1] == tf.floor_open("1h", NOW)
    assert market.kline(spec.symbol, "1h", first - 3_600_000) is None
    assert market.klines(spec.symbol, "1h", 0, first - 1, NOW) == []
    assert market.select_opens(spec.symbol, "1h", 0, first - 1, 10, NOW) == []
    # the pending symbol has no candles yet
    assert market.select_opens("BTCSTUSDT", "1m", None, None, 10, NOW) == []


def test_delisted_history_stops(market):
    spec = market.spec("SRMUSDT")
    last = market.select_opens("SRMUSDT", "1d", None, None, 5, NOW)
    assert last[-1] == tf.floor_open("1d", spec.delist_ms)


def test_selection_rules(market):
    h = 3_600_000
    base = tf.floor_open("1h", NOW) - 100 * h
    assert market.select_opens("BTCUSDT", "1h", base + 1, None, 3, NOW) == [
        base + h, base + 2 * h, base + 3 * h]
    assert market.select_opens("BTCUSDT", "1h", None, base + 1, 2, NOW) == [base - h, base]
    assert market.select_opens("BTCUSDT", "1h", base, base + 10 * h, 3, NOW) == [
        base, base + h, base + 2 * h]
    newest = market.select_opens("BTCUSDT", "1h", None, None, 2, NOW)
    assert newest == [tf.floor_open("1h", NOW) - h, tf.floor_open("1h", NOW)]


def test_holes_remove_whole_candles_only():
    m = Market(seed=7, n_symbols=5, anchor_ms=ANCHOR)
    h = 3_600_000
    start = tf.floor_open("1h", NOW) - 10 * h
    m.add_hole("BTCUSDT", start, start + 2 * h + 30 * 60_000)
    opens = m.select_opens("BTCUSDT", "1h", start - h, start + 4 * h, 100, NOW)
    assert opens == [start - h, start + 2 * h, start + 3 * h, start + 4 * h]
    assert m.kline("BTCUSDT", "1h", start) is None
    assert m.kline("ETHUSDT", "1h", start) is not None
    assert len(m.select_opens("BTCUSDT", "1m", start, start + 2 * h - 1, 500, NOW)) == 0
    m.add_hole("*", start + 3 * h, start + 4 * h - 1)
    assert m.kline("ETHUSDT", "1h", start + 3 * h) is None
    newest = m.select_opens("BTCUSDT", "1h", None, start + 4 * h, 3, NOW)
    assert newest == [start - h, start + 2 * h, start + 4 * h]


def test_live_candle_converges_to_final(market):
    model = market.models["BTCUSDT"]
    o = tf.floor_open("1m", NOW)
    final = model.final_row("1m", o)
    early = model.live_row("1m", o, o + 1_000)
    late = model.live_row("1m", o, o + 59_999)
    assert early[1] == final[1]
    assert float(early[5]) <= float(late[5]) <= float(final[5])
    assert late[2] == final[2] or abs(float(late[2]) - float(final[2])) < 5
    _check_row(early, "1m", 2, 3)
    prov = model.provisional_row("1m", o)
    assert prov != final and prov[:5] == final[:5] and prov[8] == final[8] - 1


def test_renderer_open_provisional_final(market):
    renderer = PageRenderer(market)
    o = tf.floor_open("1m", NOW)
    opens = [o - 120_000, o - 60_000, o]
    now = o + 500
    import json
    rows = json.loads(renderer.render("BTCUSDT", "1m", opens, now, final_delay_ms=1000))
    model = market.models["BTCUSDT"]
    assert rows[0] == model.final_row("1m", opens[0])
    assert rows[1] == model.provisional_row("1m", opens[1]) != model.final_row("1m", opens[1])
    assert rows[2] == model.live_row("1m", o, now) and rows[2][6] > now
    rows = json.loads(renderer.render("BTCUSDT", "1m", opens, now, final_delay_ms=0))
    assert rows[1] == model.final_row("1m", opens[1])


def test_runtime_listing_and_delisting():
    m = Market(seed=7, n_symbols=5, anchor_ms=ANCHOR)
    spec = m.list_symbol("NEWCOINUSDT", NOW - 3 * 60_000)
    assert spec.status == "TRADING" and spec.contract_type == "PERPETUAL"
    assert len(m.select_opens("NEWCOINUSDT", "1m", None, None, 100, NOW)) == 4
    m.delist("NEWCOINUSDT", NOW - 60_000)
    assert m.spec("NEWCOINUSDT").status == "SETTLING"
    assert len(m.select_opens("NEWCOINUSDT", "1m", None, None, 100, NOW + 600_000)) == 3
