"""One WebSocket connection of the websocket actor, run by its own thread (a part of the
websocket actor, by idea).

The thread only moves frames: (link id, what, payload, local receive ms) onto the actor's queue,
plus one byte on the actor's wake-up pipe. It never decides anything, never touches a zmq socket
(they are not thread-safe) and never reconnects on its own: every decision is taken in the
actor's thread (`core/slots.py`). A frame over `MAX_FRAME_BYTES` is reported by its size only,
so a flood of them cannot fill memory.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading

import websocket as wsclient

from ..core import slots
from ..core.streams import stream_key
from .base import now_ms

CLIENT_PING_S = 60.0          # our own pings find dead TCP paths; 1/min is far below 10 msgs/s
CLIENT_PING_TIMEOUT_S = 20.0
MAX_FRAME_BYTES = 64 * 1024   # one kline event is ~400 bytes; a bigger frame is not one


class Link:
    """One websocket connection carrying one slot's streams, run by its own thread."""

    def __init__(self, conn: slots.Conn, url: str, inbox: queue.SimpleQueue, wake_fd: int,
                 proxy_settings) -> None:
        self.conn = conn  # its state in the slots' state machine
        self.id = conn.id
        self.slot = conn.slot
        self.streams = conn.streams
        # (SYMBOL, interval) this connection asked for: an event for anything else is dropped.
        self.keys = frozenset(stream_key(s) for s in conn.streams)
        self.url = url
        self.closing = False
        self._inbox = inbox
        self._wake_fd = wake_fd
        self._proxy = proxy_settings
        self.app = wsclient.WebSocketApp(
            url, on_open=self._on_open, on_message=self._on_message, on_error=self._on_error,
            on_close=self._on_close)
        self._error = ""
        self._close = ""
        self.thread = threading.Thread(target=self._run, name=f"ws-{conn.id}", daemon=True)

    def start(self) -> Link:
        self.thread.start()
        return self

    def close(self) -> None:
        """Ask the connection to close (from the actor's thread); "end" follows on the queue."""
        if not self.closing:
            self.closing = True
            # A half-open socket may fail to close; its thread ends (and reports) anyway.
            with contextlib.suppress(Exception):
                self.app.close()

    # -- the thread ------------------------------------------------------------------------
    def _put(self, what: str, payload: object) -> None:
        self._inbox.put((self.id, what, payload, now_ms()))
        try:
            os.write(self._wake_fd, b"\0")
        except (BlockingIOError, OSError):
            pass  # pipe full: the actor is awake anyway

    def _on_open(self, _app) -> None:
        self._put("open", None)

    def _on_message(self, _app, data) -> None:
        if len(data) > MAX_FRAME_BYTES:
            self._put("big", len(data))  # not queued: a flood of these must not fill memory
            return
        self._put("msg", data)

    def _on_error(self, _app, error) -> None:
        self._error = f"{type(error).__name__}: {error}"[:200]

    def _on_close(self, _app, code, reason) -> None:
        if code is not None or reason:
            self._close = f"{code} {reason.decode(errors='replace') if isinstance(reason, bytes) else reason}"

    def _run(self) -> None:
        try:
            p = self._proxy
            self.app.run_forever(
                ping_interval=CLIENT_PING_S, ping_timeout=CLIENT_PING_TIMEOUT_S,
                skip_utf8_validation=True, reconnect=0,
                http_proxy_host=p.host, http_proxy_port=p.port or None, http_proxy_auth=p.auth,
                proxy_type=p.kind if p.host else None)
        except Exception as exc:  # noqa: BLE001 - any failure is one "end" for the actor to handle
            self._error = self._error or f"{type(exc).__name__}: {exc}"[:200]
        self._put("end", self._close or self._error or "closed")
