"""Archive bootstrap benchmark: `python scripts/bench.py archive`.

Symbols listed 3..N months back in the simulator (through `POST /_sim/list`), intervals
1m,1h,1d,1w,1M, `since_listing = true`, `--once` into an empty database twice: the first run
renders the simulator's archive files (cold), the second, into a fresh database, finds them
warm. For each run: wall time, candles stored, candles/s, REST weight spent against what REST
alone would have needed (every table in pages of 499 at weight 2), and the wall time against the
REST ceiling time for the same candles (598,800 candles a minute at the real limit), and where
the CPU went: seconds and µs per candle for the writer, the downloaders, the simulator and the
rest (sampled from /proc while the run lasts, so the last fraction of a second is not counted),
and the machine's load average, since the simulator and the service share its cores with
whatever else runs.

`--cache DIR` keeps the rendered files: listings are placed relative to today 00:00 UTC, so a
later run on the same day finds every file warm.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


from . import ROOT, service_config  # the package put the repository on sys.path
from harness import write_toml  # noqa: E402
from kl_actors.core import intervals  # noqa: E402
from kl_actors.core.budget import weight_for_limit  # noqa: E402
from kl_actors.sim.process import SimProcess  # noqa: E402
from kl_actors.store import Store  # noqa: E402

INTERVALS = ["1m", "1h", "1d", "1w", "1M"]
PAGE = 499
CEILING_PER_MIN = 2400 / weight_for_limit(PAGE) * PAGE  # 598,800


def _config(workdir: Path, sim: SimProcess, symbols: list[str], concurrency: int, downloaders: int) -> Path:
    config = service_config(workdir, exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
                            symbols={"include": symbols},
                            klines={"intervals": INTERVALS, "since_listing": True},
                            downloader={"processes": downloaders, "concurrency": 4},
                            archive={"base_url": sim.archive_url, "concurrency": concurrency})
    return write_toml(config, workdir / "bench.toml")


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


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of one process so far (Linux /proc), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _children(pid: int) -> dict[int, str]:
    """Child processes of `pid` -> the actor each runs (`kl_actors.run <name>`)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != pid:
                continue
            with open(f"/proc/{entry}/cmdline") as f:
                argv = f.read().split("\0")
        except (OSError, IndexError, ValueError):
            continue
        found[int(entry)] = argv[argv.index("kl_actors.run") + 1] if "kl_actors.run" in argv else "?"
    return found


def _watch_cpu(proc: subprocess.Popen, done: threading.Event, out: dict[int, tuple[str, float]]) -> None:
    """Sample each actor's CPU time until the run ends; the newest sample of each is kept."""
    while not done.is_set():
        try:
            for pid, name in _children(proc.pid).items():
                cpu = _cpu_s(pid)
                if cpu is not None:
                    # An exiting process has no command line left: keep the name seen before.
                    out[pid] = (out[pid][0] if pid in out and name == "?" else name, cpu)
        except OSError:
            return  # no /proc: no CPU figures
        done.wait(0.25)


def _one_run(sim: SimProcess, symbols: list[str], label: str, concurrency: int, downloaders: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="kla-"))
    try:
        config = _config(workdir, sim, symbols, concurrency, downloaders)
        sim.reset_stats()
        # The limiter's minute windows outlive a stats reset: count what this run adds.
        weight_before = sum(sim.stats()["weight_by_ip_minute"].get("127.0.0.1", {}).values())
        sim_cpu_before = _cpu_s(sim.proc.pid) if sim.proc else None
        cpu: dict[int, tuple[str, float]] = {}
        done = threading.Event()
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(ROOT / "supervisor.py"), "--config", str(config), "--once"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watcher = threading.Thread(target=_watch_cpu, args=(proc, done, cpu), daemon=True)
        watcher.start()
        try:
            _stdout, stderr = proc.communicate(timeout=3600)
        finally:
            done.set()
            watcher.join()
        seconds = time.perf_counter() - started
        sim_cpu = (_cpu_s(sim.proc.pid) or 0) - sim_cpu_before if sim_cpu_before is not None else 0.0
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
        if cpu:
            groups: dict[str, float] = {"writer": 0.0, "downloaders": 0.0, "simulator": sim_cpu, "others": 0.0}
            for name, spent in cpu.values():
                key = name if name == "writer" else "downloaders" if name.startswith("downloader") else "others"
                groups[key] += spent
            total = sum(groups.values())
            per = ", ".join(f"{k} {v:.1f}s ({v / max(candles, 1) * 1e6:.2f} µs/candle)" for k, v in groups.items())
            print(f"  CPU {total:.1f}s = {total / seconds:.2f} cores of {os.cpu_count()}: {per}; "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
        if proc.returncode:
            print(stderr[-2000:])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(symbols: int = 12, months_max: int = 14, cache_dir: str = "", concurrency: int = 4,
        downloaders: int = 2) -> None:
    cache = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="kla-cache-"))
    kept = cache.is_dir() and any(cache.iterdir())
    try:
        with SimProcess(symbols=1, weight_limit=10_000_000, archive_cache=str(cache)) as sim:
            now = sim.info()["server_time_ms"]
            now -= now % intervals.DAY_MS  # the same listings all day: a kept --cache stays warm
            names = [f"ARC{i:02d}USDT" for i in range(symbols)]
            for i, name in enumerate(names):
                # Listings spread from 3 to months_max months back, at odd hours.
                months = 3 + (months_max - 3) * i / max(symbols - 1, 1)
                onboard = now - int(months * 30.4 * intervals.DAY_MS) + (i * 7919 % 86_400) * 1000
                sim.admin("list", {"symbol": name, "onboard_ms": onboard})
            _one_run(sim, names, "first run, files kept in --cache" if kept
                     else "cold archive (files rendered on first ask)", concurrency, downloaders)
            _one_run(sim, names, f"warm archive (archive.concurrency {concurrency}, {downloaders} downloaders)",
                     concurrency, downloaders)
    finally:
        if not cache_dir:
            shutil.rmtree(cache, ignore_errors=True)
