"""The read API's SQL on real SQLite files (kl_actors/store_api.py) and the `info_json` column of
meta_symbols (store.py): pages against a brute-force selection, old files, bounded cost."""

from __future__ import annotations

import json
import random

import apsw
import pytest

from harness import candle
from kl_actors.config import DatabaseConfig
from kl_actors.core import intervals
from kl_actors.core.api_rules import MAX_MS, MIN_MS
from kl_actors.messages import SymbolInfo
from kl_actors.store import Store
from kl_actors.store_api import ApiStore

M = intervals.MINUTE_MS
T0 = 1_790_000_000_000 - 1_790_000_000_000 % M


def make_db(path, opens, symbol="BTCUSDT", interval="1m"):
    db = Store.open_writer(DatabaseConfig(path=str(path)))
    with db.transaction():
        db.upsert(symbol, interval, "rest", [candle(o, interval) for o in opens])
    return db


def brute(opens, lo, hi, limit, newest):
    inside = [o for o in sorted(opens) if lo <= o <= hi]
    return inside[-limit:] if newest else inside[:limit]


def test_pages_are_the_exchange_rows_chosen_like_a_brute_force_selection(tmp_path):
    rng = random.Random(7)
    opens = [T0 + i * M for i in range(3000) if rng.random() > 0.05]  # some holes
    make_db(tmp_path / "db.sqlite", opens).close()
    api = ApiStore.open(DatabaseConfig(path=str(tmp_path / "db.sqlite")))
    try:
        rows = api.kline_rows("BTCUSDT", "1m", T0, T0 + 10 * M, 3, False)
        c = candle(opens[0])
        assert rows[0] == (c.open_time_ms, c.open, c.high, c.low, c.close, c.volume, c.close_time_ms,
                           c.quote_volume, c.trades, c.taker_buy_volume, c.taker_buy_quote_volume, "0")
        for _ in range(300):
            lo = rng.choice([MIN_MS, T0 - 5 * M, T0 + rng.randrange(-10, 3100) * M + rng.choice([0, 1, 30_000])])
            hi = rng.choice([MAX_MS, lo + rng.randrange(0, 2000) * M, T0 + rng.randrange(0, 3100) * M])
            limit, newest = rng.choice([1, 2, 99, 500, 1500]), rng.random() < 0.5
            got = [r[0] for r in api.kline_rows("BTCUSDT", "1m", lo, hi, limit, newest)]
            assert got == brute(opens, lo, hi, limit, newest), (lo, hi, limit, newest)
        assert api.kline_rows("ETHUSDT", "1m", MIN_MS, MAX_MS, 10, True) == []   # no table
        assert api.kline_rows("BAD/USDT", "1m", MIN_MS, MAX_MS, 10, True) == []  # never a table name
        assert api.has_table("BTCUSDT", "1m") and not api.has_table("BTCUSDT", "1h")
    finally:
        api.close()


def test_holes_between_only_those_overlapping(tmp_path):
    db = make_db(tmp_path / "db.sqlite", [T0])
    with db.transaction():
        db.record_hole("BTCUSDT", "1m", T0 + 10 * M, T0 + 20 * M, 1)
        db.record_hole("BTCUSDT", "1m", T0 + 30 * M, T0 + 31 * M, 1)
        db.record_hole("BTCUSDT", "1h", T0, T0 + 3600_000, 1)
    db.close()
    api = ApiStore.open(DatabaseConfig(path=str(tmp_path / "db.sqlite")))
    try:
        assert api.holes_between("BTCUSDT", "1m", T0, T0 + 9 * M) == []
        assert api.holes_between("BTCUSDT", "1m", T0 + 20 * M, T0 + 29 * M) == [(T0 + 10 * M, T0 + 20 * M)]
        assert len(api.holes_between("BTCUSDT", "1m", T0, T0 + 100 * M)) == 2
    finally:
        api.close()


def test_symbol_entries_are_kept_and_not_erased_by_an_empty_one(tmp_path):
    db = Store.open_writer(DatabaseConfig(path=str(tmp_path / "db.sqlite")))
    entry = json.dumps({"symbol": "BTCUSDT", "contractType": "PERPETUAL", "pricePrecision": 2})
    with db.transaction():
        db.record_symbols([SymbolInfo("BTCUSDT", "TRADING", 100, entry), SymbolInfo("ETHUSDT", "TRADING", 5)], 1000)
    api = ApiStore.open(DatabaseConfig(path=str(tmp_path / "db.sqlite")))
    first = api.symbols_version()
    assert [tuple(r) for r in api.symbol_rows()] == [("BTCUSDT", "TRADING", 100, entry), ("ETHUSDT", "TRADING", 5, "")]
    with db.transaction():  # a later discovery without the entry (too large): the last one stays
        db.record_symbols([SymbolInfo("BTCUSDT", "SETTLING", 100, "")], 2000)
    assert api.symbol_rows()[0] == ("BTCUSDT", "SETTLING", 100, entry)
    assert api.symbols_version() != first
    api.close()
    db.close()


def test_an_old_file_without_the_column_is_read_and_upgraded(tmp_path):
    path = str(tmp_path / "old.sqlite")
    conn = apsw.Connection(path)
    conn.execute("CREATE TABLE meta_schema (version INTEGER NOT NULL); INSERT INTO meta_schema VALUES (2);"
                 "CREATE TABLE meta_symbols (symbol TEXT PRIMARY KEY, status TEXT, onboard_ms INTEGER, "
                 "first_seen_ms INTEGER, last_seen_ms INTEGER, table_base TEXT);"
                 "INSERT INTO meta_symbols VALUES ('BTCUSDT', 'TRADING', 7, 1, 1, 'btc');")
    conn.close()
    api = ApiStore.open(DatabaseConfig(path=path))
    assert api.symbol_rows() == [("BTCUSDT", "TRADING", 7, "")]  # read as it is, never altered by a reader
    api.close()
    db = Store.open_writer(DatabaseConfig(path=path))  # the writer adds the column
    with db.transaction():
        db.record_symbols([SymbolInfo("BTCUSDT", "TRADING", 7, '{"symbol":"BTCUSDT"}')], 5)
    db.close()
    api = ApiStore.open(DatabaseConfig(path=path))
    assert api.symbol_rows() == [("BTCUSDT", "TRADING", 7, '{"symbol":"BTCUSDT"}')]
    api.close()


def test_a_file_without_meta_tables_has_no_symbols(tmp_path):
    path = str(tmp_path / "bare.sqlite")
    apsw.Connection(path).execute("CREATE TABLE x (a)")
    api = ApiStore.open(DatabaseConfig(path=path))
    assert api.symbol_rows() == [] and api.holes_between("BTCUSDT", "1m", 0, 1) == []
    assert api.symbols_version() == (0, None)
    api.close()


def vm_steps(api: ApiStore, call) -> int:
    """SQLite virtual-machine instructions one call executes (the work it does, whatever the box)."""
    count = [0]

    def tick():
        count[0] += 1
        return False
    api.conn.set_progress_handler(tick, 1)
    try:
        call()
    finally:
        api.conn.set_progress_handler(None)
    return count[0]


@pytest.mark.slow(40)
def test_a_page_costs_the_same_on_twenty_million_rows(tmp_path):
    """A page walks the primary key: the work for 1500 rows does not grow with the table."""
    big, small = 20_000_000, 10_000
    paths = {}
    for name, count in (("small", small), ("big", big)):
        path = str(tmp_path / f"{name}.sqlite")
        make_db(path, []).close()
        conn = apsw.Connection(path)
        conn.execute("PRAGMA journal_mode=OFF").fetchall()  # a fixture: no WAL of a gigabyte
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO k_btc_1m SELECT ? + i * 60000, '1.5', '2.5', '1.0', '2.0', '10.000', ? + i * 60000 + 59999, "
            "'15.0', 7, '5.000', '7.5', 'rest' FROM n", (count - 1, T0, T0))
        conn.execute("COMMIT")
        with apsw.Connection(path) as check:
            assert check.execute("SELECT count(*) FROM k_btc_1m").fetchall() == [(count,)]
        conn.close()
        paths[name] = path
    steps = {}
    for name, count in (("small", small), ("big", big)):
        api = ApiStore.open(DatabaseConfig(path=paths[name]))
        try:
            middle = T0 + (count // 2) * M
            calls = [lambda: api.kline_rows("BTCUSDT", "1m", middle, MAX_MS, 1500, False),
                     lambda: api.kline_rows("BTCUSDT", "1m", MIN_MS, middle, 1500, True),
                     lambda: api.kline_rows("BTCUSDT", "1m", MIN_MS, MAX_MS, 1500, True),
                     lambda: api.last_open_ms("BTCUSDT", "1m")]
            assert len(calls[0]()) == 1500
            steps[name] = [vm_steps(api, c) for c in calls]
        finally:
            api.close()
    for small_steps, big_steps in zip(steps["small"], steps["big"]):
        assert big_steps <= small_steps * 1.2 + 50, steps
