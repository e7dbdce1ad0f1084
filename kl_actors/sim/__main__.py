"""Command line of the exchange simulator: `python -m kl_actors.sim --port 0 ...`.

Prints exactly three lines when ready (REST base URL, WebSocket base URL, archive base
URL) and serves until
SIGTERM/SIGINT. Refuses (exit 2) a host outside 127.0.0.0/8 and ::1 unless
`--allow-non-loopback`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import asyncio
import ipaddress
import sys

from .app import serve
from .state import Options


def parse_args(argv: list[str] | None = None) -> tuple[Options, dict]:
    p = argparse.ArgumentParser(prog="python -m kl_actors.sim",
                                description="Binance USDT-M futures market-data simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--allow-non-loopback", action="store_true")
    p.add_argument("--symbols", type=int, default=20, help="TRADING USDT perpetuals")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--anchor-ms", type=int, default=None,
                   help="time the universe's listing dates are relative to (default: today "
                        "00:00 UTC)")
    p.add_argument("--weight-limit", type=int, default=2400)
    p.add_argument("--ban-base-s", type=float, default=120.0)
    p.add_argument("--abuse-after", type=int, default=5,
                   help="rejected requests after the first 429 before a 418 ban")
    p.add_argument("--ws-push-ms", type=int, default=250)
    p.add_argument("--ws-ping-s", type=float, default=180.0)
    p.add_argument("--ws-pong-timeout-s", type=float, default=600.0)
    p.add_argument("--ws-close-delay-ms", type=int, default=200)
    p.add_argument("--ws-lifetime-s", type=float, default=86400.0)
    p.add_argument("--ws-max-msgs-per-s", type=int, default=10)
    p.add_argument("--ws-max-conns-per-5min", type=int, default=300)
    p.add_argument("--max-streams-per-conn", type=int, default=200)
    p.add_argument("--clock-offset-ms", type=int, default=0)
    p.add_argument("--final-delay-ms", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--row-cache", type=int, default=400_000)
    p.add_argument("--tradfi-symbols", type=int, default=0,
                   help="TRADIFI_PERPETUAL symbols added (XAUUSDT, TSLAUSDT, ...; every other one "
                        "closed daily 21:00-22:00 UTC)")
    p.add_argument("--odd-symbols", type=int, default=0,
                   help="USDT perpetuals named outside [A-Z0-9] added (币安人生USDT, BtcUSDT, BTC-USDT, ...)")
    p.add_argument("--halted-symbols", type=int, default=0,
                   help="USDT perpetuals in status TRADING_HALT added (POST /_sim/resume)")
    p.add_argument("--phase-3d-days", type=int, default=0, choices=(0, 1, 2),
                   help="3d candles open on epoch days = this mod 3")
    p.add_argument("--phase-1w-days", type=int, default=4, choices=range(7),
                   help="1w candles open on epoch days = this mod 7 (4: Mondays, the default)")
    p.add_argument("--month-shift-days", type=int, default=0, choices=range(28),
                   help="1M candles open this many days after the 1st (0: calendar months)")
    p.add_argument("--archive-port", type=int, default=0,
                   help="port of the archive host (data.binance.vision layout); 0 picks one")
    p.add_argument("--archive-cache", default=None,
                   help="directory keeping rendered archive zips (default: "
                        "<tmp>/kl-actors-sim-archive)")
    p.add_argument("--archive-header-from", default="2022-05-01",
                   help="archive files of periods starting on/after this UTC date have a "
                        "header row")
    p.add_argument("--archive-lag-days", type=int, default=2,
                   help="the newest this many days have no daily archive file")
    a = p.parse_args(argv)
    try:
        header_from = _dt.datetime.strptime(a.archive_header_from, "%Y-%m-%d").replace(
            tzinfo=_dt.timezone.utc)
    except ValueError:
        p.error("--archive-header-from must be YYYY-MM-DD")
    if not a.allow_non_loopback and not _is_loopback(a.host):
        sys.stderr.write(f"refusing to listen on non-loopback host {a.host!r} "
                         "(use --allow-non-loopback)\n")
        raise SystemExit(2)
    options = Options(
        host=a.host, port=a.port, symbols=a.symbols, seed=a.seed, anchor_ms=a.anchor_ms,
        weight_limit=a.weight_limit, ban_base_s=a.ban_base_s, abuse_after=a.abuse_after,
        ws_push_ms=a.ws_push_ms, ws_ping_s=a.ws_ping_s, ws_pong_timeout_s=a.ws_pong_timeout_s,
        ws_close_delay_ms=a.ws_close_delay_ms, max_streams_per_conn=a.max_streams_per_conn,
        ws_max_msgs_per_s=a.ws_max_msgs_per_s,
        ws_max_conns_per_5min=a.ws_max_conns_per_5min, row_cache=a.row_cache,
        tradfi_symbols=a.tradfi_symbols, odd_symbols=a.odd_symbols, halted_symbols=a.halted_symbols,
        phase_3d_days=a.phase_3d_days, phase_1w_days=a.phase_1w_days, month_shift_days=a.month_shift_days, archive_port=a.archive_port,
        archive_cache=a.archive_cache, archive_lag_days=max(1, a.archive_lag_days),
        archive_header_from_ms=int(header_from.timestamp()) * 1000)
    faults = {"ws_lifetime_s": a.ws_lifetime_s, "clock_offset_ms": a.clock_offset_ms,
              "final_delay_ms": a.final_delay_ms, "latency_ms": a.latency_ms}
    return options, faults


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> None:
    options, faults = parse_args(argv)
    try:
        asyncio.run(serve(options, faults))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
