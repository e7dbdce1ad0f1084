"""Command line of `supervisor.py`: options, and their overrides applied onto the loaded config.

Kept apart from the supervisor so that the rules (which option overrides which key, what is
checked) are testable without starting a process.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec

from . import config as cfg

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "conf" / "default.toml"
SIM_CONFIG = PROJECT_ROOT / "conf" / "sim.toml"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="supervisor.py",
        description="Keep a SQLite database of Binance USDT-M perpetual klines complete and current.",
        epilog="other commands (each with its own --help): "
               "`supervisor.py status` (is the database complete and current; the service's actors), "
               "`supervisor.py export --out DIR` (Parquet), "
               "`supervisor.py keygen DIR [--client NAME]` (CURVE keys for downloaders on other hosts)",
    )
    p.add_argument("--config", metavar="FILE", help="TOML config (default conf/default.toml; with --sim conf/sim.toml)")
    p.add_argument("--db", metavar="PATH", help="SQLite database file")
    p.add_argument("--rest-url", metavar="URL", help="exchange REST base URL")
    p.add_argument("--ws-url", metavar="URL", help="exchange WebSocket base URL")
    p.add_argument("--archive-url", metavar="URL",
                   help="bulk archive host root (default: the real archive with the real REST URL, "
                        "the simulator's with --sim, otherwise no archive)")
    p.add_argument("--feed", metavar="ENDPOINT", help="consumer feed endpoint, e.g. tcp://127.0.0.1:7755")
    p.add_argument("--downloaders", metavar="N", type=int, help="number of downloader processes")
    p.add_argument("--intervals", metavar="LIST", help="comma-separated intervals, e.g. 1m,5m,1h")
    p.add_argument("--symbols", metavar="LIST", help="comma-separated symbols to restrict to, e.g. BTCUSDT,ETHUSDT")
    p.add_argument("--runtime-dir", metavar="DIR", help="directory for ipc:// endpoints (mode 0700)")
    p.add_argument("--actors", metavar="LIST",
                   help="run only these actors, e.g. downloader-1,downloader-2 on a second host (default: all)")
    p.add_argument("--listen", metavar="ADDR",
                   help="serve downloaders on other hosts: bind the CURVE ports on this address (needs --keys)")
    p.add_argument("--connect", metavar="HOST",
                   help="run downloaders for the service on HOST over its CURVE ports (with --actors, --keys)")
    p.add_argument("--egress", metavar="NAME",
                   help="with --connect: the [[egress]] group this host's downloaders belong to (its own budget)")
    p.add_argument("--keys", metavar="DIR", help="CURVE keys (made by `supervisor.py keygen DIR`)")
    p.add_argument("--api", metavar="ADDR",
                   help="serve the exchange-compatible read API on ADDR, e.g. 127.0.0.1:8090 ([api] listen)")
    p.add_argument("--metrics", metavar="ADDR",
                   help="serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9108 ([metrics] listen)")
    p.add_argument("--sim", action="store_true", help="start the bundled exchange simulator on loopback and use it")
    p.add_argument("--sim-symbols", metavar="N", type=int, default=20, help="trading symbols of the simulator (with --sim)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--stream-only", action="store_true", help="no backfill: only keep tables current")
    mode.add_argument("--once", action="store_true", help="backfill to now, print a summary and exit")
    p.add_argument("--progress", choices=("auto", "on", "off"),
                   help="progress display: auto (when stderr is a terminal), on, off (log lines on stderr)")
    p.add_argument("--print-config", action="store_true", help="print the effective config as TOML-like JSON and exit")
    return p


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def effective_config(args: argparse.Namespace) -> cfg.Config:
    """Load the config file, apply command-line overrides, check the result; raises ConfigError."""
    path = args.config or (SIM_CONFIG if args.sim else DEFAULT_CONFIG)
    config = cfg.load(path)
    replace = msgspec.structs.replace
    exchange, klines, symbols = config.exchange, config.klines, config.symbols
    if args.rest_url:
        exchange = replace(exchange, rest_url=args.rest_url)
    if args.ws_url:
        exchange = replace(exchange, ws_url=args.ws_url)
    if args.intervals:
        klines = replace(klines, intervals=_split(args.intervals))
    if args.symbols:
        symbols = replace(symbols, include=_split(args.symbols))
    database = replace(config.database, path=args.db) if args.db else config.database
    endpoints = config.endpoints
    if args.feed:
        endpoints = replace(endpoints, feed=args.feed)
    if args.runtime_dir:
        endpoints = replace(endpoints, runtime_dir=args.runtime_dir)
    downloader = config.downloader
    if args.downloaders is not None:
        if config.egress:
            raise cfg.ConfigError(f"{path}: --downloaders: with [[egress]] groups each group's `downloaders` "
                                  "says how many processes use it")
        downloader = replace(downloader, processes=args.downloaders)
    archive = config.archive
    if getattr(args, "archive_url", None):
        archive = replace(archive, enabled=True, base_url=args.archive_url)
    remote = config.remote
    if getattr(args, "listen", None):
        remote = replace(remote, listen=args.listen)
    if getattr(args, "connect", None):
        remote = replace(remote, connect=args.connect)
    if getattr(args, "keys", None):
        remote = replace(remote, keys_dir=args.keys)
    if getattr(args, "egress", None):
        remote = replace(remote, egress=args.egress)
    display = config.display
    if getattr(args, "progress", None):
        display = replace(display, progress=args.progress)
    api = config.api
    if getattr(args, "api", None):
        api = replace(api, listen=args.api)
    metrics = config.metrics
    if getattr(args, "metrics", None):
        metrics = replace(metrics, listen=args.metrics)
    mode = "once" if args.once else "stream-only" if args.stream_only else config.mode
    config = replace(
        config, exchange=exchange, klines=klines, symbols=symbols, database=database,
        endpoints=endpoints, downloader=downloader, archive=archive, remote=remote, api=api, mode=mode,
        display=display,
    )
    config = replace(config, metrics=metrics)
    return cfg.check(config, f"{path} + command line")
