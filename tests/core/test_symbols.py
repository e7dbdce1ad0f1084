import re

import pytest

from kl_actors.core import intervals
from kl_actors.core.symbols import (
    SymbolError,
    is_valid_symbol,
    parse_table_name,
    table_base,
    table_name,
    validate_symbol,
)


@pytest.mark.parametrize("symbol,table", [
    ("BTCUSDT", "k_btc_1m"),
    ("1000PEPEUSDT", "k_1000pepe_1m"),
])
def test_table_names(symbol, table):
    assert table_name(symbol, "1m") == table
    assert parse_table_name(table) == (symbol, "1m")


def test_month_and_minute_never_collide():
    minute, month = table_name("BTCUSDT", "1m"), table_name("BTCUSDT", "1M")
    assert month == "k_btc_1mo"
    # SQLite compares identifiers case-insensitively: the names must differ ignoring case.
    assert minute.lower() != month.lower()
    assert parse_table_name(month) == ("BTCUSDT", "1M")


def test_every_interval_round_trips_and_names_are_distinct_ignoring_case():
    names = {table_name("ETHUSDT", i).lower() for i in intervals.INTERVALS}
    assert len(names) == len(intervals.INTERVALS)
    for i in intervals.INTERVALS:
        assert parse_table_name(table_name("ETHUSDT", i)) == ("ETHUSDT", i)


@pytest.mark.parametrize("name", [
    "meta_symbols", "k_btc_1s", "k_btc", "k__1m", "K_BTC_1M", "k_btc_1m; drop table x", "k_btc-x_1m",
    "sqlite_sequence", "k_btc_1m_old",
])
def test_other_tables_do_not_parse(name):
    assert parse_table_name(name) is None


@pytest.mark.parametrize("bad", [
    "BTC USDT", "BTC'USDT", "BTC/USDT", "btc@kline", "BTC\nUSDT", "BTC\x00USDT", "A" * 40 + "USDT", "", None, 5,
    "BTC\u200bUSDT", "\ud800USDT",
])
def test_invalid_symbols_rejected(bad):
    assert not is_valid_symbol(bad)
    with pytest.raises(SymbolError):
        validate_symbol(bad)
    if isinstance(bad, str):
        with pytest.raises(SymbolError):
            table_name(bad, "1m")


ODD = ["币安人生USDT", "BtcUSDT", "BTC-USDT", "Pepe.USDT", "BTCUSDT_261225", "btcusdt", "USDT", "BTC;USDT",
       "我踏马来了USDT", "X" * 32]


@pytest.mark.parametrize("symbol", ODD)
def test_odd_symbols_round_trip_through_an_ascii_hex_name(symbol):
    for interval in intervals.INTERVALS:
        name = table_name(symbol, interval)
        assert name.isascii() and re.fullmatch(r"k_x_[0-9a-f]+_[0-9a-z]+", name), name
        assert parse_table_name(name) == (symbol, interval)


def test_plain_symbols_keep_their_readable_names():
    assert table_name("XAUUSDT", "1d") == "k_xau_1d"  # TradFi perpetuals are plain names too
    assert table_base("1000PEPEUSDT") == "1000pepe"
    assert table_base("币安人生USDT") == "x_" + "币安人生USDT".encode().hex()


def test_names_differing_only_in_case_or_punctuation_never_collide_even_ignoring_case():
    symbols = ["BTCUSDT", "BtcUSDT", "btcUSDT", "BTC-USDT", "BTC.USDT", "BTC_USDT", "XUSDT", "币安人生USDT"]
    names = [table_name(s, i).lower() for s in symbols for i in intervals.INTERVALS]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("name", [
    "k_x_42544355534454_1m",              # hex of the plain BTCUSDT: not the name table_name gives it
    "k_x_4_1m", "k_x_zz_1m", "k_x__1m", "k_x_ff_1m",  # odd length, not hex, empty, not UTF-8
    "k_x_42545c555344_1m",                # a symbol validation refuses (a backslash)
])
def test_hex_names_that_table_name_never_makes_do_not_parse(name):
    assert parse_table_name(name) is None
