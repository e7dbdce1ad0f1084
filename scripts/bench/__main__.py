"""The benches' one command line: `python scripts/bench.py <sub> [...]` (see scripts/bench/__init__.py).

`sim`: pages/s and candles/s the simulator serves (sim.py).
`writer`: writer rows/s through its sockets versus raw apsw (writer.py).
`backfill`: candles/min at the real weight limit vs the ceiling; candles/s with 1-8 downloaders
(backfill.py); `backfill --egress N`: one egress group vs N at the real limit, per-minute candles
and weight per IP, the ratio of the times.
`live`: candle close -> database commit and -> feed consumer, p50/p99, over the WebSocket path
and the REST boundary path (live.py); `live --universe`: the top of the day with 550 symbols x 15
intervals, close -> REST confirmation per interval (universe_live.py).
`archive`: since-listing bootstrap from the simulator's archive, cold then warm: REST weight
spent vs REST alone, wall time vs the REST ceiling time, candles/s (archive.py).
`universe`: 550 symbols x 15 intervals backfilled from empty with `--once`, limit lifted,
heartbeat timeout 2 s: wall time, restarts, slowest scheduler tick, planning cost per table
(universe_backfill.py).
`export`: Parquet export of a generated database: first run rows/s and bytes per candle, a run
with nothing changed, a run after one month changed (export.py).
`api`: pages of 1500 1m candles from a warm database through the read API, 1 and 16 concurrent
clients: requests/s, p50, p99; and the page's SQL + JSON cost without HTTP (api.py).
"""

from __future__ import annotations

import argparse


def bench_sim(a: argparse.Namespace) -> int:
    from . import sim

    sim.run(seconds=a.seconds, n_symbols=a.symbols, repeat=a.repeat)
    return 0


def bench_writer(a: argparse.Namespace) -> int:
    """Rows/s committed through the socket path versus raw apsw executemany, as a ratio."""
    from . import writer

    writer.run(rows_total=a.rows, batch=a.batch)
    return 0


def bench_backfill(a: argparse.Namespace) -> int:
    """Candles/min at the real weight limit vs the ceiling; candles/s with 1-8 downloaders."""
    from . import backfill

    if a.egress:
        backfill.egress_compare(a.egress, a.symbols, a.depth)
        return 0
    backfill.run(real=not a.lifted_only, lift=not a.real_only, real_depth=a.real_depth)
    return 0


def bench_live(a: argparse.Namespace) -> int:
    """Candle close -> commit and -> feed consumer, p50/p99, WebSocket path vs REST boundary path."""
    if a.universe:
        from . import universe_live

        universe_live.run(symbols=a.symbols or 550, minutes=a.minutes or 6)
        return 0
    from . import live

    live.run(minutes=a.minutes or 3, symbols=a.symbols or 200, weight_limit=a.weight_limit)
    return 0


def bench_universe(a: argparse.Namespace) -> int:
    from . import universe_backfill

    universe_backfill.run(symbols=a.symbols)
    return 0


def bench_archive(a: argparse.Namespace) -> int:
    from . import archive

    archive.run(symbols=a.symbols, months_max=a.months_max, cache_dir=a.cache,
                concurrency=a.archive_concurrency, downloaders=a.downloaders)
    return 0


def bench_export(a: argparse.Namespace) -> int:
    from . import export

    export.run(tables=a.tables, rows=a.rows)
    return 0


def bench_api(a: argparse.Namespace) -> int:
    from . import api

    api.run(seconds=a.seconds, depth=a.depth)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n")[0],
                                     epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p_backfill.add_argument("--egress", type=int, metavar="N",
                            help="instead: one egress group (127.0.0.2) vs N (127.0.0.2, .3, ...), the time ratio")
    p_backfill.add_argument("--symbols", type=int, default=16, help="with --egress: symbols (1m)")
    p_backfill.add_argument("--depth", type=int, default=100_000, help="with --egress: 1m candles per symbol")
    p_backfill.add_argument("--real-depth", type=int, default=20_000,
                            help="1m candles for each of 100 symbols at the real limit (66000: ten minutes)")
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
    p_archive.add_argument("--archive-concurrency", type=int, default=4, help="[archive] concurrency (files in flight)")
    p_archive.add_argument("--downloaders", type=int, default=2, help="[downloader] processes")
    p_archive.set_defaults(func=bench_archive)
    p_export = sub.add_parser("export", help="Parquet export: first run, unchanged run, one month changed")
    p_export.add_argument("--tables", type=int, default=5)
    p_export.add_argument("--rows", type=int, default=2_000_000, help="1m candles per table")
    p_export.set_defaults(func=bench_export)
    p_api = sub.add_parser("api", help="read API: pages of 1500 1m candles, 1 and 16 clients: requests/s, p99")
    p_api.add_argument("--seconds", type=float, default=10.0, help="duration of each case")
    p_api.add_argument("--depth", type=int, default=100_000, help="1m candles stored per symbol (3 symbols)")
    p_api.set_defaults(func=bench_api)
    a = parser.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    raise SystemExit(main())
