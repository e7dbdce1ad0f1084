"""`supervisor.py export` as a real process on database files written through the store: DuckDB
reads the Parquet files and finds SQLite's rows and exact sums; a second run rewrites only the
months that changed; the database is never written (also from a read-only folder)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
import time
import urllib.parse
from decimal import Decimal
from pathlib import Path

import apsw
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import ROOT
from kl_actors.core import export_plan as plan
from kl_actors.core import intervals
from kl_actors.locks import PidLock
from kl_actors.store import COLUMNS, Store
from export_support import DUCK_SOURCE, duck_totals, fill, files, put, row, run_export, sqlite_totals, summary

MIN = 60_000
DECIMALS = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume",
            "taker_buy_quote_volume")
HOUR = 3_600_000
JAN_2026 = plan.month_start_ms(2026, 1)
FEB_2026 = plan.month_start_ms(2026, 2)


def minutes(start_ms: int, count: int, **kw) -> list[tuple]:
    return [row("1m", start_ms + i * MIN, **kw) for i in range(count)]


@pytest.fixture
def paths(tmp_path):
    return tmp_path / "db" / "klines.sqlite", tmp_path / "out"


def stored_month(db: Path, symbol: str, interval: str, month: tuple[int, int]) -> list[tuple]:
    store = Store.open_readonly(path=str(db))
    try:
        return store.candles(symbol, interval, *plan.month_bounds(*month))
    finally:
        store.close()


def test_edge_cases_read_back_exactly_by_duckdb_and_pyarrow(paths):
    db, out = paths
    # Year and month edges: a candle belongs to the month of its open time.
    put(db, "BTCUSDT", "1m", minutes(JAN_2026 - 3 * MIN, 6, close="87000.10")
        + minutes(FEB_2026 - 2 * MIN, 4, close="87010.25"))
    # Six decimals: read next to two-decimal files, DuckDB must widen, not round (union_by_name).
    put(db, "DOGEUSDT", "1m", minutes(JAN_2026 - 3 * MIN, 6, close="0.123456", volume="1200000"))
    put(db, "币安人生USDT", "1h", [row("1h", FEB_2026 + i * HOUR, close=f"0.{4000 + i:05d}") for i in range(-24, 24)])
    put(db, "BtcUSDT", "1m", minutes(FEB_2026, 3, close="1.5"))
    put(db, "A+B=CUSDT", "1m", minutes(FEB_2026, 2, close="3.25"))
    put(db, "BTCUSDT", "1M", [row("1M", plan.month_start_ms(2025, m), close=f"9{m}000.50") for m in (10, 11, 12)])
    # One month whose prices mix scales: written at the larger one. One table whose volumes need
    # 39 digits (the writer's rules allow 20 + 20): kept as strings.
    put(db, "MIXUSDT", "1m", minutes(JAN_2026, 2, close="100.1") + minutes(JAN_2026 + 2 * MIN, 2, close="100.25")
        + minutes(FEB_2026, 2, close="100.30"))
    put(db, "HUGEUSDT", "1m", minutes(FEB_2026, 2, volume="12345678901234567890.1234567890123456789"))
    code, err = run_export(db, out)
    assert code == 0, err[-3000:]

    assert duck_totals(out) == sqlite_totals(db)
    expected_dirs = {
        "interval=1m/symbol=BTCUSDT/year=2025/month=12", "interval=1m/symbol=BTCUSDT/year=2026/month=1",
        "interval=1m/symbol=BTCUSDT/year=2026/month=2", "interval=1m/symbol=DOGEUSDT/year=2025/month=12",
        "interval=1m/symbol=DOGEUSDT/year=2026/month=1", "interval=1h/symbol=币安人生USDT/year=2026/month=1",
        "interval=1h/symbol=币安人生USDT/year=2026/month=2", "interval=1m/symbol=BtcUSDT/year=2026/month=2",
        "interval=1m/symbol=A%2BB%3DCUSDT/year=2026/month=2", "interval=1M/symbol=BTCUSDT/year=2025/month=10",
        "interval=1M/symbol=BTCUSDT/year=2025/month=11", "interval=1M/symbol=BTCUSDT/year=2025/month=12",
        "interval=1m/symbol=MIXUSDT/year=2026/month=1", "interval=1m/symbol=MIXUSDT/year=2026/month=2",
        "interval=1m/symbol=HUGEUSDT/year=2026/month=2",
    }
    assert set(files(out)) == expected_dirs
    assert summary(err)["written"] == str(len(expected_dirs))
    assert "event=export_scales_mixed symbol=MIXUSDT interval=1m month=2026-01 column=close scales=1..2" in err
    assert "event=export_column_strings symbol=HUGEUSDT interval=1m month=2026-02 column=volume reason=too_many_digits" in err

    # Every value of every file against the stored row: decimals at the stored scale (their text
    # comes back unchanged; where scales mix, the value), strings past 38 digits, UTC ms timestamps.
    for folder in expected_dirs:
        keys = dict(part.split("=", 1) for part in folder.split("/"))
        symbol = urllib.parse.unquote(keys["symbol"])
        month = (int(keys["year"]), int(keys["month"]))
        table = pq.read_table(out / folder / plan.DATA_FILE)
        assert table.schema.field("open_time").type == pa.timestamp("ms", tz="UTC")
        assert table.schema.field("trades").type == pa.int64()
        mixed = symbol == "MIXUSDT" and month == (2026, 1)
        huge = symbol == "HUGEUSDT"
        for name in DECIMALS:
            assert pa.types.is_string(table.schema.field(name).type) == (huge and "volume" in name and "quote" not in name)
        if mixed:
            assert table.schema.field("close").type == pa.decimal128(18, 2)
        got = table.to_pylist()
        stored = stored_month(db, symbol, keys["interval"], month)
        assert len(got) == len(stored)
        for mine, theirs in zip(got, stored):
            assert int(mine["open_time"].timestamp() * 1000) == theirs[0]
            assert int(mine["close_time"].timestamp() * 1000) == theirs[6]
            values = [theirs[COLUMNS.index(name)] for name in DECIMALS]
            assert [Decimal(str(mine[name])) for name in DECIMALS] == [Decimal(v) for v in values]
            if not mixed:
                assert [str(mine[name]) for name in DECIMALS] == values
            assert (mine["trades"], mine["source"]) == (theirs[8], theirs[11])
    doge = pq.read_table(out / "interval=1m/symbol=DOGEUSDT/year=2026/month=1" / plan.DATA_FILE)
    assert doge.schema.field("close").type == pa.decimal128(18, 6)

    with duckdb.connect() as con:
        first_feb = con.sql(f"SELECT min(open_time) FROM {DUCK_SOURCE.format(out=out)} WHERE symbol = 'BTCUSDT' "
                            "AND interval = '1m' AND year = 2026 AND month = 2").fetchall()[0][0]
        assert first_feb == dt.datetime(2026, 1, 31, 23, 58, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=2)
        # DOGE's six decimals survive next to BTCUSDT's two, and the mixed month's values.
        sums = dict(con.sql(f"SELECT symbol, sum(close) FROM {DUCK_SOURCE.format(out=out)} "
                            "WHERE interval = '1m' GROUP BY symbol").fetchall())
    assert sums["DOGEUSDT"] == Decimal("0.123456") * 6
    assert sums["BTCUSDT"] == Decimal("87000.10") * 6 + Decimal("87010.25") * 4
    assert sums["MIXUSDT"] == Decimal("100.1") * 2 + Decimal("100.25") * 2 + Decimal("100.30") * 2


def test_second_export_rewrites_only_the_months_that_changed(paths):
    db, out = paths
    sep, oct_, nov = ((2025, m) for m in (9, 10, 11))
    for symbol in ("BTCUSDT", "ETHUSDT"):  # three settled months each, one candle an hour
        put(db, symbol, "1m", [row("1m", plan.month_start_ms(*sep) + i * HOUR, close=f"{50 + i % 7}.50")
                               for i in range(24 * 91)])
    code, err = run_export(db, out)
    assert code == 0, err[-3000:]
    assert summary(err)["written"] == "6"
    before = files(out)
    assert len(before) == 6

    # Nothing changed: nothing read, nothing written.
    code, err = run_export(db, out)
    assert code == 0, err[-3000:]
    s = summary(err)
    assert (s["written"], s["kept"], s["rows_read"], s["checked"]) == ("0", "6", "0", "0")
    assert files(out) == before

    # New candles in the newest month and one value changed in place there (REST over REST).
    nov_start = plan.month_start_ms(*nov)
    put(db, "ETHUSDT", "1m", [row("1m", nov_start + 30 * 24 * HOUR - i * MIN, close="60.00") for i in range(1, 6)])
    put(db, "ETHUSDT", "1m", [row("1m", nov_start + 5 * HOUR, close="99.99")])
    code, err = run_export(db, out)
    assert code == 0, err[-3000:]
    s = summary(err)
    eth_nov = plan.partition_dir("1m", "ETHUSDT", *nov)
    assert s["written"] == "1" and s["kept"] == "5"
    assert s["rows_read"] == str(len(stored_month(db, "ETHUSDT", "1m", nov)))
    after = files(out)
    assert {k for k in after if after[k] != before[k]} == {eth_nov}
    assert duck_totals(out) == sqlite_totals(db)

    # A WebSocket candle (a new row: written) that REST later replaces with other values (same
    # count: found because the month held a WebSocket candle, by content).
    btc_oct = plan.partition_dir("1m", "BTCUSDT", *oct_)
    late = plan.month_start_ms(*oct_) + 10 * HOUR + 30 * MIN
    put(db, "BTCUSDT", "1m", [row("1m", late, close="51.11")], source="ws")
    code, err = run_export(db, out)
    assert code == 0, err[-3000:]
    assert (summary(err)["written"], summary(err)["checked"]) == ("1", "0")
    mid = files(out)
    put(db, "BTCUSDT", "1m", [row("1m", late, close="51.12")], source="rest")
    code, err = run_export(db, out)
    assert code == 0, err[-3000:]
    s = summary(err)
    assert (s["written"], s["checked"], s["unchanged"]) == ("1", "1", "0")
    assert {k for k, v in files(out).items() if mid[k] != v} == {btc_oct}
    assert duck_totals(out) == sqlite_totals(db)
    # Its WebSocket candle is gone and it is old: from now on it is kept unread.
    code, err = run_export(db, out)
    assert code == 0, err[-3000:]
    assert (summary(err)["written"], summary(err)["checked"], summary(err)["rows_read"]) == ("0", "0", "0")

    # The documented limit: a settled month changed in place keeping its counts is not seen...
    conn = apsw.Connection(str(db))
    conn.execute("UPDATE k_btc_1m SET close = '77.77' WHERE open_time = ?", (plan.month_start_ms(*sep) + 3 * HOUR,))
    conn.close()
    code, err = run_export(db, out)
    assert code == 0 and summary(err)["written"] == "0"
    assert duck_totals(out) != sqlite_totals(db)
    # ... and --full rewrites everything.
    code, err = run_export(db, out, "--full")
    assert code == 0 and summary(err)["written"] == "6"
    assert duck_totals(out) == sqlite_totals(db)


def test_recent_months_are_checked_by_content(paths):
    db, out = paths
    newest = intervals.last_closed_open("1m", int(time.time() * 1000))
    put(db, "SOLUSDT", "1m", [row("1m", newest - i * MIN, close="150.125") for i in range(30)])
    code, err = run_export(db, out)
    assert code == 0, err[-3000:]
    months = int(summary(err)["written"])  # 1, or 2 in the first minutes of a month
    before = files(out)

    code, err = run_export(db, out)
    s = summary(err)
    assert (s["written"], s["checked"], s["unchanged"], s["rows_read"]) == ("0", str(months), str(months), "30")
    assert files(out) == before

    put(db, "SOLUSDT", "1m", [row("1m", newest, close="150.250")])  # the final re-check's answer
    code, err = run_export(db, out)
    s = summary(err)
    assert (s["written"], s["checked"], s["unchanged"]) == ("1", str(months), str(months - 1))
    newest_dir = plan.partition_dir("1m", "SOLUSDT", *plan.month_of(newest))
    assert {k for k, v in files(out).items() if before[k] != v} == {newest_dir}
    assert duck_totals(out) == sqlite_totals(db)


def _fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


@pytest.mark.parametrize("read_only_folder", [False, True])
def test_the_database_is_never_written(paths, read_only_folder):
    db, out = paths
    put(db, "BTCUSDT", "1m", minutes(JAN_2026 - 5 * MIN, 10))
    put(db, "ETHUSDT", "1h", [row("1h", JAN_2026 + i * HOUR) for i in range(30)])
    before = _fingerprint(db)
    listing = sorted(os.listdir(db.parent))
    protect = []
    if read_only_folder:
        if os.geteuid() == 0:  # root writes through file modes: the immutable attribute stops it
            for path in (db, db.parent):
                if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
                    pytest.skip("chattr +i is not available here")
                protect.append(path)
        else:
            db.chmod(0o444)
            db.parent.chmod(0o555)
        with pytest.raises(OSError):
            (db.parent / "probe").write_text("x")
    try:
        code, err = run_export(db, out)
        assert code == 0, err[-3000:]
        assert duck_totals(out) == sqlite_totals(db)
        code, err = run_export(db, out, "--full")
        assert code == 0, err[-3000:]
    finally:
        for path in protect:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        if read_only_folder and not protect:
            db.parent.chmod(0o755)
    assert _fingerprint(db) == before
    if read_only_folder:
        assert sorted(os.listdir(db.parent)) == listing  # not even a -wal or -shm file


def test_bad_input_is_one_line_and_a_clear_exit(paths, tmp_path):
    db, out = paths
    code, err = run_export(db, out)
    assert code == 2 and "does not exist" in err and err.count("\n") == 1
    put(db, "BTCUSDT", "1m", minutes(JAN_2026, 3))
    code, err = run_export(db, out, "--intervals", "2m")
    assert code == 2 and "unknown interval '2m'" in err and err.count("\n") == 1
    code, err = run_export(db, out, "--since", "yesterday")
    assert code == 2 and "--since" in err and err.count("\n") == 1
    # A symbol not in the database: one warning, the others are exported.
    code, err = run_export(db, out, "--symbols", "BTCUSDT,NOPEUSDT")
    assert code == 0 and "event=export_symbol_absent symbol=NOPEUSDT" in err and summary(err)["written"] == "1"
    # A damaged state file: said once, every month written again, a good state afterwards.
    (out / plan.STATE_FILE).write_text('{"version": 1, "tables": {"x": 5}}')
    code, err = run_export(db, out)
    assert code == 0 and "event=export_state_reset" in err and summary(err)["written"] == "1"
    assert plan.decode_state((out / plan.STATE_FILE).read_bytes()).tables
    # Another export holds the folder.
    with PidLock(str(out / "_kl_export.lock"), "test"):
        code, err = run_export(db, out)
    assert code == 2 and "already running" in err


def test_a_stored_value_that_is_no_decimal_is_one_line_and_kept_as_text(paths):
    db, out = paths
    put(db, "BTCUSDT", "1m", minutes(JAN_2026, 4) + minutes(FEB_2026, 2))
    conn = apsw.Connection(str(db))  # past the writer's checks: a hand edit
    conn.execute("UPDATE k_btc_1m SET close = 'n/a' WHERE open_time = ?", (JAN_2026 + MIN,))
    conn.close()
    code, err = run_export(db, out)
    assert code == 0, err[-3000:]
    assert ("event=export_column_strings symbol=BTCUSDT interval=1m month=2026-01 column=close "
            "reason=not_decimal") in err
    january = pq.read_table(out / plan.partition_dir("1m", "BTCUSDT", 2026, 1) / plan.DATA_FILE)
    assert january.column("close").to_pylist() == ["100.10", "n/a", "100.10", "100.10"]
    assert pa.types.is_decimal(january.schema.field("open").type)
    february = pq.read_table(out / plan.partition_dir("1m", "BTCUSDT", 2026, 2) / plan.DATA_FILE)
    assert february.schema.field("close").type == pa.decimal128(18, 2)


def test_since_and_filters_limit_the_months(paths):
    db, out = paths
    put(db, "BTCUSDT", "1m", minutes(JAN_2026 - 3 * MIN, 6) + minutes(FEB_2026, 2))
    put(db, "BTCUSDT", "1h", [row("1h", JAN_2026 + i * HOUR) for i in range(3)])
    put(db, "ETHUSDT", "1m", minutes(FEB_2026, 2))
    code, err = run_export(db, out, "--symbols", "BTCUSDT", "--intervals", "1m", "--since", "2026-01-15")
    assert code == 0, err[-3000:]
    assert set(files(out)) == {"interval=1m/symbol=BTCUSDT/year=2026/month=1",
                               "interval=1m/symbol=BTCUSDT/year=2026/month=2"}
    # A later full-scope run adds the rest and leaves those two alone.
    before = files(out)
    code, err = run_export(db, out)
    assert code == 0 and summary(err)["written"] == "3"
    assert all(files(out)[k] == v for k, v in before.items())
    assert duck_totals(out) == sqlite_totals(db)


def _counts(db: Path) -> dict[tuple[str, str], int]:
    store = Store.open_readonly(path=str(db))
    try:
        return {(c.symbol, c.interval): c.rows for c in store.coverage()}
    finally:
        store.close()


@pytest.mark.slow(60)
def test_ten_million_rows_killed_export_resumes_and_a_later_run_reads_only_the_changed_month(tmp_path):
    """Five tables of 2M candles (~3.8 years each). A run killed with SIGKILL leaves only whole
    files and a state that names them; the next run goes on from there; after new candles in one
    table's newest month, a run reads exactly that month's rows, whatever the database holds."""
    db, out = tmp_path / "big.sqlite", tmp_path / "out"
    start = plan.month_start_ms(2019, 1)
    per_table = 2_000_000
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "币安人生USDT")
    fill(db, symbols, start, per_table)
    months_per_table = len(plan.months_between(start, start + (per_table - 1) * MIN))
    total_months = len(symbols) * months_per_table

    proc = subprocess.Popen([sys.executable, str(ROOT / "supervisor.py"), "export", "--db", str(db), "--out", str(out)],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        progress = 0
        for line in proc.stderr:  # the third progress line comes after the first state save (5 s)
            progress += "event=progress" in line
            if progress == 3:
                break
        assert proc.poll() is None, "the export ended before it could be killed"
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    state = plan.decode_state((out / plan.STATE_FILE).read_bytes())
    recorded = sum(len(m) for m in state.tables.values())
    assert 0 < recorded < total_months
    for key, months in state.tables.items():
        symbol, interval = key.split(" ")
        for month, stamp in months.items():
            path = out / plan.partition_dir(interval, symbol, *plan.parse_month_key(month)) / plan.DATA_FILE
            assert path.stat().st_size == stamp.file_bytes
    for path in out.rglob("*.parquet"):  # every visible file is whole
        assert pq.read_metadata(path).num_rows > 0

    code, err = run_export(db, out)
    assert code == 0, err[-3000:]
    s = summary(err)
    assert int(s["kept"]) == recorded and int(s["written"]) == total_months - recorded
    assert not list((out / "_kl_tmp").glob("*.tmp"))
    duck = duck_totals(out)
    assert {k: v[0] for k, v in duck.items()} == _counts(db)

    # New candles at the end of one table and one candle of its newest month changed in place.
    last_open = start + (per_table - 1) * MIN
    put(db, "SOLUSDT", "1m", [row("1m", last_open + i * MIN, close="20100.00") for i in range(1, 4)])
    put(db, "SOLUSDT", "1m", [row("1m", last_open - 10 * MIN, close="1.00")])
    newest = plan.month_of(last_open)
    before = files(out)
    code, err = run_export(db, out)
    assert code == 0, err[-3000:]
    s = summary(err)
    month_rows = len(stored_month(db, "SOLUSDT", "1m", newest))
    assert (s["written"], s["kept"], s["rows_read"]) == ("1", str(total_months - 1), str(month_rows))
    assert {k for k, v in files(out).items() if before[k] != v} == {plan.partition_dir("1m", "SOLUSDT", *newest)}
    sol = sqlite_totals(db, only=("SOLUSDT", "1m"))
    assert {k: v for k, v in duck_totals(out).items() if k == ("SOLUSDT", "1m")} == sol
