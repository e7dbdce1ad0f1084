"""Simulator throughput: `python scripts/bench.py sim [--seconds 3] [--symbols 20] [--repeat]`.

Starts the simulator with the weight limit lifted and measures pages/s and candles/s served for
limit=1000 and limit=499 pages of 1m klines, with 1 and with 4 concurrent clients (separate
processes, each a keep-alive requests.Session). Clients walk back through history page by page
across several symbols, so most pages are cold (never served before) on the first pass;
`--repeat` re-serves the same pages to measure the warm row cache.
"""

from __future__ import annotations

import multiprocessing as mp
import time

from kl_actors.sim.process import SimProcess


def _sim_client(args: tuple) -> tuple[int, int, int]:
    rest_url, symbols, limit, duration_s, client_id, end_ms, repeat = args
    import requests

    session = requests.Session()
    pages = candles = errors = 0
    step = limit * 60_000
    deadline = time.perf_counter() + duration_s
    i = 0
    while time.perf_counter() < deadline:
        symbol = symbols[(i + client_id) % len(symbols)]
        page_no = 0 if repeat else (i // len(symbols)) * 4 + client_id
        r = session.get(f"{rest_url}/fapi/v1/klines", params={
            "symbol": symbol, "interval": "1m", "limit": limit,
            "endTime": end_ms - page_no * step})
        if r.status_code == 200:
            pages += 1
            candles += r.content.count(b"],[") + 1
        else:
            errors += 1
        i += 1
    return pages, candles, errors


def run(seconds: float = 3.0, n_symbols: int = 20, repeat: bool = False) -> None:
    with SimProcess(symbols=n_symbols, weight_limit=10**9) as sim:
        now_ms = int(time.time() * 1000)
        end_ms = now_ms - 10 * 86_400_000  # well inside BTCUSDT/ETHUSDT history
        symbols = ["BTCUSDT", "ETHUSDT", "1000SHIBUSDT", "1000PEPEUSDT"]
        print(f"simulator {sim.rest_url} pid={sim.pid}; {seconds:.0f} s per case")
        print(f"{'limit':>6} {'clients':>7} {'mode':>5} {'pages/s':>9} {'candles/s':>11} "
              f"{'errors':>6}")
        for mode in ("cold", "warm") if repeat else ("cold",):
            for limit in (1000, 499):
                for clients in (1, 4):
                    jobs = [(sim.rest_url, symbols, limit, seconds, c, end_ms,
                             mode == "warm") for c in range(clients)]
                    start = time.perf_counter()
                    with mp.Pool(clients) as pool:
                        results = pool.map(_sim_client, jobs)
                    elapsed = time.perf_counter() - start
                    elapsed = max(seconds, elapsed - 0.2)  # pool start-up not counted
                    pages = sum(r[0] for r in results)
                    candles = sum(r[1] for r in results)
                    errors = sum(r[2] for r in results)
                    print(f"{limit:>6} {clients:>7} {mode:>5} {pages / elapsed:>9.1f} "
                          f"{candles / elapsed:>11.0f} {errors:>6}", flush=True)
                    end_ms -= 50 * limit * 60_000  # next case starts on unseen pages
