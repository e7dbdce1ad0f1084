"""Archive bootstrap benchmark: `python scripts/bench.py archive`.

Symbols listed 3..N months back in the simulator (through `POST /_sim/list`), intervals
1m,1h,1d,1w,1M, `since_listing = true`, `--once` into an empty database twice: the first run
renders the simulator's archive files (cold), the second, into a fresh database, finds them
warm. For each run: wall time, candles stored, candles/s, REST weight spent against what REST
alone would have needed (every table in pages of 499 at weight 2), and the wall time against the
REST ceiling time for the same candles (598,800 candles a minute at the real limit).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from . import ROOT  # the package put the repository on sys.path
from kl_actors import config as cfg  # noqa: E402
from kl_actors.core import intervals  # noqa: E402
from kl_actors.core.budget import weight_for_limit  # noqa: E402
from kl_actors.sim.process import SimProcess  # noqa: E402
from kl_actors.store import Store  # noqa: E402

INTERVALS = ["1m", "1h", "1d", "1w", "1M"]
PAGE = 499
CEILING_PER_MIN = 2400 / weight_for_limit(PAGE) * PAGE  # 598,800


def _config(workdir: Path, sim: SimProcess, symbols: list[str]) -> Path:
    base = cfg.Config()
    r = msgspec.structs.replace
    config = r(base,
               exchange=r(base.exchange, rest_url=sim.rest_url, ws_url=sim.ws_url),
               symbols=r(base.symbols, include=symbols),
               klines=r(base.klines, intervals=INTERVALS, since_listing=True),
               downloader=r(base.downloader, processes=2, concurrency=4),
               archive=r(base.archive, base_url=sim.archive_url, concurrency=4),
               endpoints=r(base.endpoints, runtime_dir=str(workdir / "rt"), feed="tcp://127.0.0.1:0"),
               database=r(base.database, path=str(workdir / "db.sqlite")),
               log=r(base.log, level="INFO"))
    path = workdir / "bench.toml"
    path.write_bytes(msgspec.toml.encode(config))
    return path


def _stored(db: Path, symbols: list[str]) -> tuple[int, int, int]:
    """(candles, of them from the archive, weight REST alone would have spent)."""
    store = Store.open_readonly(path=str(db))
    total = archived = rest_only_weight = 0
    try:
        for symbol in symbols:
            for interval in INTERVALS:
                rows = store.candles(symbol, interval)
                total += len(rows)
                archived += sum(1 for row in rows if row[11] == "archive")
                rest_only_weight += math.ceil(len(rows) / PAGE) * weight_for_limit(PAGE)
    finally:
        store.close()
    return total, archived, rest_only_weight


def _one_run(sim: SimProcess, symbols: list[str], label: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="kla-"))
    try:
        config = _config(workdir, sim, symbols)
        sim.reset_stats()
        # The limiter's minute windows outlive a stats reset: count what this run adds.
        weight_before = sum(sim.stats()["weight_by_ip_minute"].get("127.0.0.1", {}).values())
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--config", str(config), "--once"],
                              cwd=ROOT, capture_output=True, text=True, timeout=3600)
        seconds = time.perf_counter() - started
        stats = sim.stats()
        weight = sum(stats["weight_by_ip_minute"].get("127.0.0.1", {}).values()) - weight_before
        files = sum(n for p, n in stats["requests_by_path"].items()
                    if p.startswith("/data/futures/um/") and p.endswith(".zip"))
        candles, archived, rest_only = _stored(workdir / "db.sqlite", symbols)
        ceiling_s = candles / CEILING_PER_MIN * 60
        print(f"{label}: exit {proc.returncode}, {candles:,} candles ({archived / max(candles, 1):.1%} from the archive, "
              f"{files} zips) in {seconds:.1f}s = {candles / seconds:,.0f} candles/s", flush=True)
        print(f"  REST weight {weight:,} vs {rest_only:,} for REST alone = {weight / max(rest_only, 1):.2%}; "
              f"wall {seconds:.1f}s vs REST ceiling time {ceiling_s:.1f}s = {ceiling_s / seconds:.1f}x shorter",
              flush=True)
        if proc.returncode:
            print(proc.stderr[-2000:])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(symbols: int = 12, months_max: int = 14, cache_dir: str = "") -> None:
    cache = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="kla-cache-"))
    try:
        with SimProcess(symbols=1, weight_limit=10_000_000, archive_cache=str(cache)) as sim:
            now = sim.info()["server_time_ms"]
            names = [f"ARC{i:02d}USDT" for i in range(symbols)]
            for i, name in enumerate(names):
                # Listings spread from 3 to months_max months back, at odd hours.
                months = 3 + (months_max - 3) * i / max(symbols - 1, 1)
                onboard = now - int(months * 30.4 * intervals.DAY_MS) + (i * 7919 % 86_400) * 1000
                sim.admin("list", {"symbol": name, "onboard_ms": onboard})
            _one_run(sim, names, "cold archive (files rendered on first ask)")
            _one_run(sim, names, "warm archive")
    finally:
        if not cache_dir:
            shutil.rmtree(cache, ignore_errors=True)
