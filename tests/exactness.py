"""Helpers for end-to-end backfill tests: run `supervisor.py --once`, compare the file with truth."""

from __future__ import annotations

import subprocess
import sys

from kl_actors.core import intervals
from kl_actors.store import Store
from harness import ROOT, write_toml


def run_once(config, workdir, timeout=240, extra=()):
    toml = write_toml(config, workdir / "once.toml")
    proc = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--config", str(toml), "--once", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stderr


def trading_symbols(sim) -> dict[str, int]:
    """symbol -> onboardDate of the simulator's trading USDT perpetuals."""
    import requests

    info = requests.get(sim.rest_url + "/fapi/v1/exchangeInfo", timeout=10).json()
    return {s["symbol"]: s["onboardDate"] for s in info["symbols"]
            if s["contractType"] == "PERPETUAL" and s["quoteAsset"] == "USDT" and s["status"] == "TRADING"}


def stored_rows(store, symbol, interval, start_ms=None, end_ms=None):
    """The 11 value columns as stored (the exchange's always-"0" `ignore` field is not kept)."""
    rows = store.candles(symbol, interval, start_ms, end_ms)
    assert all(r[11] in ("rest", "ws", "archive") for r in rows)
    return [list(r[:11]) for r in rows]


def truth_rows(sim, symbol, interval, start_ms, end_ms):
    rows = sim.truth(symbol, interval, start_ms, end_ms)
    assert all(r[11] == "0" for r in rows)
    return [r[:11] for r in rows]


def assert_exact(db_path, sim, symbols: dict[str, int], depth: dict[str, int], started_ms: int, ended_ms: int,
                 holes_allowed: bool = False, tables_beyond: set[str] = frozenset()):
    """Every table equals the simulator's truth candle by candle: no missing, extra or altered row.
    `tables_beyond`: intervals whose tables may exist (made ahead) but are not compared here."""
    store = Store.open_readonly(path=str(db_path))
    try:
        tables = store.kline_tables()
        assert set(tables) == set(symbols), f"tables for {set(tables) ^ set(symbols)} differ"
        checked = 0
        for symbol, onboard in symbols.items():
            assert set(tables[symbol]) - set(tables_beyond) == set(depth)
            for interval, want in depth.items():
                rows = stored_rows(store, symbol, interval)
                assert rows, f"{symbol} {interval} empty"
                last = rows[-1][0]
                # The newest stored candle is the last one closed at some moment of the run.
                assert intervals.last_closed_open(interval, started_ms) <= last <= intervals.last_closed_open(interval, ended_ms)
                # The depth counts back from the newest closed candle when the table was planned,
                # some moment of the run: a minute closing meanwhile moves it by one.
                listed = intervals.align(interval, onboard)
                earliest = max(intervals.step(interval, intervals.last_closed_open(interval, started_ms), -(want - 1)), listed)
                latest = max(intervals.step(interval, last, -(want - 1)), listed)
                assert earliest <= rows[0][0] <= latest, f"{symbol} {interval} starts at {rows[0][0]}, not in [{earliest}, {latest}]"
                truth = truth_rows(sim, symbol, interval, rows[0][0], last)
                assert len(rows) == len(truth), f"{symbol} {interval}: {len(rows)} rows, truth {len(truth)}"
                assert rows == truth, f"{symbol} {interval} differs from truth"
                checked += len(rows)
        return checked
    finally:
        store.close()
