"""Backfill benchmark: `python scripts/bench.py backfill`.

1. Against a simulator with the real weight limit (2400/min): candles per minute achieved by
   `supervisor.py --once`, divided by the ceiling for that limit and page size
   (limit / weight_for_limit(page) * page candles per minute), and the 429 count (must be 0).
2. With the limit lifted: end-to-end candles/s with 1, 2, 4 and 8 downloader processes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from . import ROOT  # the package put the repository on sys.path
from kl_actors import config as cfg  # noqa: E402
from kl_actors.core.budget import weight_for_limit  # noqa: E402
from kl_actors.sim.process import SimProcess  # noqa: E402


def _config(workdir: Path, sim: SimProcess, symbols_depth: int, processes: int) -> Path:
    base = cfg.Config()
    r = msgspec.structs.replace
    config = r(base,
               exchange=r(base.exchange, rest_url=sim.rest_url, ws_url=sim.ws_url),
               klines=r(base.klines, intervals=["1m"], depth={"1m": symbols_depth}),
               downloader=r(base.downloader, processes=processes, concurrency=4),
               endpoints=r(base.endpoints, runtime_dir=str(workdir / "rt"), feed="tcp://127.0.0.1:0"),
               database=r(base.database, path=str(workdir / "db.sqlite")),
               log=r(base.log, level="INFO"))
    path = workdir / "bench.toml"
    path.write_bytes(msgspec.toml.encode(config))
    return path


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


def run(real: bool = True, lift: bool = True) -> None:
    if real:
        at_real_limit()
    if lift:
        lifted()
