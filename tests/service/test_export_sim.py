"""The export of a database the service filled from the simulator (`--once`): DuckDB finds the
simulator's truth (through SQLite's rows and exact sums), also for a non-ASCII symbol; after the
next minute's candles only the months that grew are written again."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from exactness import assert_exact, run_once, trading_symbols
from export_support import duck_totals, files, run_export, sqlite_totals, summary
from harness import ROOT, backfill_config, server_ms, wait_for
from kl_actors.core import export_plan as plan
from kl_actors.core import intervals
from kl_actors.store import Store

DEPTH = {"1m": 1500, "1h": 1000}  # 1h: about six weeks, across at least one month's end


def newest_months(db) -> dict[str, tuple[int, int, int]]:
    """Partition folder of every table's newest month -> (rows, first, last open time) in it."""
    store = Store.open_readonly(path=str(db))
    try:
        found = {}
        for symbol, by_interval in store.kline_tables().items():
            for interval in by_interval:
                month = plan.month_of(store.first_last(symbol, interval)[1])
                found[plan.partition_dir(interval, symbol, *month)] = store.range_stats(
                    symbol, interval, *plan.month_bounds(*month))
        return found
    finally:
        store.close()


def assert_readme_query(db, out) -> None:
    """The README's DuckDB query, as printed there, gives SQLite's figures (exact decimals)."""
    import duckdb

    sql = (ROOT / "README.md").read_text().split("-- DuckDB\n", 1)[1].split("```", 1)[0]
    store = Store.open_readonly(path=str(db))
    rows = store.candles("BTCUSDT", "1m")
    store.close()
    year = dt.datetime.fromtimestamp(rows[-1][0] / 1000, dt.timezone.utc).year
    sql = sql.replace("'exports/", f"'{out}/").replace("year = 2026", f"year = {year}")
    want: dict[dt.date, list] = {}
    for r in rows:
        day = dt.datetime.fromtimestamp(r[0] / 1000, dt.timezone.utc)
        if day.year == year:
            entry = want.setdefault(day.date(), [Decimal(r[2]), Decimal(0)])
            entry[0] = max(entry[0], Decimal(r[2]))
            entry[1] += Decimal(r[5])
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        got = {day.date(): [high, volume] for symbol, day, high, volume in con.sql(sql).fetchall()}
    assert got == want and got


@pytest.mark.slow(50)
def test_export_of_a_simulator_backfill_equals_truth_and_rewrites_only_what_grew(workdir, sim_factory):
    sim = sim_factory(symbols=3, odd_symbols=1, weight_limit=1_000_000)
    symbols = trading_symbols(sim)
    assert "币安人生USDT" in symbols
    config = backfill_config(workdir, sim, DEPTH)
    db, out = workdir / "db.sqlite", workdir / "export"
    started = server_ms(sim)
    code, err = run_once(config, workdir)
    assert code == 0, err[-3000:]
    assert_exact(db, sim, symbols, DEPTH, started, server_ms(sim))  # the database is the truth

    code, err = run_export(db, out)
    assert code == 0, err[-3000:]
    assert "event=progress" in err
    totals = sqlite_totals(db)
    assert set(totals) == {(s, i) for s in symbols for i in DEPTH}
    assert duck_totals(out) == totals
    # And straight against the simulator's own candles, for the non-ASCII symbol.
    store = Store.open_readonly(path=str(db))
    first, last = store.first_last("币安人生USDT", "1h")
    store.close()
    truth = sim.truth("币安人生USDT", "1h", first, last)
    assert duck_totals(out)[("币安人生USDT", "1h")] == (len(truth), sum((Decimal(r[4]) for r in truth), Decimal(0)))
    hourly_months = {k for k in files(out) if k.startswith("interval=1h/symbol=BTCUSDT/")}
    assert len(hourly_months) >= 2
    assert_readme_query(db, out)

    # Unchanged: only the months holding candles closed within a day are read, none is written.
    before = files(out)
    code, err = run_export(db, out)
    s = summary(err)
    assert code == 0 and s["written"] == "0" and s["checked"] == s["unchanged"] != "0"
    assert int(s["kept"]) == len(before) - int(s["checked"])
    assert files(out) == before

    # The next minute's candles: the service appends them; the export writes those months again.
    grown_before = newest_months(db)
    boundary = intervals.next_boundary("1m", server_ms(sim))
    wait_for(lambda: server_ms(sim) >= boundary + 2_000, timeout=75, what="the next minute's close")
    code, err = run_once(config, workdir)
    assert code == 0, err[-3000:]
    grown = {k for k, v in newest_months(db).items() if grown_before.get(k) != v}
    assert {f"interval=1m/symbol={plan.partition_value(s)}" for s in symbols} <= {k.rsplit("/", 2)[0] for k in grown}
    code, err = run_export(db, out)
    assert code == 0, err[-3000:]
    after = files(out)
    assert {k for k in after if before.get(k) != after[k]} == grown
    assert summary(err)["written"] == str(len(grown))
    assert duck_totals(out) == sqlite_totals(db)
