"""The top of the day with the whole universe: `python scripts/bench.py live --universe`.

550 simulated symbols x 15 intervals, `--stream-only`, the real weight limit (2400/min), the
simulator's clock set so 00:00 UTC comes `--lead-s` after start and its WebSocket pushing every
5 s (8,250 streams). Runs `--minutes` of server time after midnight, then prints, from the
scheduler's `boundary_done` / `boundary_late` lines:
- per interval that closed at midnight: close -> last REST confirmation (targets: within 4 min);
- for each 1m boundary after midnight: the same (target: within 10 s, midnight included);
- 429/418 answers and the highest weight of any minute (from the simulator's `/_sim/stats`);
- whether every table is an exact copy of the simulator's truth, `source=rest` for every candle
  older than the re-check delay (checked table by table after the service stopped).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

from kl_actors import config as cfg
from kl_actors.core import intervals
from kl_actors.sim.process import SimProcess
from kl_actors.store import Store

from . import service_config
from .live import Service

ALL_INTERVALS = list(intervals.INTERVALS)
_DONE = re.compile(r"event=boundary_done boundary_ms=(\d+) interval=(\w+) tasks=(\d+) failed=(\d+) "
                   r"lag_p50_ms=(-?\d+) lag_max_ms=(-?\d+)")
_LATE = re.compile(r"event=boundary_late boundary_ms=(\d+) interval=(\w+) unconfirmed=(\d+)")


def _config(workdir: Path, sim: SimProcess) -> cfg.Config:
    return service_config(workdir, exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
                          klines={"intervals": ALL_INTERVALS}, mode="stream-only")


def _exact(config: cfg.Config, sim: SimProcess, started_ms: int, ended_ms: int) -> tuple[int, list[str]]:
    """Rows checked and problems: a candle that closed during the run and is missing, differs from
    truth, or is still `ws` although older than the re-check delay."""
    final_before = ended_ms - config.live.final_recheck_ms - 30_000
    problems: list[str] = []
    checked = 0
    store = Store.open_readonly(path=config.database.path)
    try:
        for symbol, by_interval in sorted(store.kline_tables().items()):
            for interval in by_interval:
                first = intervals.next_boundary(interval, started_ms)  # first close after start
                last = intervals.last_closed_open(interval, final_before)
                if last < intervals.prev_open(interval, first):
                    continue
                lo = intervals.prev_open(interval, first)
                rows = store.candles(symbol, interval, lo, last)
                truth = sim.truth(symbol, interval, lo, last)
                checked += len(rows)
                if [list(r[:11]) for r in rows] != [t[:11] for t in truth]:
                    problems.append(f"{symbol} {interval}: {len(rows)} rows, truth {len(truth)}")
                elif any(r[11] != "rest" for r in rows):
                    problems.append(f"{symbol} {interval}: a candle older than the re-check is still ws")
    finally:
        store.close()
    return checked, problems


def run(symbols: int = 550, minutes: int = 6, lead_s: float = 50.0) -> None:
    local = int(time.time() * 1000)
    midnight_local = intervals.next_boundary("1d", local + int(lead_s * 1000) + 30_000)
    offset = midnight_local - int(lead_s * 1000) - local - 30_000  # sim start-up takes a moment
    workdir = Path(tempfile.mkdtemp(prefix="kl-ubench-", dir="/tmp"))
    try:
        with SimProcess(symbols=symbols, weight_limit=2400, ws_push_ms=5000, clock_offset_ms=offset,
                        max_streams_per_conn=200) as sim:
            server_now = sim.info()["server_time_ms"]
            midnight = intervals.next_boundary("1d", server_now)
            config = _config(workdir, sim)
            print(f"{symbols} symbols x {len(ALL_INTERVALS)} intervals, stream-only, limit 2400; "
                  f"00:00 UTC in {(midnight - server_now) / 1000:.0f} s; running {minutes} min after it", flush=True)
            service = Service(config, workdir, None)
            try:
                service.wait_started(60)
                end = midnight + minutes * 60_000
                service.wait(lambda: sim.info()["server_time_ms"] >= end, (end - server_now) / 1000 + 120,
                             "the end of the run")
            finally:
                code = service.finish()
            log = service.log_text()
            stats = sim.stats()
            checked, problems = _exact(config, sim, server_now, sim.info()["server_time_ms"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    done = {(int(m[1]), m[2]): (int(m[3]), int(m[4]), int(m[6])) for m in _DONE.finditer(log)}
    late = {(int(m[1]), m[2]): int(m[3]) for m in _LATE.finditer(log)}
    print(f"service exit {code}")
    print("\nintervals closing at 00:00: close -> last REST confirmation")
    print(f"{'interval':>8} {'candles':>8} {'failed':>6} {'max s':>8}")
    for interval in intervals.closing_at(midnight, ALL_INTERVALS):
        entry = done.get((midnight, interval))
        text = f"{entry[0]:>8} {entry[1]:>6} {entry[2] / 1000:>8.1f}" if entry else \
            f"{'-':>8} {'-':>6} {'not done':>8} ({late.get((midnight, interval), '?')} unconfirmed at the deadline)"
        print(f"{interval:>8} {text}")
    print("\n1m boundaries: close -> last REST confirmation")
    for k in range(minutes):
        boundary = midnight + k * 60_000
        entry = done.get((boundary, "1m"))
        print(f"  00:{k:02d}  " + (f"{entry[0]} candles, max {entry[2] / 1000:.1f} s" if entry else "not done"))
    weights = stats["weight_by_ip_minute"].get("127.0.0.1", {})
    statuses = stats["responses_by_status"]
    print(f"\n429: {statuses.get('429', 0)}  418: {statuses.get('418', 0)}  "
          f"highest minute weight: {max(weights.values()) if weights else 0}")
    print(f"exact: {checked} rows checked, {len(problems)} tables wrong" +
          "".join(f"\n  {p}" for p in problems[:10]))
