"""`supervisor.py status` as a real subprocess against databases the service filled from the
simulator: its numbers equal count(*) on the tables, lag and holes are told truthfully (an open
hole, then the confirmed exchange hole the service found while refilling it, with a kill -9 of
the writer in that run), `--json` carries the same numbers, and the exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import msgspec
import pytest

from exactness import run_once, trading_symbols
from kl_actors.core import intervals
from kl_actors.messages import Candle
from kl_actors.store import Store
from harness import ROOT, RunningService, backfill_config, pid_alive, wait_for, write_toml

DEPTH = {"1m": 600, "5m": 300, "1h": 200, "1d": 60}
COLUMNS = ["interval", "tables", "candles", "first_day", "first_time", "newest_day", "newest_time", "lag",
           "behind", "lagging", "holes", "missing", "exch_holes", "ws_rows", "delisted"]


def status(toml, *args, db=None):
    extra = ["--db", str(db)] if db else []
    proc = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "status", "--config", str(toml), *extra, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def interval_rows(text: str) -> dict[str, dict[str, str]]:
    """The per-interval table of the text output, by interval (numbers as printed)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("interval "))
    rows = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        cells = line.split()
        assert len(cells) == len(COLUMNS), line
        rows[cells[0]] = dict(zip(COLUMNS, cells))
    return rows


def counts(db_path, symbols, interval) -> int:
    store = Store.open_readonly(path=str(db_path))
    try:
        return sum(store.count(s, interval) for s in symbols)
    finally:
        store.close()


def number(cell: str) -> int:
    return int(cell.replace(",", ""))


def assert_same_numbers(text_rows, data):
    """The text and the JSON tell the same numbers."""
    by_interval = {r["interval"]: r for r in data["intervals"]}
    assert set(text_rows) == set(by_interval)
    for interval, row in text_rows.items():
        j = by_interval[interval]
        assert (number(row["tables"]), number(row["candles"]), number(row["behind"]), number(row["lagging"]),
                number(row["missing"]), number(row["exch_holes"]), number(row["ws_rows"]), number(row["delisted"])) == (
            j["tables"], j["candles"], j["lag_candles"], j["lagging"], j["missing"], j["exchange_holes"],
            j["ws_rows"], j["delisted"])


@pytest.mark.slow(30)
def test_status_counts_lag_holes_and_exit_codes(workdir, sim_factory):
    sim = sim_factory(symbols=8, weight_limit=1_000_000)
    symbols = sorted(trading_symbols(sim))
    assert len(symbols) == 8
    config = backfill_config(workdir, sim, DEPTH, klines={"hole_confirm_s": 1.0})
    code, err = run_once(config, workdir)
    assert code == 0, err[-3000:]
    toml = workdir / "once.toml"
    db = workdir / "db.sqlite"

    # 1. After a complete backfill: counts equal count(*), lag within one interval, no holes, exit 0.
    code, out, err = status(toml)
    assert code == 0, out + err
    assert err == ""
    assert "event=" not in out  # no log lines in the table for people
    rows = interval_rows(out)
    assert set(rows) == set(DEPTH)
    for interval, row in rows.items():
        assert number(row["tables"]) == 8
        assert number(row["candles"]) == counts(db, symbols, interval)
        assert number(row["behind"]) <= 1 and row["lagging"] == "0"
        assert (row["holes"], row["missing"], row["exch_holes"], row["delisted"]) == ("0", "0", "0", "0")
    assert "not running" in out and "current:" in out
    code, js, _ = status(toml, "--json")
    assert code == 0
    data = json.loads(js)
    assert data["exit"] == 0 and data["service"]["running"] is False
    assert_same_numbers(rows, data)
    for r in data["intervals"]:
        assert 0 <= r["lag_ms"] <= intervals.nominal_ms(r["interval"])

    # 2. An open hole: an older BTCUSDT 1h candle (the exchange's own) stored 30 hours before the
    # first one, as a writer would; status shows the 29 candles between as one open hole, exit 1.
    store = Store.open_writer(config.database)
    first = store.first_open_ms("BTCUSDT", "1h")
    old = intervals.step("1h", first, -30)
    row = sim.truth("BTCUSDT", "1h", old, old)[0]
    with store.transaction():
        store.upsert("BTCUSDT", "1h", "rest", [msgspec.convert(row, Candle)])
    store.close()
    gap = (intervals.next_open("1h", old), intervals.prev_open("1h", first))
    code, out, _ = status(toml)
    assert code == 1, out
    rows = interval_rows(out)
    assert (rows["1h"]["holes"], rows["1h"]["missing"]) == ("1", "29")
    assert number(rows["1h"]["candles"]) == counts(db, symbols, "1h")
    assert "NOT current" in out and "29 candle(s) missing" in out
    code, js, _ = status(toml, "--json", "--symbol", "BTCUSDT", "--interval", "1h")
    assert code == 1
    (table,) = json.loads(js)["tables"]
    assert (table["holes"], table["missing"], table["first_ms"]) == ([list(gap)], 29, old)

    # 3. The exchange has no candles for 5 hours inside that gap. A rerun (one more interval to
    # fetch, the writer killed with SIGKILL while it runs) refills the gap around them and finds
    # them missing on the exchange's page: recorded as a confirmed exchange hole.
    hole = (intervals.step("1h", old, 10), intervals.step("1h", old, 14))
    sim.add_hole("BTCUSDT", hole[0], intervals.next_open("1h", hole[1]))
    depth = {**DEPTH, "15m": 400}
    config2 = backfill_config(workdir, sim, depth, klines={"hole_confirm_s": 1.0})
    toml2 = write_toml(config2, workdir / "rerun.toml")
    sim.set_faults(latency_ms=500)  # a rerun long enough to watch and to kill the writer in
    service = RunningService(config2, workdir, ["--once"])
    try:
        writer = wait_for(lambda: (service.status().get("writer") or {}).get("pid"), 30, what="writer pid")
        wait_for(lambda: counts(db, ["BTCUSDT", "ETHUSDT"], "15m") if service.proc.poll() is None else "ended",
                 60, what="the first 15m rows of the rerun")
        assert service.proc.poll() is None, "the rerun ended before the writer could be killed in it"
        os.kill(writer, signal.SIGKILL)
        # While the service runs, status reads the same file and the supervisor's status.json.
        code, js, _ = status(toml2, "--json")
        running = json.loads(js)
        assert running["service"]["running"] is True, js
        assert running["service"]["supervisor_pid"] == service.proc.pid
        assert running["service"]["uptime_s"] is not None
        actors = {a["name"]: a for a in running["service"]["actors"]}
        assert set(actors) >= {"broker", "writer", "scheduler", "timesync", "downloader-1"}
        assert actors["scheduler"]["pid"] == service.status()["scheduler"]["pid"]
        assert service.proc.wait(timeout=180) == 0
    finally:
        code, err = service.stop()
        service.cleanup()
    assert "event=actor_exited name=writer" in err
    assert not pid_alive(writer)
    code, out, _ = status(toml2)
    assert code == 0, out
    rows = interval_rows(out)
    assert set(rows) == set(depth)
    for interval, row in rows.items():
        assert number(row["candles"]) == counts(db, symbols, interval), interval
        assert row["missing"] == "0" and number(row["behind"]) <= 1
    assert (rows["1h"]["exch_holes"], rows["1h"]["holes"]) == ("1", "0")
    code, js, _ = status(toml2, "--json", "--symbol", "BTCUSDT", "--interval", "1h")
    after = json.loads(js)
    assert after["service"]["running"] is False
    assert {a["name"]: a["restarts"] for a in after["service"]["actors"]}["writer"] == 1
    (table,) = after["tables"]
    assert table["exchange_holes"] == [list(hole)]
    assert (table["exchange_hole_candles"], table["missing"], table["holes"]) == (5, 0, None)
    assert table["candles"] == counts(db, ["BTCUSDT"], "1h") == table["expected"] - 5

    # 4. A database that cannot be read: exit 2 and one line on stderr, nothing on stdout.
    garbage = workdir / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database\n" * 100)
    for path, words in ((garbage, "not a database"), (workdir / "missing.sqlite", "does not exist")):
        code, out, err = status(toml2, db=path)
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and words in err, err
