"""Backfill benchmark: `python scripts/bench.py backfill`.

1. Against a simulator with the real weight limit (2400/min): candles per minute achieved by
   `supervisor.py --once`, divided by the ceiling for that limit and page size
   (limit / weight_for_limit(page) * page candles per minute), and the 429 count (must be 0).
2. With the limit lifted: end-to-end candles/s with 1, 2, 4 and 8 downloader processes.
3. `--egress N` (`python scripts/bench.py backfill --egress 2 [--symbols 16 --depth 100000]`): the
   same `--once` backfill at the real limit, first with one egress group (source address
   127.0.0.2, two downloaders), then with N groups (127.0.0.2, 127.0.0.3, ..., two downloaders
   each), each against a fresh simulator: candles per minute (per IP), 429/418 per IP, every
   table's row count and ends against the simulator's truth, and the ratio of the times.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from . import ROOT, service_config  # the package put the repository on sys.path
from harness import write_toml  # noqa: E402
from kl_actors import config as cfg  # noqa: E402
from kl_actors.core.budget import weight_for_limit  # noqa: E402
from kl_actors.sim.process import SimProcess  # noqa: E402
from kl_actors.store import Store  # noqa: E402


def _config(workdir: Path, sim: SimProcess, symbols_depth: int, processes: int,
            egress: list[cfg.EgressConfig] | None = None) -> Path:
    config = service_config(workdir, egress=egress or [],
                            exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
                            klines={"intervals": ["1m"], "depth": {"1m": symbols_depth}},
                            downloader={"processes": processes, "concurrency": 4})
    return write_toml(config, workdir / "bench.toml")


def _run_once(path: Path) -> tuple[int, str, float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--config", str(path), "--once"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    return proc.returncode, proc.stderr, time.perf_counter() - started


def _candles(err: str) -> int:
    m = re.search(r"event=once_summary tasks=\d+ candles=(\d+)", err)
    return int(m.group(1)) if m else 0


def at_real_limit(symbols: int = 100, depth: int = 20_000, limit: int = 2400) -> None:
    page = cfg.Config().downloader.page_limit
    ceiling_per_min = limit / weight_for_limit(page) * page
    workdir = Path(tempfile.mkdtemp(prefix="klb-"))
    try:
        with SimProcess(symbols=symbols, weight_limit=limit) as sim:
            code, err, seconds = _run_once(_config(workdir, sim, depth, processes=4))
            stats = sim.stats()
        candles = _candles(err)
        # The exchange's window is the calendar minute, so a run's first and last minutes are
        # partial (and a short run can even beat the ceiling by straddling two windows): the
        # figure that counts is candles served in each full minute in between.
        per_minute = [n for _, n in sorted(stats["candles_by_minute"].items(), key=lambda kv: int(kv[0]))]
        full = per_minute[1:-1]
        print(f"real limit {limit}/min, page {page} (weight {weight_for_limit(page)}), ceiling "
              f"{ceiling_per_min:,.0f} candles/min; {candles:,} candles in {seconds:.1f}s, exit {code}; "
              f"429: {stats['responses_by_status']['429']}, 418: {stats['responses_by_status']['418']}", flush=True)
        for n in full:
            print(f"  full minute: {n:,} candles = {n / ceiling_per_min:.3f} of the ceiling")
        if full:
            mean = sum(full) / len(full)
            print(f"  mean of {len(full)} full minutes: {mean:,.0f} candles/min, ratio {mean / ceiling_per_min:.3f}")
        print(f"  weight per minute window: {[w for _, w in sorted(stats['weight_by_ip_minute'].get('127.0.0.1', {}).items())]}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def lifted(symbols: int = 50, depth: int = 40_000) -> None:
    for processes in (1, 2, 4, 8):
        workdir = Path(tempfile.mkdtemp(prefix="klb-"))
        try:
            with SimProcess(symbols=symbols, weight_limit=10_000_000) as sim:
                code, err, seconds = _run_once(_config(workdir, sim, depth, processes))
            candles = _candles(err)
            # Anything that is not the happy path shows up here, next to the rate it cost.
            hiccups = {k: err.count(f"event={k}") for k in ("task_retry", "lease_expired", "throttled")}
            print(f"limit lifted, {processes} downloader(s) x 4 in flight: {candles:,} candles in {seconds:.1f}s "
                  f"(whole run incl. start-up) = {candles / seconds:,.0f} candles/s; exit {code}; "
                  f"{', '.join(f'{k} {v}' for k, v in hiccups.items())}", flush=True)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def _once_seconds(err: str) -> float:
    m = re.search(r"event=once_summary .*?seconds=([\d.]+)", err)
    return float(m.group(1)) if m else float("nan")


def _check_tables(db: Path, sim: SimProcess, depth: int) -> tuple[int, list[str]]:
    """Every 1m table holds `depth` rows (fewer for a symbol listed more recently: from its
    listing), contiguous, ending within two minutes of the simulator's newest closed candle, and
    equal to the truth at both ends and in the middle: (rows, problems)."""
    import requests

    info = sim.info()
    end_ms = info["server_time_ms"] - info["server_time_ms"] % 60_000 - 60_000
    listed = {s["symbol"]: s["onboardDate"] for s in
              requests.get(sim.rest_url + "/fapi/v1/exchangeInfo", timeout=10).json()["symbols"]
              if s["contractType"] == "PERPETUAL" and s["quoteAsset"] == "USDT" and s["status"] == "TRADING"}
    store = Store.open_readonly(path=str(db))
    problems, rows = [], 0
    try:
        tables = store.kline_tables()
        missing = sorted(set(listed) - set(tables))
        if missing:
            problems.append(f"no table for {','.join(missing[:5])}")
        for symbol in sorted(tables):
            stored = store.candles(symbol, "1m")
            rows += len(stored)
            first_possible = listed.get(symbol, 0) // 60_000 * 60_000  # the minute it was listed in
            want = min(depth, (stored[-1][0] - first_possible) // 60_000 + 1) if stored else depth
            if len(stored) != want:
                problems.append(f"{symbol}: {len(stored)} rows, expected {want}")
                continue
            for row in (stored[0], stored[len(stored) // 2], stored[-1]):
                truth = sim.truth(symbol, "1m", row[0], row[0])
                if not truth or [str(v) for v in truth[0][:11]] != [str(v) for v in row[:11]]:
                    problems.append(f"{symbol} {row[0]}: {row[:6]} != {truth[:1]}")
            if (stored[-1][0] - stored[0][0]) // 60_000 + 1 != len(stored):
                problems.append(f"{symbol}: open times not contiguous")
            if stored[-1][0] < end_ms - 2 * 60_000:
                problems.append(f"{symbol}: newest {stored[-1][0]} < {end_ms}")
    finally:
        store.close()
    return rows, problems


def egress_run(groups: int, symbols: int, depth: int, limit: int = 2400) -> dict:
    """One `--once` backfill through `groups` egress groups (127.0.0.2, .3, ...) at `limit`."""
    egress = [cfg.EgressConfig(name=f"lo{2 + i}", source_address=f"127.0.0.{2 + i}", downloaders=2)
              for i in range(groups)]
    workdir = Path(tempfile.mkdtemp(prefix="klb-"))
    try:
        with SimProcess(symbols=symbols, weight_limit=limit) as sim:
            config = _config(workdir, sim, depth, processes=2, egress=egress)
            # The exchange's budget is per calendar minute and a window's budget is spent in
            # seconds, so a run's time depends on when in the minute it starts: every run starts
            # at the same second (:00), the case least favourable to more groups.
            now = sim.info()["server_time_ms"]
            time.sleep((60_000 - now % 60_000) / 1000)
            code, err, wall_s = _run_once(config)
            stats = sim.stats()
            rows, problems = _check_tables(workdir / "db.sqlite", sim, depth)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return dict(groups=groups, code=code, wall_s=wall_s, once_s=_once_seconds(err), candles=_candles(err),
                stats=stats, rows=rows, problems=problems, shared=err.count("event=egress_shared_ip"),
                throttled=err.count("event=throttled"))


def _print_egress(run: dict, limit: int) -> None:
    page = cfg.Config().downloader.page_limit
    ceiling = limit / weight_for_limit(page) * page
    stats = run["stats"]
    print(f"{run['groups']} egress group(s): {run['candles']:,} candles, backfill {run['once_s']:.1f}s "
          f"(whole run {run['wall_s']:.1f}s), exit {run['code']}; rows {run['rows']:,}, table problems "
          f"{len(run['problems'])}{': ' + '; '.join(run['problems'][:3]) if run['problems'] else ''}; "
          f"throttled {run['throttled']}, egress_shared_ip {run['shared']}", flush=True)
    for ip, c in sorted(stats.get("by_ip", {}).items()):
        print(f"  {ip}: requests {c['requests']:,}, weight {c['weight']:,}, 429: {c['429']}, 418: {c['418']}")
    per_minute = sorted((int(m), n) for m, n in stats["candles_by_minute"].items())
    weights = {ip: {int(w): v for w, v in ws.items()} for ip, ws in stats["weight_by_ip_minute"].items()}
    for i, (minute, n) in enumerate(per_minute):
        edge = "partial" if i in (0, len(per_minute) - 1) else "full"
        by_ip = ", ".join(f"{ip} {ws.get(minute, 0)}" for ip, ws in sorted(weights.items()))
        print(f"  minute {time.strftime('%H:%M', time.gmtime(minute / 1000))} ({edge}): {n:,} candles = "
              f"{n / ceiling:.3f} of one IP's ceiling; weight {by_ip}")


def egress_compare(groups: int, symbols: int = 16, depth: int = 100_000, limit: int = 2400) -> None:
    """One group, then `groups` groups, same work: the ratio of the backfill times."""
    one = egress_run(1, symbols, depth, limit)
    _print_egress(one, limit)
    many = egress_run(groups, symbols, depth, limit)
    _print_egress(many, limit)
    print(f"{groups} groups vs 1: backfill {many['once_s']:.1f}s / {one['once_s']:.1f}s = "
          f"{many['once_s'] / one['once_s']:.3f} (whole run {many['wall_s'] / one['wall_s']:.3f}); "
          f"target <= 0.55 for 16 symbols x 1m depth 100,000", flush=True)


def run(real: bool = True, lift: bool = True, real_depth: int = 20_000) -> None:
    if real:
        at_real_limit(depth=real_depth)
    if lift:
        lifted()

