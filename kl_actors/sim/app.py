"""Assembles the simulator's aiohttp applications and runs them: one port for REST, admin and WS,
a second one for the archive host (`archive_server.py`).

Owns: route wiring, start-up (bind both, print the three URL lines: REST, WS, archive base),
shutdown on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

from aiohttp import web

from .admin import AdminApi
from .archive_server import ArchiveServer
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


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(options: Options, faults: dict | None = None) -> None:
    state = SimState(options)
    state.faults.update(faults or {})
    app = build_app(state)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = _listen(options.host, options.port)
    site = web.SockSite(runner, sock, shutdown_timeout=1.0)
    await site.start()
    archive_runner = web.AppRunner(ArchiveServer(state).app(), access_log=None,
                                   handle_signals=False)
    await archive_runner.setup()
    archive_sock = _listen(options.host, options.archive_port)
    await web.SockSite(archive_runner, archive_sock, shutdown_timeout=1.0).start()
    # The stop signals are handled before the URLs say it is ready: a SIGINT sent as soon as
    # they are read must not fall into the gap (where an inherited "ignore" would lose it).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = sock.getsockname()[1]
    rest_url, ws_url = urls(options.host, port)
    archive_url, _ = urls(options.host, archive_sock.getsockname()[1])
    sys.stdout.write(f"{rest_url}\n{ws_url}\n{archive_url}\n")
    sys.stdout.flush()
    await stop.wait()
    await app["hub"].drop_all("server shutdown")
    await archive_runner.cleanup()
    await runner.cleanup()
