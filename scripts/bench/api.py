"""Read API benchmark: `python scripts/bench.py api [--seconds 10] [--depth 100000]`.

What it measures: pages of 1500 1m candles (`/fapi/v1/klines?startTime=..&limit=1500`, weight
10, each at a random place in stored history) from a warm database through the api actor, with
1 and with 16 concurrent clients: requests/s, p50 and p99 of the time from send to the last byte
read, and candles/s. Also the cost without HTTP: the same page read with the API's own SQL
(`ApiStore.kline_rows`) and encoded to the exchange's JSON with msgspec, in this process.

How: the whole service (`RunningService`, its own timers) against its own simulator, 3 symbols,
1m only, `--depth` candles each (backfilled before the clock starts), `[api]` on a free
loopback port with no per-client limit. The clients are aiohttp tasks in this process (one
keep-alive connection each); every page is checked to hold 1500 candles. The service, the
simulator and the clients share the machine's cores.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import msgspec
from harness import RunningService, free_port, wait_for

from kl_actors.core import intervals
from kl_actors.sim.process import SimProcess
from kl_actors.store import Store
from kl_actors.store_api import ApiStore

from . import service_config

SYMBOLS = ("BTCUSDT", "ETHUSDT", "1000PEPEUSDT")
PAGE = 1500
M = intervals.MINUTE_MS


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _clients(base: str, concurrency: int, seconds: float, first_ms: int, last_ms: int) -> list[float]:
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    rng = random.Random(concurrency)
    span = (last_ms - first_ms) // M - PAGE

    async def one(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < end:
            params = {"symbol": rng.choice(SYMBOLS), "interval": "1m", "limit": str(PAGE),
                      "startTime": str(first_ms + rng.randrange(span) * M)}
            sent = time.perf_counter()
            async with session.get(base + "/fapi/v1/klines", params=params) as answer:
                body = await answer.read()
            latencies.append(time.perf_counter() - sent)
            if answer.status != 200 or body.count(b"],[") != PAGE - 1:
                raise RuntimeError(f"bad page: HTTP {answer.status} {body[:200]!r}")

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(session) for _ in range(concurrency)))
    return latencies


def _in_process(db_path: str, first_ms: int, last_ms: int, count: int = 300) -> list[float]:
    store = ApiStore.open_readonly(path=db_path)
    encode = msgspec.json.Encoder().encode
    rng = random.Random(1)
    span = (last_ms - first_ms) // M - PAGE
    times = []
    try:
        for _ in range(count):
            start = first_ms + rng.randrange(span) * M
            began = time.perf_counter()
            body = encode(store.kline_rows(rng.choice(SYMBOLS), "1m", start, 2 ** 62, PAGE, False))
            times.append(time.perf_counter() - began)
            assert body.count(b"],[") == PAGE - 1
    finally:
        store.close()
    return times


def run(seconds: float = 10.0, depth: int = 100_000) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="kl-bench-api-", dir="/tmp"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        with SimProcess(symbols=3, seed=5, weight_limit=1_000_000) as sim:
            config = service_config(workdir, exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
                                    klines={"intervals": ["1m"], "depth": {"1m": depth}},
                                    api={"listen": f"127.0.0.1:{port}", "client_weight_limit": 0},
                                    archive={"enabled": False}, log={"level": "WARNING"})
            service = RunningService(config, workdir)
            try:
                def held() -> bool:
                    assert service.proc.poll() is None, service.log_text()[-2000:]
                    try:
                        store = Store.open_readonly(path=config.database.path)
                    except Exception:
                        return False
                    try:
                        return all(store.count(s, "1m") >= depth - 5 for s in SYMBOLS)
                    finally:
                        store.close()

                started = time.monotonic()
                wait_for(held, 600, interval=0.5, what=f"{depth} candles of each symbol")
                print(f"backfilled 3 x {depth} 1m candles in {time.monotonic() - started:.1f} s")
                store = Store.open_readonly(path=config.database.path)
                first_ms, last_ms = store.first_last("BTCUSDT", "1m")
                store.close()
                wait_for(lambda: asyncio.run(_clients(base, 1, 0.01, first_ms, last_ms)) is not None, 30,
                         interval=0.5, what="the api answering")
                asyncio.run(_clients(base, 4, 2.0, first_ms, last_ms))  # warm the caches
                inproc = _in_process(config.database.path, first_ms, last_ms)
                print(f"page of {PAGE} 1m candles without HTTP (SQL + JSON): p50 "
                      f"{statistics.median(inproc) * 1000:.2f} ms, p99 {_percentile(inproc, 0.99) * 1000:.2f} ms")
                print("clients  requests/s  candles/s   p50 ms   p99 ms   requests")
                for concurrency in (1, 16):
                    began = time.perf_counter()
                    latencies = asyncio.run(_clients(base, concurrency, seconds, first_ms, last_ms))
                    elapsed = time.perf_counter() - began
                    rate = len(latencies) / elapsed
                    print(f"{concurrency:>7}  {rate:>10.0f}  {rate * PAGE:>9.0f}  {statistics.median(latencies) * 1000:>7.2f}"
                          f"  {_percentile(latencies, 0.99) * 1000:>7.2f}  {len(latencies):>9}")
            finally:
                service.stop()
                service.cleanup()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
