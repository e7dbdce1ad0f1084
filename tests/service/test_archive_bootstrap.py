"""Bootstrap from the simulator's archive end to end: `--once` with since_listing, faults on.

Scaled-down Done-when of issue 13: symbols listed months back, intervals 1m,1h,1d,1w,1M, one bad
checksum, one truncated zip, one missing day, one late monthly file and a day missing inside a
monthly file; every table an exact copy
of the truth, each bad file named in the log with how its range was filled, and a second run
downloads no archive file.
"""

from __future__ import annotations

import datetime as _dt

import pytest

from exactness import assert_exact, run_once
from harness import make_config
from kl_actors.core import archive, intervals

INTERVALS = ["1m", "1h", "1d", "1w", "1M"]
DAY = intervals.DAY_MS
# since_listing: depth never binds (each is more than the history the symbols have).
ALL_HISTORY = {"1m": 200_000, "1h": 5_000, "1d": 200, "1w": 40, "1M": 12}


def server_ms(sim):
    return sim.info()["server_time_ms"]


def planned_files(symbol, interval, onboard_ms, now_ms):
    first = intervals.align(interval, onboard_ms)
    last = intervals.last_closed_open(interval, now_ms)
    return archive.plan_range(symbol, interval, first, last, now_ms=now_ms, horizon_days=2).files


def archive_requests(stats) -> dict[str, int]:
    return {p: n for p, n in stats["requests_by_path"].items() if p.startswith("/data/futures/um/")}


@pytest.mark.slow
def test_since_listing_from_the_archive_with_faults_exact_and_second_run_downloads_nothing(workdir, sim_factory):
    now = _dt.datetime.now(_dt.timezone.utc)
    # Headers start mid-history: files before have none, files after have one.
    header_from = (now - _dt.timedelta(days=40)).strftime("%Y-%m-%d")
    sim = sim_factory(symbols=1, weight_limit=1_000_000, archive_header_from=header_from,
                      archive_cache=str(workdir / "archive-cache"))
    t0 = server_ms(sim)
    listings = {"ARCAUSDT": t0 - 75 * DAY + 5 * 3_600_000, "ARCBUSDT": t0 - 50 * DAY + 17 * 3_600_000 + 7 * 60_000}
    for symbol, onboard in listings.items():
        sim.admin("list", {"symbol": symbol, "onboard_ms": onboard})

    a_1m = planned_files("ARCAUSDT", "1m", listings["ARCAUSDT"], t0)
    b_1h = planned_files("ARCBUSDT", "1h", listings["ARCBUSDT"], t0)
    a_1h = planned_files("ARCAUSDT", "1h", listings["ARCAUSDT"], t0)
    late = next(f for f in a_1m if f.monthly)                 # its month comes as daily files
    bad_sum = next(f for f in a_1m if not f.monthly)          # tried twice, then REST
    truncated = next(f for f in b_1h if f.monthly)            # tried twice, then REST
    missing = [f for f in a_1h if not f.monthly][1]           # a day missing: REST
    b_1m = planned_files("ARCBUSDT", "1m", listings["ARCBUSDT"], t0)
    gapped = next(f for f in b_1m if f.monthly)                # a day missing inside a month: REST
    gap_day = gapped.start_ms + 9 * DAY
    sim.admin("faults", {"archive": [
        {"fault": "late", "pattern": late.name, "until_ms": t0 + 365 * DAY},
        {"fault": "bad_checksum", "pattern": bad_sum.name},
        {"fault": "truncated", "pattern": truncated.name},
        {"fault": "missing", "pattern": missing.name},
        {"fault": "gap", "pattern": gapped.name, "start_ms": gap_day, "end_ms": gap_day + DAY - 1},
    ]})

    config = make_config(
        workdir,
        exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url, "request_timeout_s": 5.0},
        symbols={"include": list(listings)},
        klines={"intervals": INTERVALS, "depth": dict(ALL_HISTORY), "since_listing": True},
        downloader={"processes": 2, "concurrency": 2, "lease_s": 20.0},
        archive={"base_url": sim.archive_url, "concurrency": 4},
    )
    sim.reset_stats()
    started = server_ms(sim)
    code, err = run_once(config, workdir, timeout=600)
    assert code == 0, err[-4000:]
    checked = assert_exact(workdir / "db.sqlite", sim, listings, ALL_HISTORY, started, server_ms(sim))
    assert checked > 75 * 1440

    lines = err.splitlines()

    def said(event, name):
        return [line for line in lines if f"event={event}" in line and name in line]

    assert said("archive_absent_fallback", late.name) and "daily files" in said("archive_absent_fallback", late.name)[0]
    assert said("archive_file_given_up", bad_sum.name), err[-3000:]
    assert "range filled from REST" in said("archive_file_given_up", bad_sum.name)[0]
    assert said("archive_file_failed", bad_sum.name) and "does not match" in said("archive_file_failed", bad_sum.name)[0]
    assert said("archive_file_given_up", truncated.name) and "broken zip" in said("archive_file_failed", truncated.name)[0]
    assert said("archive_absent_fallback", missing.name) and "REST" in said("archive_absent_fallback", missing.name)[0]

    gap_lines = said("archive_file_gap", gapped.name)
    assert gap_lines and f"missing={gap_day}-{gap_day + DAY - 60_000}" in gap_lines[0], err[-3000:]

    # Most history came from the archive: the rows say so, and REST asked little.
    stats = sim.stats()
    fetched = archive_requests(stats)
    assert any(late.name.replace(".zip", "") in p for p in fetched) and len(fetched) > 40
    from kl_actors.store import Store
    store = Store.open_readonly(path=str(workdir / "db.sqlite"))
    try:
        sources = [r[11] for r in store.candles("ARCAUSDT", "1m")]
    finally:
        store.close()
    assert sources.count("archive") > 0.9 * len(sources)
    summary = next(line for line in lines if "event=once_summary" in line)
    assert "archive_files=" in summary and "archive_mb=" in summary
    progress = [line for line in lines if "event=progress" in line and "archive_files_total=" in line]
    assert progress and "archive_mb_per_s=" in progress[-1] and "archive_eta_s=" in progress[-1]

    # Second run: the tables are complete; no archive file is asked again, at most a tail page.
    sim.reset_stats()
    started = server_ms(sim)
    code, err = run_once(config, workdir, timeout=300)
    assert code == 0, err[-4000:]
    stats = sim.stats()
    assert archive_requests(stats) == {}
    assert all(n <= 1 for n in stats["requests_by_symbol_interval"].values()), stats["requests_by_symbol_interval"]
    assert_exact(workdir / "db.sqlite", sim, listings, ALL_HISTORY, started, server_ms(sim))


@pytest.mark.slow
def test_unreachable_archive_is_logged_once_and_rest_fills_everything(workdir, sim_factory):
    from harness import free_port
    sim = sim_factory(symbols=1, weight_limit=1_000_000)
    t0 = server_ms(sim)
    listings = {"ARCZUSDT": t0 - 70 * DAY + 3 * 3_600_000}
    sim.admin("list", {"symbol": "ARCZUSDT", "onboard_ms": listings["ARCZUSDT"]})
    depth = {"1h": 5_000, "1d": 200}
    config = make_config(
        workdir,
        exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url, "request_timeout_s": 5.0},
        symbols={"include": list(listings)},
        klines={"intervals": list(depth), "depth": dict(depth), "since_listing": True},
        downloader={"processes": 1, "concurrency": 2, "lease_s": 20.0},
        archive={"base_url": f"http://127.0.0.1:{free_port()}", "concurrency": 4},  # nothing listens
    )
    started = server_ms(sim)
    code, err = run_once(config, workdir, timeout=300)
    assert code == 0, err[-4000:]
    assert_exact(workdir / "db.sqlite", sim, listings, depth, started, server_ms(sim))
    assert err.count("event=archive_unreachable") == 1, err[-3000:]
    assert "event=archive_file_given_up" not in err
