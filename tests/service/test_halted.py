"""A halted symbol (TRADING_HALT) in the live service: its history kept and fetched once, nothing
asked again while it is halted, never called delisted; trading again, it is resumed (not listed
as new) and its tail fetched; only leaving both lists delists it."""

from __future__ import annotations

import pytest

from kl_actors.core import intervals
from kl_actors.store import Store, StoreError
from harness import make_config, offset_before_boundary, wait_for


def stored(db_path, symbol, interval):
    try:
        store = Store.open_readonly(path=str(db_path))
    except StoreError:
        return []
    try:
        return [list(r[:11]) for r in store.candles(symbol, interval)]
    finally:
        store.close()


@pytest.mark.slow(30)
def test_halted_symbol_kept_not_refetched_resumed_not_listed(workdir, sim_factory, service_factory):
    # Started 25 s before a minute boundary: the resume comes a little before it, so the first
    # candle after the halt closes seconds later, not up to a minute.
    sim = sim_factory(symbols=3, halted_symbols=1, weight_limit=1_000_000,
                      clock_offset_ms=offset_before_boundary("1m", 25_000))
    halted = "HALTAUSDT"
    assert sim.market().specs[halted].status == "TRADING_HALT"
    config = make_config(
        workdir,
        exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url, "request_timeout_s": 3.0},
        klines={"intervals": ["1m", "1h"], "depth": {"1m": 100, "1h": 100}},
        symbols={"rediscover_s": 1.0},
        downloader={"processes": 1, "concurrency": 2, "lease_s": 10.0})
    service = service_factory(config)
    db = workdir / "db.sqlite"
    log = service.log_text

    # Its history up to the halt is fetched once, as for a new symbol.
    halt_ms = sim.market().specs[halted].delist_ms
    truth_until_halt = [r[:11] for r in sim.truth(halted, "1h", 0, halt_ms)]
    wait_for(lambda: stored(db, halted, "1h") and stored(db, halted, "1h")[-1][0] == truth_until_halt[-1][0],
             timeout=30, what="the halted symbol's history")
    rows = stored(db, halted, "1h")
    assert rows == truth_until_halt[-len(rows):]
    assert " halted=1 " in next(line for line in log().splitlines() if "event=discovered " in line)

    # Several rediscoveries and planning passes later: not asked again, not delisted, not listed.
    seen = log().count("event=discovered ")
    wait_for(lambda: log().count("event=planned ") >= 1, timeout=30, what="a planning pass")
    before = sim.stats()["requests_by_symbol_interval"]
    assert before.get(f"{halted} 1h", 0) >= 1 and before.get(f"{halted} 1m", 0) >= 1, before  # 1m: empty window
    wait_for(lambda: log().count("event=discovered ") >= seen + 3, timeout=30, what="three more discoveries")
    asked = sim.stats()["requests_by_symbol_interval"]
    assert {k: v for k, v in asked.items() if k.startswith(halted)} == \
        {k: v for k, v in before.items() if k.startswith(halted)}, (before, asked)
    assert "symbol_delisted" not in log() and "symbols_listed" not in log()

    # Trading again (from now on): resumed, not listed; its new candles are fetched, the halt
    # stays empty (recorded from the first page), nothing invented.
    resumed_ms = sim.info()["server_time_ms"]
    sim.resume(halted, resumed_ms)
    wait_for(lambda: f"event=symbol_resumed symbol={halted}" in log(), timeout=30, what="symbol_resumed")
    first_new = intervals.align("1m", resumed_ms)  # the first minute not wholly inside the halt
    try:
        wait_for(lambda: stored(db, halted, "1m") and stored(db, halted, "1m")[-1][0] >= first_new,
                 timeout=90, what="a candle after the halt")
    except AssertionError:
        raise AssertionError("\n".join(line for line in log().splitlines() if halted in line or "boundary" in line)[-4000:])
    rows = stored(db, halted, "1m")
    assert rows == [r[:11] for r in sim.truth(halted, "1m", rows[0][0], rows[-1][0])]
    assert "symbols_listed" not in log() and "symbol_delisted" not in log()
    rows = stored(db, halted, "1h")

    # Leaving both lists (SETTLING) is a delisting; the data stays.
    sim.delist(halted)
    wait_for(lambda: f"event=symbol_delisted symbol={halted}" in log(), timeout=30, what="symbol_delisted")
    assert stored(db, halted, "1h")[:len(rows)] == rows
    code, _ = service.stop()
    assert code == 0
