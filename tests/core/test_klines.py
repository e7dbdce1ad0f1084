import json
from pathlib import Path

import pytest

from kl_actors.core import klines
from kl_actors.messages import Candle

FIXTURES = Path(__file__).parent.parent / "fixtures"


def real_page():
    return (FIXTURES / "fapi_klines_BTCUSDT_1m.json").read_bytes()


def test_real_page_decodes_exactly():
    page = klines.decode_page(real_page())
    raw = json.loads(real_page())
    assert [list(_row(c)) for c in page] == raw


def _row(c: Candle):
    return (c.open_time_ms, c.open, c.high, c.low, c.close, c.volume, c.close_time_ms,
            c.quote_volume, c.trades, c.taker_buy_volume, c.taker_buy_quote_volume, c.ignore)


def test_validate_real_page_sorted_and_closed():
    page = klines.decode_page(real_page())
    ok = klines.validate_page("1m", list(reversed(page)), page[0].open_time_ms, page[-1].open_time_ms, 2**62)
    assert [c.open_time_ms for c in ok] == [c.open_time_ms for c in page]


@pytest.mark.parametrize("body", [b"", b"[", b'{"code":-1121}', b'[[1,"1"]]', b'[[1789478160000,1.0,"2","3","4","5",1789478219999,"6",1,"7","8","0"]]'])
def test_malformed_pages_rejected(body):
    with pytest.raises(klines.PageError):
        klines.decode_page(body)


def _page_with(**changes):
    page = klines.decode_page(real_page())
    first = page[0]
    fields = dict(zip(Candle.__struct_fields__, _row(first)))
    fields.update(changes)
    return [Candle(**fields), *page[1:]]


@pytest.mark.parametrize("changes,reason", [
    ({"open_time_ms": 1789478160001}, "not aligned"),
    ({"close_time_ms": 1789478219998}, "close time"),
    ({"high": "1.0"}, "high/low"),
    ({"low": "99999999.0"}, "high/low"),
    ({"volume": "-1.0"}, "non-negative"),
    ({"open": "1e5"}, "non-negative"),
    ({"trades": -1}, "negative"),
])
def test_bad_candle_rejects_whole_page(changes, reason):
    page = _page_with(**changes)
    with pytest.raises(klines.PageError, match=reason):
        klines.validate_page("1m", page, 0, 2**62, 2**62)


def test_range_duplicates_and_open_candle_rejected():
    page = klines.decode_page(real_page())
    first, last = page[0].open_time_ms, page[-1].open_time_ms
    with pytest.raises(klines.PageError, match="outside"):
        klines.validate_page("1m", page, first + 60_000, last, 2**62)
    with pytest.raises(klines.PageError, match="duplicate"):
        klines.validate_page("1m", page + [page[0]], first, last, 2**62)
    with pytest.raises(klines.PageError, match="not closed"):
        klines.validate_page("1m", page, first, last, page[-1].close_time_ms)


def test_ws_events_from_real_capture():
    lines = (FIXTURES / "fapi_ws_combined_kline_1m_2021-07-22.txt").read_text().splitlines()[1:]
    events = [klines.decode_ws_event(line.split(": ", 1)[1]) for line in lines]
    assert len(events) == 67 and all(e is not None for e in events)
    closed = [e for e in events if e.closed]
    assert sorted(e.symbol for e in closed) == ["AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"]
    sushi = next(e for e in closed if e.symbol == "SUSHIUSDT")
    assert sushi.candle == Candle(1626992700000, "7.6080", "7.6180", "7.6070", "7.6170", "3005",
                                  1626992759999, "22875.8590", 113, "1900", "14464.6960", "0")
    for e in events:
        klines.check_candle("1m", e.candle)


def test_continuous_event_and_control_replies():
    event = {"e": "continuous_kline", "E": 1607443058651, "ps": "BTCUSDT", "ct": "PERPETUAL",
             "k": {"t": 1607443020000, "T": 1607443079999, "i": "1m", "f": 116467658886, "L": 116468012423,
                   "o": "18787.00", "c": "18804.04", "h": "18804.04", "l": "18786.54", "v": "197.664",
                   "n": 543, "x": False, "q": "3715253.19494", "V": "184.769", "Q": "3472925.84746", "B": "0"}}
    parsed = klines.decode_ws_event(json.dumps(event))
    assert parsed.symbol == "BTCUSDT" and parsed.interval == "1m" and parsed.candle.close == "18804.04"
    assert klines.decode_ws_event('{"result":null,"id":1}') is None
    assert klines.decode_ws_event('{"result":["btcusdt@kline_1m"],"id":3}') is None
    with pytest.raises(klines.PageError):
        klines.decode_ws_event('{"e":"kline","E":1,"k":{"t":"x"}}')
    with pytest.raises(klines.PageError):
        klines.decode_ws_event("not json")


def test_in_future_allows_the_tolerance_and_no_more():
    now = 1_700_000_000_000 - 1_700_000_000_000 % 60_000
    limit = now + klines.FUTURE_TOLERANCE_MS
    closing_at_limit = Candle(limit - 60_000 + 1, "1", "1", "1", "1", "0", limit, "0", 0, "0", "0")
    # A closed candle: its close must come before the limit.
    assert klines.in_future(closing_at_limit, True, now)
    assert not klines.in_future(closing_at_limit, True, now + 1)
    # A live candle: its open may be up to the limit (its close is in the future by nature).
    opening_at_limit = Candle(limit, "1", "1", "1", "1", "0", limit + 59_999, "0", 0, "0", "0")
    assert not klines.in_future(opening_at_limit, False, now)
    assert klines.in_future(opening_at_limit, False, now - 1)
