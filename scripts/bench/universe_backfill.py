"""The whole universe from empty, then again: `python scripts/bench.py universe`.

550 simulated symbols x 15 intervals (default depths), `--once`, the weight limit lifted,
`rediscover_s = 30` (a planning pass every 30 s while the backfill runs) and
`heartbeat_timeout_s = 2`: the scheduler must never be silent long enough to be restarted.
Prints for each run: exit status and wall time (target: exit 0 within 10 minutes), actor restarts
(target: none), candles stored, the slowest scheduler tick, and each planning pass's cost per table.
The second run starts on the first run's database (~5.6 M rows): only tails remain.
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

from kl_actors import config as cfg
from kl_actors.core import intervals
from kl_actors.sim.process import SimProcess

from . import ROOT, service_config

_PLANNED = re.compile(r"event=planned tasks=(\d+) .*?tables=(\d+) rows_checked=(\d+) busy_ms=([\d.]+) "
                      r"per_table_ms=([\d.]+) seconds=([\d.]+) slowest_tick_ms=([\d.]+)")


def _config(workdir: Path, sim: SimProcess) -> cfg.Config:
    return service_config(workdir, exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
                          klines={"intervals": list(intervals.INTERVALS)}, symbols={"rediscover_s": 30.0},
                          supervisor={"heartbeat_s": 0.5, "heartbeat_timeout_s": 2.0})


def _run_once(config: cfg.Config, workdir: Path, label: str, timeout_s: float) -> None:
    toml = workdir / "service.toml"
    toml.write_bytes(msgspec.toml.encode(config))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--config", str(toml), "--once"],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    wall = time.monotonic() - started
    log = proc.stderr
    restarts = len(re.findall(r"event=actor_started .*restarts=[1-9]", log))
    silent = log.count("event=actor_silent")
    which = sorted(set(re.findall(r"event=actor_(?:silent|exited) name=(\S+)", log)))
    summary = re.search(r"event=once_summary tasks=(\d+) candles=(\d+)", log)
    slowest = max([float(x) for x in re.findall(r"slowest_tick_ms=([\d.]+)", log)] or [0.0])
    print(f"{label}: exit {proc.returncode} in {wall:.0f} s ({wall / 60:.1f} min; target < 10 min), "
          f"restarts {restarts} ({','.join(which) or '-'}), silent {silent}, "
          f"tasks {summary.group(1) if summary else '?'}, candles {summary.group(2) if summary else '?'}, "
          f"slowest scheduler tick {slowest:.0f} ms (heartbeat timeout 2000 ms)")
    for m in _PLANNED.finditer(log):
        tasks, tables, rows, busy, per_table, seconds, tick = m.groups()
        print(f"  planning pass: {int(tables):,} tables, {int(rows):,} rows proven, {int(tasks):,} pages, "
              f"{float(busy):.0f} ms busy over {float(seconds):.1f} s, {float(per_table):.3f} ms per table, "
              f"slowest tick {float(tick):.0f} ms")
    if proc.returncode != 0:
        print("\n".join(log.splitlines()[-15:]))


def run(symbols: int = 550, timeout_s: float = 1200) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="kl-ub-", dir="/tmp"))
    try:
        with SimProcess(symbols=symbols, weight_limit=10**9) as sim:
            config = _config(workdir, sim)
            print(f"{symbols} symbols x {len(intervals.INTERVALS)} intervals, default depths, --once, "
                  f"limit lifted, rediscover_s=30, heartbeat_timeout_s=2")
            _run_once(config, workdir, "from empty", timeout_s)
            _run_once(config, workdir, "again (tails only)", timeout_s)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
