"""Benchmarks of kl-actors, one subcommand per part: `python scripts/bench.py sim [...]`.

`sim`: starts the simulator with the weight limit lifted and measures pages/s and candles/s
served for limit=1000 and limit=499 pages of 1m klines, with 1 and with 4 concurrent clients
(separate processes, each a keep-alive requests.Session). Clients walk back through history
page by page across several symbols, so most pages are cold (never served before) on the first
pass; `--repeat` re-serves the same pages to measure the warm row cache.

`live`: candle close -> database commit and -> feed consumer, p50/p99, over the WebSocket path
and the REST boundary path (see scripts/live_bench.py); `live --universe`: the top of the day with
550 symbols x 15 intervals, close -> REST confirmation per interval (scripts/universe_live_bench.py).

`archive`: since-listing bootstrap from the simulator's archive, cold then warm: REST weight
spent vs REST alone, wall time vs the REST ceiling time, candles/s (scripts/archive_bench.py).

`universe`: 550 symbols x 15 intervals backfilled from empty with `--once`, limit lifted,
heartbeat timeout 2 s: wall time, restarts, slowest scheduler tick, planning cost per table
(scripts/universe_backfill_bench.py).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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


def bench_sim(a: argparse.Namespace) -> int:
    from kl_actors.sim.process import SimProcess

    with SimProcess(symbols=a.symbols, weight_limit=10**9) as sim:
        now_ms = int(time.time() * 1000)
        end_ms = now_ms - 10 * 86_400_000  # well inside BTCUSDT/ETHUSDT history
        symbols = ["BTCUSDT", "ETHUSDT", "1000SHIBUSDT", "1000PEPEUSDT"]
        print(f"simulator {sim.rest_url} pid={sim.pid}; {a.seconds:.0f} s per case")
        print(f"{'limit':>6} {'clients':>7} {'mode':>5} {'pages/s':>9} {'candles/s':>11} "
              f"{'errors':>6}")
        for mode in ("cold", "warm") if a.repeat else ("cold",):
            for limit in (1000, 499):
                for clients in (1, 4):
                    jobs = [(sim.rest_url, symbols, limit, a.seconds, c, end_ms,
                             mode == "warm") for c in range(clients)]
                    start = time.perf_counter()
                    with mp.Pool(clients) as pool:
                        results = pool.map(_sim_client, jobs)
                    elapsed = time.perf_counter() - start
                    elapsed = max(a.seconds, elapsed - 0.2)  # pool start-up not counted
                    pages = sum(r[0] for r in results)
                    candles = sum(r[1] for r in results)
                    errors = sum(r[2] for r in results)
                    print(f"{limit:>6} {clients:>7} {mode:>5} {pages / elapsed:>9.1f} "
                          f"{candles / elapsed:>11.0f} {errors:>6}", flush=True)
                    end_ms -= 50 * limit * 60_000  # next case starts on unseen pages
    return 0


def bench_writer(a: argparse.Namespace) -> int:
    """Rows/s committed through the socket path versus raw apsw executemany, as a ratio."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import writer_bench

    writer_bench.run(rows_total=a.rows, batch=a.batch)
    return 0


def bench_backfill(a: argparse.Namespace) -> int:
    """Candles/min at the real weight limit vs the ceiling; candles/s with 1-8 downloaders."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import backfill_bench

    backfill_bench.run(real=not a.lifted_only, lift=not a.real_only)
    return 0


def bench_live(a: argparse.Namespace) -> int:
    """Candle close -> commit and -> feed consumer, p50/p99, WebSocket path vs REST boundary path."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import live_bench

    if a.universe:
        import universe_live_bench

        universe_live_bench.run(symbols=a.symbols or 550, minutes=a.minutes or 6)
        return 0
    live_bench.run(minutes=a.minutes or 3, symbols=a.symbols or 200, weight_limit=a.weight_limit)
    return 0


def bench_universe(a: argparse.Namespace) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import universe_backfill_bench

    universe_backfill_bench.run(symbols=a.symbols)
    return 0


def bench_archive(a: argparse.Namespace) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import archive_bench

    archive_bench.run(symbols=a.symbols, months_max=a.months_max, cache_dir=a.cache)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_sim = sub.add_parser("sim", help="pages/s and candles/s the simulator serves")
    p_sim.add_argument("--seconds", type=float, default=3.0, help="duration of each case")
    p_sim.add_argument("--symbols", type=int, default=20)
    p_sim.add_argument("--repeat", action="store_true",
                       help="also measure warm (already cached) pages")
    p_sim.set_defaults(func=bench_sim)
    p_writer = sub.add_parser("writer", help="writer rows/s through sockets vs raw apsw")
    p_writer.add_argument("--rows", type=int, default=200_000)
    p_writer.add_argument("--batch", type=int, default=1000)
    p_writer.set_defaults(func=bench_writer)
    p_backfill = sub.add_parser("backfill", help="backfill rate vs the weight ceiling; scaling with downloaders")
    p_backfill.add_argument("--real-only", action="store_true")
    p_backfill.add_argument("--lifted-only", action="store_true")
    p_backfill.set_defaults(func=bench_backfill)
    p_live = sub.add_parser("live", help="close -> commit and close -> feed latency, WebSocket vs REST path")
    p_live.add_argument("--minutes", type=int, help="boundaries counted per path (one a minute; default 3)")
    p_live.add_argument("--symbols", type=int, help="default 200 (550 with --universe)")
    p_live.add_argument("--weight-limit", type=int, default=2400,
                        help="simulator weight limit per minute (2400: the exchange's)")
    p_live.add_argument("--universe", action="store_true",
                        help="the top of the day: 550 symbols x 15 intervals, stream-only, real limit "
                             "(--minutes after 00:00 UTC, default 6 with this flag)")
    p_live.set_defaults(func=bench_live)
    p_universe = sub.add_parser("universe", help="550 x 15 backfill from empty, --once: restarts, slowest tick")
    p_universe.add_argument("--symbols", type=int, default=550)
    p_universe.set_defaults(func=bench_universe)
    p_archive = sub.add_parser("archive", help="since-listing bootstrap from the archive: REST weight "
                                               "vs REST-only, wall time vs REST ceiling time, candles/s")
    p_archive.add_argument("--symbols", type=int, default=12)
    p_archive.add_argument("--months-max", type=int, default=14, help="oldest listing, months back (newest: 3)")
    p_archive.add_argument("--cache", default="", help="keep the simulator's rendered files here across runs")
    p_archive.set_defaults(func=bench_archive)
    a = parser.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    raise SystemExit(main())
