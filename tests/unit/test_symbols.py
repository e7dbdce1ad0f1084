import pytest

from kl_actors import intervals
from kl_actors.symbols import SymbolError, is_valid_symbol, parse_table_name, table_name, validate_symbol


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
    "BTCUSDT_261225", "BTCUSDC", "btcusdt", "USDT", "BTC USDT", "BTC;USDT", "BTC'USDT", "币安人生USDT",
    "A" * 40 + "USDT", "", None, 5,
])
def test_invalid_symbols_rejected(bad):
    assert not is_valid_symbol(bad)
    with pytest.raises(SymbolError):
        validate_symbol(bad)
    if isinstance(bad, str):
        with pytest.raises(SymbolError):
            table_name(bad, "1m")
