"""The whole USDT-M universe as the real exchange lists it (issue 12), end to end: TradFi perpetuals
(some with a daily closed session), symbols outside [A-Z0-9], a halted symbol, either 3d phase and
weeks on Mondays or on Thursdays (the service learns both from the exchange's candles),
`supervisor.py --once` against the simulator, every table compared with the simulator's truth."""

from __future__ import annotations

import apsw
import pytest
import requests

from exactness import assert_exact, run_once, stored_rows, trading_symbols
from kl_actors.core import intervals
from kl_actors.store import Store
from kl_actors.core.symbols import table_name
from harness import make_config

DEPTH = {"1m": 1500, "1h": 1000, "1d": 500, "3d": 300, "1w": 200, "1M": 60}


def listed(sim) -> dict[str, dict]:
    info = requests.get(sim.rest_url + "/fapi/v1/exchangeInfo", timeout=10).json()
    return {s["symbol"]: s for s in info["symbols"]
            if s["contractType"] in ("PERPETUAL", "TRADIFI_PERPETUAL") and s["quoteAsset"] == "USDT"}


def server_ms(sim) -> int:
    return sim.info()["server_time_ms"]


def window(interval, onboard_ms, phases, plan_ms):
    """[first, last] open times a plan made at `plan_ms` covers for a new table."""
    phase_ms = phases.get(interval)
    last = intervals.last_closed_open(interval, plan_ms, phase_ms)
    first = max(intervals.step(interval, last, -(DEPTH[interval] - 1)), intervals.align(interval, onboard_ms, phase_ms))
    return first, last


def assert_universe_exact(db_path, sim, symbols, phases, filled_at, topped_up_at=None) -> int:
    """Every table equals the simulator's truth from where the first run's plan began (made at
    one of the times in `filled_at`) to where the latest run's plan ended (`topped_up_at`)."""
    store = Store.open_readonly(path=str(db_path))
    checked = 0
    try:
        tables = store.kline_tables()
        for symbol, spec in symbols.items():
            for interval in DEPTH:
                rows = stored_rows(store, symbol, interval)
                firsts = {window(interval, spec["onboardDate"], phases, t)[0] for t in filled_at}
                lasts = {window(interval, spec["onboardDate"], phases, t)[1] for t in (topped_up_at or filled_at)}
                truths = [[r[:11] for r in sim.truth(symbol, interval, a, b)] for a in firsts for b in lasts]
                assert any(rows == truth for truth in truths), (
                    f"{symbol} {interval}: {len(rows)} rows from {rows[0][0] if rows else None}, truth "
                    f"{[(len(t), t[0][0] if t else None) for t in truths]}")
                if rows:
                    assert tables[symbol][interval] == table_name(symbol, interval)
                if interval in phases and rows:
                    assert {intervals.phase_of(interval, r[0]) for r in rows} == {phases[interval]}
                if interval == "1M" and rows:
                    assert all(intervals.is_aligned("1M", r[0]) for r in rows)
                checked += len(rows)
    finally:
        store.close()
    return checked


@pytest.mark.slow
@pytest.mark.parametrize("phase_days, week_days", [(1, 4), (0, 0)])  # weeks: Mondays, Thursdays
def test_whole_universe_exact_then_nothing_asked_for_complete_tables(workdir, sim_factory, phase_days, week_days):
    sim = sim_factory(symbols=12, tradfi_symbols=3, odd_symbols=3, halted_symbols=1, phase_3d_days=phase_days,
                      phase_1w_days=week_days, weight_limit=1_000_000)
    everything = listed(sim)
    trading = {s: v for s, v in everything.items() if v["status"] == "TRADING"}
    halted = {s: v for s, v in everything.items() if v["status"] == "TRADING_HALT"}
    assert len(trading) == 12 + 3 + 3 and len(halted) == 1
    assert {"XAUUSDT", "TSLAUSDT", "XAGUSDT", "币安人生USDT", "BtcUSDT", "BTC-USDT"} <= set(trading)
    phases = {"3d": phase_days * intervals.DAY_MS, "1w": week_days * intervals.DAY_MS}
    config = make_config(
        workdir,
        exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url, "request_timeout_s": 3.0},
        klines={"intervals": list(DEPTH), "depth": dict(DEPTH), "phase_3d_days": (phase_days + 1) % 3},
        downloader={"processes": 2, "concurrency": 2, "lease_s": 10.0})
    started = server_ms(sim)
    code, err = run_once(config, workdir)
    assert code == 0, err[-3000:]
    assert f"event=phase_3d epoch_day_mod_3={phase_days} source=exchange" in err
    weekday = "Monday" if week_days == 4 else "Thursday"
    assert f"event=phase_1w epoch_day_mod_7={week_days} opens={weekday} source=exchange" in err
    assert "event=month_alignment calendar=confirmed source=exchange" in err
    assert "symbols_rejected" not in err
    first_run = (started, server_ms(sim))
    checked = assert_universe_exact(workdir / "db.sqlite", sim, {**trading, **halted}, phases, first_run)
    assert checked > 18 * 2000

    db = workdir / "db.sqlite"
    with apsw.Connection(str(db)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE name LIKE 'k\\_x\\_%' ESCAPE '\\'")}
        bases = dict(conn.execute("SELECT symbol, table_base FROM meta_symbols"))
        statuses = dict(conn.execute("SELECT symbol, status FROM meta_symbols"))
        closed = conn.execute("SELECT count(*) FROM meta_holes WHERE symbol = 'XAUUSDT' AND interval IN ('1m', '1h') GROUP BY interval").fetchall()
    assert {f"k_{bases[s]}_1h" for s in ("币安人生USDT", "BtcUSDT", "BTC-USDT")} <= tables
    assert statuses[next(iter(halted))] == "TRADING_HALT"
    assert len(closed) == 2  # the daily closed session of XAUUSDT (1m and 1h): recorded, never faked

    # Second run: a table whose newest candle is still the last closed one gets no request at all;
    # a halted symbol gets none; a table where a candle closed since gets its one tail page.
    stored_last = {}
    store = Store.open_readonly(path=str(db))
    for symbol, by_interval in store.kline_tables().items():
        for interval in by_interval:
            stored_last[(symbol, interval)] = store.last_open_ms(symbol, interval)
    store.close()
    sim.reset_stats()
    started = server_ms(sim)
    code, err = run_once(config, workdir)
    ended = server_ms(sim)
    assert code == 0, err[-3000:]
    assert f"event=phase_3d epoch_day_mod_3={phase_days} source=stored" in err
    assert f"event=phase_1w epoch_day_mod_7={week_days} opens={weekday} source=stored" in err
    assert "event=month_alignment calendar=confirmed source=stored" in err
    asked = sim.stats()["requests_by_symbol_interval"]
    for key, count in asked.items():
        symbol, interval = key.rsplit(" ", 1)
        assert symbol not in halted, (key, count)
        last = stored_last.get((symbol, interval))
        assert last is not None, f"{key} asked but had no table"
        grid_moved = intervals.last_closed_open(interval, ended, phases.get(interval)) > last
        assert grid_moved and count == 1, (key, count, last)
    assert_universe_exact(db, sim, {**trading, **halted}, phases, first_run, (started, ended))


def test_months_off_the_calendar_are_refused_not_retried_and_the_rest_is_exact(workdir, sim_factory):
    """A 1M grid the exchange does not share with the calendar: 1M is neither planned nor fetched
    (not one 1M request after the probe), the run says so and ends incomplete; every other
    interval is exact."""
    sim = sim_factory(symbols=3, month_shift_days=3, weight_limit=1_000_000)
    depth = {"1h": 300, "1d": 60, "1M": 12}
    config = make_config(
        workdir,
        exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url, "request_timeout_s": 3.0},
        klines={"intervals": list(depth), "depth": dict(depth)},
        downloader={"processes": 1, "concurrency": 2, "lease_s": 10.0})
    started = server_ms(sim)
    code, err = run_once(config, workdir)
    ended = server_ms(sim)
    assert code == 1, err[-3000:]  # incomplete: 1M could not be fetched
    assert "event=month_alignment_contradicted" in err and "source=exchange" in err
    assert "event=not_fetched interval=1M" in err
    asked = sim.stats()["requests_by_symbol_interval"]
    assert sum(n for key, n in asked.items() if key.endswith(" 1M")) == 1  # the probe, nothing else
    store = Store.open_readonly(path=str(workdir / "db.sqlite"))
    try:
        for symbol in trading_symbols(sim):
            assert not stored_rows(store, symbol, "1M")
    finally:
        store.close()
    assert_exact(workdir / "db.sqlite", sim, trading_symbols(sim), {"1h": 300, "1d": 60}, started, ended,
                 tables_beyond={"1M"})
