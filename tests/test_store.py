"""store.py against real SQLite files: round trip, upsert rules, rollback, holes, inventory."""

from __future__ import annotations

import calendar

import apsw
import pytest

from kl_actors.core import intervals
from kl_actors.config import DatabaseConfig
from kl_actors.messages import Candle, SymbolInfo
from kl_actors.store import Store, StoreError, TableCoverage
from harness import candle

T0 = 1_700_000_040_000 - 1_700_000_040_000 % 60_000  # an aligned minute


def minutes(*indexes: int, **kw) -> list[Candle]:
    return [candle(T0 + i * 60_000, **kw) for i in indexes]


def as_row(c: Candle, source: str) -> tuple:
    return (*(c.open_time_ms, c.open, c.high, c.low, c.close, c.volume, c.close_time_ms,
              c.quote_volume, c.trades, c.taker_buy_volume, c.taker_buy_quote_volume), source)


@pytest.fixture
def db(tmp_path):
    config = DatabaseConfig(path=str(tmp_path / "sub" / "dir" / "k.sqlite"))
    store = Store.open_writer(config)
    yield store
    store.close()


def write(store: Store, symbol: str, interval: str, source: str, candles: list[Candle]) -> int:
    with store.transaction():
        return store.upsert(symbol, interval, source, candles)


def test_open_creates_dirs_wal_and_schema(db, tmp_path):
    assert (tmp_path / "sub" / "dir" / "k.sqlite").exists()
    cur = db.conn.cursor()
    assert next(cur.execute("PRAGMA journal_mode"))[0] == "wal"
    assert next(cur.execute("PRAGMA synchronous"))[0] == 1  # NORMAL
    assert next(cur.execute("PRAGMA cache_size"))[0] == -65536
    assert db.schema_version() == 2


def test_upsert_round_trips_decimal_strings_exactly(db):
    batch = minutes(0, 1, 2)
    batch[1] = Candle(batch[1].open_time_ms, "0.000000010", "0.000000020", "0.000000001",
                      "0.000000015", "123456789012345678.12345678901234567890",
                      batch[1].close_time_ms, "0", 0, "0.0", "00.10")
    assert write(db, "BTCUSDT", "1m", "rest", batch) == 3
    assert db.candles("BTCUSDT", "1m") == [as_row(c, "rest") for c in batch]
    assert db.count("BTCUSDT", "1m") == 3
    assert db.first_open_ms("BTCUSDT", "1m") == T0
    assert db.last_open_ms("BTCUSDT", "1m") == T0 + 120_000


def test_same_batch_twice_leaves_table_unchanged(db):
    batch = minutes(0, 1, 2)
    write(db, "ETHUSDT", "1m", "rest", batch)
    before = db.candles("ETHUSDT", "1m")
    write(db, "ETHUSDT", "1m", "rest", batch)
    assert db.candles("ETHUSDT", "1m") == before == [as_row(c, "rest") for c in batch]


def test_ws_never_overwrites_rest_but_rest_overwrites_ws(db):
    write(db, "BTCUSDT", "1m", "rest", minutes(0, close="100.5"))
    written = write(db, "BTCUSDT", "1m", "ws", minutes(0, 1, close="100.7"))
    assert written == 1  # only the new open time
    rows = db.candles("BTCUSDT", "1m")
    assert rows[0] == as_row(minutes(0, close="100.5")[0], "rest")
    assert rows[1] == as_row(minutes(1, close="100.7")[0], "ws")
    with db.transaction():
        stored = db.upsert_stored("BTCUSDT", "1m", "ws", minutes(0, 1, 2, close="100.8"))
    assert stored == {T0 + 60_000, T0 + 120_000}  # ws replaces ws, never rest
    write(db, "BTCUSDT", "1m", "rest", minutes(1, close="100.6"))
    rows = db.candles("BTCUSDT", "1m")
    assert [r[4] for r in rows] == ["100.5", "100.6", "100.8"]
    assert [r[-1] for r in rows] == ["rest", "rest", "ws"]


def test_rollback_leaves_nothing_not_even_the_table(db):
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.upsert("SOLUSDT", "5m", "rest", [candle(T0 - T0 % 300_000, "5m")])
            db.record_symbols([SymbolInfo("SOLUSDT", "TRADING", 1)], 5)
            raise RuntimeError("boom")
    assert db.kline_tables() == {}
    assert db.symbols() == []
    assert db.count("SOLUSDT", "5m") == 0
    # The store recovers: the table is created again by the next transaction.
    assert write(db, "SOLUSDT", "5m", "rest", [candle(T0 - T0 % 300_000, "5m")]) == 1


def test_constraint_failure_rolls_back_whole_transaction(db):
    bad = Candle(T0, "1", "1", "1", "1", "1", T0 + 59_999, "1", None, "1", "1")  # trades NULL
    with pytest.raises(apsw.ConstraintError):
        with db.transaction():
            db.upsert("BTCUSDT", "1m", "rest", minutes(1, 2))
            db.upsert("BTCUSDT", "1m", "rest", [bad])
    assert db.count("BTCUSDT", "1m") == 0


def test_holes_found_and_exchange_holes_excluded(db):
    write(db, "BTCUSDT", "1m", "rest", minutes(0, 1, 4, 5, 6, 10, 20))
    m = lambda i: T0 + i * 60_000  # noqa: E731
    assert db.holes("BTCUSDT", "1m") == [(m(2), m(3)), (m(7), m(9)), (m(11), m(19))]
    with db.transaction():
        db.record_hole("BTCUSDT", "1m", m(7), m(9), now_ms=m(30))  # the whole gap
        db.record_hole("BTCUSDT", "1m", m(13), m(15), now_ms=m(30))  # the middle of a gap
    assert db.exchange_holes("BTCUSDT", "1m") == [(m(7), m(9)), (m(13), m(15))]
    assert db.holes("BTCUSDT", "1m") == [(m(2), m(3)), (m(11), m(12)), (m(16), m(19))]
    assert db.holes("BTCUSDT", "5m") == []  # no table


def test_holes_at_month_interval(db):
    def month(y: int, mo: int) -> int:
        return calendar.timegm((y, mo, 1, 0, 0, 0)) * 1000

    opens = [month(2023, 11), month(2023, 12), month(2024, 3), month(2024, 4), month(2024, 6)]
    write(db, "BTCUSDT", "1M", "rest", [candle(t, "1M") for t in opens])
    assert db.kline_tables() == {"BTCUSDT": {"1M": "k_btc_1mo"}}
    assert db.holes("BTCUSDT", "1M") == [(month(2024, 1), month(2024, 2)), (month(2024, 5), month(2024, 5))]
    with db.transaction():
        db.record_hole("BTCUSDT", "1M", month(2024, 1), month(2024, 1), now_ms=0)
    assert db.holes("BTCUSDT", "1M") == [(month(2024, 2), month(2024, 2)), (month(2024, 5), month(2024, 5))]


def test_holes_at_week_interval(db):
    week0 = intervals.align("1w", T0)
    write(db, "BTCUSDT", "1w", "rest",
          [candle(intervals.step("1w", week0, i), "1w") for i in (0, 3)])
    assert db.holes("BTCUSDT", "1w") == [(intervals.step("1w", week0, 1), intervals.step("1w", week0, 2))]


def test_kline_tables_ignore_meta_and_foreign_tables(db):
    write(db, "BTCUSDT", "1m", "rest", minutes(0))
    write(db, "1000PEPEUSDT", "1h", "rest", [candle(T0 - T0 % 3_600_000, "1h")])
    with db.transaction():
        db.conn.execute("CREATE TABLE k_btc_7m (x)")
        db.conn.execute("CREATE TABLE notes (x)")
        db.conn.execute("CREATE TABLE k_BTC_1m_backup (x)")
        db.conn.execute("CREATE TABLE k_eth_1mo (open_time INTEGER PRIMARY KEY)")
    assert db.kline_tables() == {
        "BTCUSDT": {"1m": "k_btc_1m"},
        "1000PEPEUSDT": {"1h": "k_1000pepe_1h"},
        "ETHUSDT": {"1M": "k_eth_1mo"},
    }
    coverage = {(c.symbol, c.interval): c for c in db.coverage()}
    assert coverage[("BTCUSDT", "1m")] == TableCoverage("BTCUSDT", "1m", "k_btc_1m", T0, T0, 1)
    assert coverage[("ETHUSDT", "1M")].rows == 0


def test_bad_names_never_reach_sql(db):
    for symbol in ("BTC'); DROP TABLE x; --", "BTC/USDT", "BTC USDT", ""):
        with pytest.raises(ValueError):
            with db.transaction():
                db.upsert(symbol, "1m", "rest", minutes(0))
    with pytest.raises(ValueError):
        with db.transaction():
            db.upsert("BTCUSDT", "7m", "rest", minutes(0))
    with pytest.raises(ValueError):
        with db.transaction():
            db.upsert("BTCUSDT", "1m", "'); DROP TABLE x; --", minutes(0))
    assert db.kline_tables() == {}


def test_symbols_recorded_with_first_and_last_seen(db):
    with db.transaction():
        db.record_symbols([SymbolInfo("BTCUSDT", "TRADING", 100), SymbolInfo("ETHUSDT", "TRADING", 200)], 1000)
    with db.transaction():
        db.record_symbols([SymbolInfo("BTCUSDT", "SETTLING", 100)], 2000)
    records = {r.symbol: r for r in db.symbols()}
    assert tuple(records["BTCUSDT"]) == ("BTCUSDT", "SETTLING", 100, 1000, 2000)
    assert tuple(records["ETHUSDT"]) == ("ETHUSDT", "TRADING", 200, 1000, 1000)


def test_readonly_connection_reads_but_cannot_write(db, tmp_path):
    write(db, "BTCUSDT", "1m", "rest", minutes(0, 1, 3))
    reader = Store.open_readonly(path=str(tmp_path / "sub" / "dir" / "k.sqlite"))
    try:
        assert reader.kline_tables() == {"BTCUSDT": {"1m": "k_btc_1m"}}
        assert reader.holes("BTCUSDT", "1m") == [(T0 + 120_000, T0 + 120_000)]
        assert reader.last_open_ms("BTCUSDT", "1m") == T0 + 180_000
        with pytest.raises(apsw.ReadOnlyError):
            with reader.transaction():
                reader.upsert("BTCUSDT", "1m", "rest", minutes(2))
        with pytest.raises(apsw.ReadOnlyError):
            reader.conn.execute("DELETE FROM k_btc_1m")
        with pytest.raises((apsw.ReadOnlyError, apsw.Error)):
            reader.conn.execute("CREATE TABLE k_eth_1m (x)")
    finally:
        reader.close()
    assert db.count("BTCUSDT", "1m") == 3


def test_readonly_of_missing_file_says_so(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Store.open_readonly(path=str(tmp_path / "nope.sqlite"))


def test_full_database_rolls_back_and_store_keeps_working(db):
    write(db, "BTCUSDT", "1m", "rest", minutes(0))
    pages = next(db.conn.cursor().execute("PRAGMA page_count"))[0]
    db.conn.execute(f"PRAGMA max_page_count={pages + 2}")  # what a full disk looks like to SQLite
    big = [candle(T0 + i * 60_000) for i in range(1, 5000)]
    with pytest.raises(apsw.FullError):
        with db.transaction():
            db.upsert("BTCUSDT", "1m", "rest", big)
    assert not db.conn.in_transaction
    assert db.count("BTCUSDT", "1m") == 1
    db.conn.execute("PRAGMA max_page_count=1073741823")
    assert write(db, "BTCUSDT", "1m", "rest", big) == len(big)
    assert db.count("BTCUSDT", "1m") == 5000


def test_writer_connection_caps_the_wal_file(db):
    assert next(db.conn.cursor().execute("PRAGMA journal_size_limit"))[0] == 64 * 2 ** 20


def test_checkpoint_truncates_the_wal_only_once_no_reader_needs_it(db, tmp_path):
    write(db, "BTCUSDT", "1m", "rest", minutes(0))
    reader = apsw.Connection(str(tmp_path / "sub" / "dir" / "k.sqlite"), flags=apsw.SQLITE_OPEN_READONLY)
    reader.execute("BEGIN")
    assert list(reader.execute("SELECT count(*) FROM k_btc_1m")) == [(1,)]
    write(db, "BTCUSDT", "1m", "rest", minutes(*range(1, 2000)))
    grown = db.wal_bytes()
    assert grown > 0
    assert db.checkpoint(busy_timeout_ms=10) is False  # the reader's snapshot still needs it
    assert db.wal_bytes() >= grown
    reader.execute("COMMIT")
    assert db.checkpoint(busy_timeout_ms=10) is True
    assert db.wal_bytes() == 0
    assert db.count("BTCUSDT", "1m") == 2000
    reader.close()


def test_open_writer_waits_for_a_held_write_lock_only_its_busy_timeout(tmp_path):
    import time
    path = str(tmp_path / "k.sqlite")
    Store.open_writer(DatabaseConfig(path=path)).close()
    outside = apsw.Connection(path)
    outside.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(apsw.BusyError):
        Store.open_writer(DatabaseConfig(path=path), busy_timeout_ms=100)
    assert time.monotonic() - started < 4  # its 100 ms, not the default 5 s
    outside.execute("ROLLBACK")
    store = Store.open_writer(DatabaseConfig(path=path), busy_timeout_ms=100)
    assert store.schema_version() == 2
    store.close()
    outside.close()


def test_open_writer_of_a_file_that_is_not_a_database_is_a_store_error(tmp_path):
    path = tmp_path / "k.sqlite"
    path.write_bytes(b"this is not an SQLite file, and it is long enough to have a header" * 100)
    with pytest.raises(StoreError, match="cannot open database"):
        Store.open_writer(DatabaseConfig(path=str(path)))


def test_odd_symbols_get_hex_tables_and_meta_symbols_maps_them(db):
    odd = ["币安人生USDT", "BtcUSDT", "BTC;DROP", "btcusdt"]
    with db.transaction():
        for symbol in ["BTCUSDT", *odd]:
            db.upsert(symbol, "1m", "rest", minutes(0))
        db.record_symbols([SymbolInfo(s, "TRADING", 1) for s in ["BTCUSDT", *odd, "BAD/USDT"]], 1000)
    tables = db.kline_tables()
    assert set(tables) == {"BTCUSDT", *odd}
    assert tables["BTCUSDT"] == {"1m": "k_btc_1m"}
    assert all(tables[s]["1m"].startswith("k_x_") for s in odd)
    assert all(db.count(s, "1m") == 1 for s in odd)
    bases = dict(db.conn.execute("SELECT symbol, table_base FROM meta_symbols"))
    assert bases["BTCUSDT"] == "btc" and "BAD/USDT" not in bases
    for symbol in odd:
        assert f"k_{bases[symbol]}_1m" == tables[symbol]["1m"]


def test_table_base_column_added_to_an_older_file(tmp_path):
    import apsw
    path = str(tmp_path / "old.sqlite")
    conn = apsw.Connection(path)
    conn.execute("CREATE TABLE meta_symbols (symbol TEXT PRIMARY KEY, status TEXT, onboard_ms INTEGER, "
                 "first_seen_ms INTEGER, last_seen_ms INTEGER)")
    conn.execute("INSERT INTO meta_symbols VALUES ('BTCUSDT', 'TRADING', 1, 2, 3)")
    conn.close()
    store = Store.open_writer(DatabaseConfig(), path)
    try:
        with store.transaction():
            store.record_symbols([SymbolInfo("ETHUSDT", "TRADING", 5)], 10)
        rows = sorted(store.conn.execute("SELECT symbol, table_base FROM meta_symbols"))
        assert rows == [("BTCUSDT", None), ("ETHUSDT", "eth")]
        assert [r.symbol for r in store.symbols()] == ["BTCUSDT", "ETHUSDT"]
    finally:
        store.close()
    Store.open_writer(DatabaseConfig(), path).close()  # the guarded ALTER runs only once


def test_holes_of_a_3d_table_on_any_phase(db):
    day, step = 86_400_000, 3 * 86_400_000
    base = 20_002 * day  # epoch day ≡ 1 (mod 3): not the phase-0 grid
    assert base % step == day
    opens = [base + i * step for i in (0, 1, 5, 9, 10)]
    with db.transaction():
        db.upsert("BTCUSDT", "3d", "rest", [candle3d(t) for t in opens])
        db.record_hole("BTCUSDT", "3d", base + 2 * step, base + 2 * step, 1)
    assert db.holes("BTCUSDT", "3d") == [(base + 3 * step, base + 4 * step), (base + 6 * step, base + 8 * step)]


def candle3d(open_ms):
    from kl_actors.messages import Candle
    return Candle(open_ms, "1.0", "1.0", "1.0", "1.0", "1", open_ms + 3 * 86_400_000 - 1, "1", 1, "0", "0")
@pytest.mark.parametrize("interval", ["1m", "1h", "1M"])
def test_chunked_counts_and_gaps_find_exactly_the_holes_a_full_scan_finds(db, interval):
    import random

    from kl_actors.core import backlog, planner

    rng = random.Random(5)
    opens = list(intervals.open_times(interval, intervals.align(interval, T0),
                                      intervals.step(interval, intervals.align(interval, T0), 2999 if interval != "1M" else 99)))
    kept = [o for o in opens if rng.random() > 0.03 or o in (opens[0], opens[-1])]
    with db.transaction():
        db.upsert("BTCUSDT", interval, "rest", [candle(o, interval) for o in kept])
    first, last = db.first_last("BTCUSDT", interval)
    assert (first, last) == (opens[0], opens[-1])
    found = []
    for lo, hi in backlog.chunks(interval, first, last, rows=137):
        if db.count_between("BTCUSDT", interval, lo, hi) < intervals.count_between(interval, lo, hi):
            found.extend(db.gaps_between("BTCUSDT", interval, lo, hi))
    assert planner.merge_adjacent(interval, found) == db.holes("BTCUSDT", interval)
    missing = sorted(set(opens) - set(kept))
    assert sum(intervals.count_between(interval, a, b) for a, b in found) == len(missing)
    assert db.first_last("ETHUSDT", interval) == (None, None)


def test_archive_sits_between_rest_and_ws(db):
    """rest > archive > ws: archive files hold final candles, so they replace a WebSocket candle;
    REST replaces an archive candle and an archive candle never replaces a REST one."""
    write(db, "BTCUSDT", "1m", "ws", minutes(0, 1, close="100.1"))
    write(db, "BTCUSDT", "1m", "rest", minutes(2, close="100.2"))
    assert write(db, "BTCUSDT", "1m", "archive", minutes(0, 1, 2, 3, close="100.3")) == 3
    rows = db.candles("BTCUSDT", "1m")
    assert [(r[4], r[-1]) for r in rows] == [("100.3", "archive"), ("100.3", "archive"),
                                             ("100.2", "rest"), ("100.3", "archive")]
    # ws never over archive; a re-published archive file replaces the older archive row.
    assert write(db, "BTCUSDT", "1m", "ws", minutes(0, close="100.4")) == 0
    assert write(db, "BTCUSDT", "1m", "archive", minutes(1, close="100.5")) == 1
    assert write(db, "BTCUSDT", "1m", "rest", minutes(3, close="100.6")) == 1
    assert write(db, "BTCUSDT", "1m", "archive", minutes(3, close="100.7")) == 0
    rows = db.candles("BTCUSDT", "1m")
    assert [(r[4], r[-1]) for r in rows] == [("100.3", "archive"), ("100.5", "archive"),
                                             ("100.2", "rest"), ("100.6", "rest")]


def test_version_1_file_is_upgraded_to_take_archive_rows(tmp_path):
    path = str(tmp_path / "v1.sqlite")
    conn = apsw.Connection(path)
    conn.execute("CREATE TABLE meta_schema (version INTEGER NOT NULL); INSERT INTO meta_schema VALUES (1)")
    from kl_actors import store as store_mod
    v1 = store_mod._KLINE_TABLE_SQL.replace(store_mod._CHECK_V2, store_mod._CHECK_V1)
    assert v1 != store_mod._KLINE_TABLE_SQL
    conn.execute(v1.format(table="k_btc_1m"))
    conn.execute("INSERT INTO k_btc_1m VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", as_row(minutes(0)[0], "rest"))
    with pytest.raises(apsw.ConstraintError):
        conn.execute("INSERT INTO k_btc_1m VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", as_row(minutes(1)[0], "archive"))
    conn.close()
    store = Store.open_writer(DatabaseConfig(), path)
    try:
        assert write(store, "BTCUSDT", "1m", "archive", minutes(0, 1)) == 1
        assert [r[-1] for r in store.candles("BTCUSDT", "1m")] == ["rest", "archive"]
        assert store.conn.execute("SELECT version FROM meta_schema").fetchall() == [(2,)]
        assert store.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        with pytest.raises(apsw.ConstraintError):  # still checked
            store.conn.execute("UPDATE k_btc_1m SET source = 'x'")
    finally:
        store.close()
    Store.open_writer(DatabaseConfig(), path).close()  # upgrades only once


@pytest.mark.parametrize("seed", range(4))
def test_multi_row_statements_store_exactly_what_one_row_statements_store(tmp_path, seed, monkeypatch):
    """Batches of 1..250 candles (straddling the 100- and 10-row statements) with duplicate open
    times inside a batch and every source, into two files: one with multi-row statements, one
    with one row a statement (the reference). Tables, counts, RETURNING sets and summaries agree."""
    import random

    import kl_actors.store as store_module

    rng = random.Random(seed)
    steps = []
    for _ in range(40):
        n = rng.choice([1, 9, 10, 11, 99, 100, 101, 137, 250])
        opens = [rng.randrange(300) for _ in range(n)]  # duplicates on purpose
        batch = [candle(T0 + i * 60_000, volume=f"{rng.randrange(10 ** 6)}.{k}") for k, i in enumerate(opens)]
        steps.append((rng.choice(["rest", "ws", "archive"]), rng.random() < 0.5, batch))

    def run(path, sizes):
        monkeypatch.setattr(store_module, "MULTI_ROW_SIZES", sizes)
        store = Store.open_writer(DatabaseConfig(path=str(path)))
        answers = []
        try:
            for source, stored, batch in steps:
                with store.transaction():
                    if stored:
                        answers.append(store.upsert_stored("BTCUSDT", "1m", source, batch))
                    else:
                        answers.append(store.upsert("BTCUSDT", "1m", source, batch))
            table = list(store.conn.execute("SELECT * FROM k_btc_1m ORDER BY open_time"))
            return answers, table, store.summaries()
        finally:
            store.close()

    multi = run(tmp_path / "multi.sqlite", (100, 10))
    single = run(tmp_path / "single.sqlite", ())
    assert multi == single
    assert multi[1] and {row[-1] for row in multi[1]} <= {"rest", "ws", "archive"}


def test_upsert_refuses_rows_of_another_width(db):
    row = as_row(minutes(0)[0], "rest")[:11]  # 11 fields: the 12th (ignore) missing
    with pytest.raises(ValueError), db.transaction():
        db.upsert_rows("BTCUSDT", "1m", "rest", [row] * 150)
    assert db.count("BTCUSDT", "1m") == 0
