"""store_summary.py against real SQLite files: `meta_tables` equals count(*), the WebSocket rows,
min and max of every table after any mix of upserts, rollbacks, and the slice-by-slice summing of
tables made before summaries existed (with upserts landing between its slices)."""

from __future__ import annotations

import random

import apsw
import pytest

from kl_actors import store_summary
from kl_actors.config import DatabaseConfig
from kl_actors.core.symbols import table_name
from kl_actors.store import Store
from harness import candle

MIN = 60_000
T0 = 1_700_000_040_000 - 1_700_000_040_000 % MIN


def truth(store: Store, symbol: str, interval: str) -> tuple:
    table = table_name(symbol, interval)
    return next(store.conn.cursor().execute(
        f"SELECT count(*), count(*) FILTER (WHERE source = 'ws'), min(open_time), max(open_time) FROM {table}"))


def summary_of(store: Store, symbol: str, interval: str) -> tuple:
    s = store.summaries()[table_name(symbol, interval)]
    return s.rows, s.ws_rows, s.first_ms, s.last_ms


def write(store: Store, symbol: str, source: str, indexes, interval: str = "1m", live: bool = False) -> None:
    step = {"1m": MIN, "1h": 60 * MIN}[interval]
    candles = [candle(T0 + i * step, interval) for i in indexes]
    with store.transaction():
        if live:
            store.upsert_stored(symbol, interval, source, candles)
        else:
            store.upsert(symbol, interval, source, candles)


@pytest.fixture
def db(tmp_path):
    store = Store.open_writer(DatabaseConfig(path=str(tmp_path / "k.sqlite")))
    yield store
    store.close()


def test_summary_follows_every_kind_of_upsert(db):
    steps = [
        ("rest", range(0, 100)),            # insert into a new table
        ("rest", range(50, 150)),           # overwrite half, insert half
        ("ws", range(150, 160)),            # WebSocket candles at the tail
        ("ws", range(140, 155)),            # refused over REST, overwrite ws, nothing new
        ("rest", range(155, 158)),          # REST replaces ws: ws rows go down
        ("archive", range(158, 170)),       # archive replaces the last ws rows, inserts more
        ("rest", range(165, 168)),          # REST over archive
        ("archive", range(0, 10)),          # archive refused over REST
        ("ws", [300, 5000, 90_000]),        # sparse: far wider than its candles
        ("rest", [5000, 200, 200, 201]),    # sparse, unordered, a duplicate
        ("ws", [-3, -2]),                   # before the first
        ("ws", [7001, 7000, 7001]),         # nothing there before, a duplicate
    ]
    for source, indexes in steps:
        write(db, "BTCUSDT", source, list(indexes))
        assert summary_of(db, "BTCUSDT", "1m") == truth(db, "BTCUSDT", "1m"), (source, indexes)
    write(db, "ETHUSDT", "ws", [1, 2, 3], live=True)     # the RETURNING path
    write(db, "ETHUSDT", "rest", [2, 3, 4], live=True)
    write(db, "ETHUSDT", "ws", [4, 5], live=True)        # one refused, one inserted
    assert summary_of(db, "ETHUSDT", "1m") == truth(db, "ETHUSDT", "1m") == (5, 2, T0 + MIN, T0 + 5 * MIN)


def test_random_mixes_of_sources_and_ranges_stay_exact(db):
    rng = random.Random(5)
    for _ in range(300):
        source = rng.choice(["rest", "ws", "archive"])
        lo = rng.randrange(0, 2000)
        if rng.random() < 0.2:
            indexes = rng.sample(range(0, 50_000), rng.randrange(1, 6))  # sparse
        else:
            indexes = [i for i in range(lo, lo + rng.randrange(1, 120)) if rng.random() < 0.9]
        if indexes:
            write(db, rng.choice(["BTCUSDT", "ETHUSDT"]), source, indexes, interval=rng.choice(["1m", "1h"]))
    for symbol in ("BTCUSDT", "ETHUSDT"):
        for interval in ("1m", "1h"):
            assert summary_of(db, symbol, interval) == truth(db, symbol, interval)


def test_rolled_back_upserts_leave_the_summary_as_it_was(db):
    write(db, "BTCUSDT", "ws", range(10))
    before = summary_of(db, "BTCUSDT", "1m")
    with pytest.raises(RuntimeError), db.transaction():
        db.upsert("BTCUSDT", "1m", "rest", [candle(T0 + i * MIN) for i in range(5, 20)])
        db.upsert("SOLUSDT", "1m", "rest", [candle(T0)])  # a table made in the rolled-back transaction
        raise RuntimeError("boom")
    assert summary_of(db, "BTCUSDT", "1m") == before == truth(db, "BTCUSDT", "1m")
    assert table_name("SOLUSDT", "1m") not in db.summaries()
    write(db, "SOLUSDT", "rest", range(3))  # made again: its summary starts again from zero
    assert summary_of(db, "SOLUSDT", "1m") == truth(db, "SOLUSDT", "1m") == (3, 0, T0, T0 + 2 * MIN)


def test_a_new_empty_table_has_a_zero_row_and_readers_see_summaries(db, tmp_path):
    with db.transaction():
        db.ensure_table("BTCUSDT", "1h")
    reader = Store.open_readonly(path=str(tmp_path / "k.sqlite"))
    try:
        s = reader.summaries()[table_name("BTCUSDT", "1h")]
        assert (s.rows, s.ws_rows, s.first_ms, s.last_ms) == (0, 0, None, None)
    finally:
        reader.close()


def make_old_file(path, tables: dict[tuple[str, str], list[tuple[int, str]]]) -> None:
    """A file as a writer before summaries left it: kline tables with rows, no meta_tables."""
    store = Store.open_writer(DatabaseConfig(path=str(path)))
    for (symbol, interval), rows in tables.items():
        for source in ("rest", "ws", "archive"):
            opens = [i for i, s in rows if s == source]
            if opens:
                write(store, symbol, source, opens, interval)
    store.close()
    conn = apsw.Connection(str(path))
    conn.execute("DROP TABLE meta_tables")
    conn.close()


@pytest.mark.parametrize("event", ["across", "rollback", "none"])
def test_old_tables_are_summed_in_slices_while_upserts_land_between_them(tmp_path, monkeypatch, event):
    """Each event restarts the table's sum, which hides an earlier mistake: one event per run."""
    monkeypatch.setattr(store_summary, "SUM_CHUNK_CANDLES", 100)
    path = tmp_path / "old.sqlite"
    rng = random.Random(9)
    make_old_file(path, {
        ("BTCUSDT", "1m"): [(i, rng.choice(["rest", "ws", "archive"])) for i in range(0, 1000) if i % 37],
        ("ETHUSDT", "1m"): [(i, "ws") for i in range(500, 520)],
    })
    store = Store.open_writer(DatabaseConfig(path=str(path)))
    try:
        assert store.summaries() == {}
        assert store.unsummarized() == sorted(table_name(s, "1m") for s in ("BTCUSDT", "ETHUSDT"))
        steps = 0
        tail_written = False
        ticks = iter(range(10**9))

        def one_chunk_clock():  # each call to summarize_step does exactly one chunk
            return next(ticks) % 2

        while store.summaries_pending:
            steps += 1
            store.summarize_step(1, one_chunk_clock)
            s = store._summing
            if (s is not None and s.next_lo is not None and not tail_written
                    and s.table == table_name("BTCUSDT", "1m") and truth(store, "BTCUSDT", "1m")[3] < s.next_lo - MIN):
                # the last chunk is counted and reaches past the newest row: a live candle lands there
                write(store, "BTCUSDT", "ws", [(s.next_lo - T0) // MIN - 1])
                tail_written = True
            if s is not None and s.next_lo is not None and s.table == table_name("BTCUSDT", "1m") and steps < 12:
                done_below = (s.next_lo - T0) // MIN
                if done_below > 4:
                    below = rng.randrange(0, done_below - 3)
                    write(store, "BTCUSDT", rng.choice(["rest", "ws"]), range(below, below + 3))  # counted
                if 37 * steps < done_below:
                    write(store, "BTCUSDT", "ws", [37 * steps])                             # a missing row, counted part
                write(store, "BTCUSDT", "ws", [done_below + 150])                           # not yet counted
                write(store, "BTCUSDT", "rest", [3000 + steps])                             # the tail grows
                write(store, "BTCUSDT", "rest", [-steps])                                   # a new first
                if steps == 3 and event == "across":
                    # across the counted edge, inserting rows missing below it (every 37th): restart
                    write(store, "BTCUSDT", "ws", range(done_below - 40, done_below + 2))
                if steps == 3 and event == "rollback":
                    with pytest.raises(RuntimeError), store.transaction():
                        store.upsert("BTCUSDT", "1m", "ws", [candle(T0 + 37 * MIN)])  # a missing row
                        raise RuntimeError("rolled back after touching the running sum")
            assert steps < 500
        assert tail_written
        assert steps > 12  # really in slices (BTC's ~1000 minutes and more in chunks of 100)
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert summary_of(store, symbol, "1m") == truth(store, symbol, "1m")
        write(store, "ETHUSDT", "rest", range(510, 530))  # after summing: kept up to date
        assert summary_of(store, "ETHUSDT", "1m") == truth(store, "ETHUSDT", "1m")
    finally:
        store.close()


def test_readers_of_a_file_without_meta_tables_get_no_summaries(tmp_path):
    path = tmp_path / "old.sqlite"
    make_old_file(path, {("BTCUSDT", "1m"): [(0, "rest"), (1, "ws")]})
    reader = Store.open_readonly(path=str(path))
    try:
        assert reader.summaries() == {}
        assert tuple(reader.count_table("BTCUSDT", "1m"))[2:] == (2, 1, T0, T0 + MIN)
    finally:
        reader.close()
