"""Assembles the simulator's aiohttp application and runs it (one port: REST, admin and WS).

Owns: route wiring, start-up (bind, print the two URL lines), shutdown on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

from aiohttp import web

from .admin import AdminApi
from .rest import RestApi
from .state import Options, SimState
from .ws import WsHub


def build_app(state: SimState) -> web.Application:
    app = web.Application()
    hub = WsHub(state)
    hub.add_routes(app)
    AdminApi(state, hub).add_routes(app)
    rest = RestApi(state)
    app.router.add_route("*", "/{tail:.*}", rest.handle)
    app["hub"] = hub
    app["state"] = state
    return app


def urls(host: str, port: int) -> tuple[str, str]:
    h = f"[{host}]" if ":" in host else host
    return f"http://{h}:{port}", f"ws://{h}:{port}/market"


async def serve(options: Options, faults: dict | None = None) -> None:
    state = SimState(options)
    state.faults.update(faults or {})
    app = build_app(state)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((options.host, options.port))
    sock.listen(1024)
    sock.setblocking(False)
    site = web.SockSite(runner, sock, shutdown_timeout=1.0)
    await site.start()
    port = sock.getsockname()[1]
    rest_url, ws_url = urls(options.host, port)
    sys.stdout.write(f"{rest_url}\n{ws_url}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await app["hub"].drop_all("server shutdown")
    await runner.cleanup()
