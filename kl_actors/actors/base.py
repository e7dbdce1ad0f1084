"""The common shell of every actor process: context, sockets, one poll loop, heartbeat, stop.

An actor subclass declares its sockets in `setup()` (with `self.socket(...)` and
`self.on(socket, handler)`), does periodic work in `tick(now)`, and hands back or finishes work in
`teardown()`. The base owns what every actor must get right the same way:
- one `zmq.Context` created here, after the process started (never inherited across fork);
- a heartbeat to the supervisor every `supervisor.heartbeat_s`;
- clean stop on SIGTERM/SIGINT: the loop ends, `teardown()` runs, sockets close with a bounded
  linger;
- exit when the supervisor is gone (parent-death signal plus a parent-pid check), so no orphan
  outlives a killed supervisor;
- `receive()` decodes with the typed wire decoder and drops, counts and logs a malformed frame
  instead of raising;
- its metrics (`self.metrics`, core/metrics.Recorder: `inc`, `set`, `observe`): their totals
  ride in every heartbeat, gauges set just before by `measure()`; the supervisor sums them;
- downloaders on other hosts (curve.py): `serve_remote` gives a bound socket its CURVE-only TCP
  endpoint and logs refused handshakes; on a downloader host `socket` joins those endpoints as a
  CURVE client. Nothing here ever binds a non-loopback address without CURVE.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from .. import curve, messages
from ..config import EXIT_FATAL, REMOTE_PORTS, Config
from ..core.clock import ServerClock
from ..core.metrics import Recorder
from ..log import Logger

LINGER_MS = 500
_PR_SET_PDEATHSIG = 1


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGTERM this process when its parent dies; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # Not Linux: the parent-pid check in the loop still catches it.
    if parent_pid and os.getppid() != parent_pid:
        sys.exit(0)


class Actor:
    """Base of every actor process. Subclasses set `kind` and override setup/tick/teardown."""

    poll_ms = 100

    def __init__(self, config: Config, name: str, parent_pid: int = 0, restarts: int = 0) -> None:
        self.config = config
        self.name = name
        self.parent_pid = parent_pid
        self.restarts = restarts
        self.log = Logger(name, config.log.level)
        self.context: zmq.Context | None = None
        self.poller = zmq.Poller()
        self._handlers: dict[zmq.Socket, Callable[[zmq.Socket], None]] = {}
        self._sockets: list[zmq.Socket] = []
        self._running = False
        self._heartbeat: zmq.Socket | None = None
        self._authenticator = None  # the process's ZAP handler, once a remote endpoint is served
        self.remote_refused = 0
        self._next_heartbeat = 0.0
        self.handled = 0
        self.dropped_malformed = 0
        self.exit_code = 0
        self.metrics = Recorder()

    # -- sockets --------------------------------------------------------------------------------
    def socket(self, kind: int, endpoint: str, bind: bool = False, hwm: int | None = None,
               subscribe: bytes | None = None) -> zmq.Socket:
        assert self.context is not None
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        if hwm is not None:
            sock.setsockopt(zmq.SNDHWM, hwm)
            sock.setsockopt(zmq.RCVHWM, hwm)
        if subscribe is not None:
            sock.setsockopt(zmq.SUBSCRIBE, subscribe)
        if not bind and self._joins_remote(endpoint):
            self._keys(curve.join, sock)
        if bind:
            sock.bind(endpoint)
        else:
            sock.connect(endpoint)
        self._sockets.append(sock)
        return sock

    def _joins_remote(self, endpoint: str) -> bool:
        """On a downloader host, every endpoint on the service host (`resolve_endpoints`)."""
        host = self.config.endpoints.tasks.rpartition(":")[0]
        return bool(self.config.remote.connect) and endpoint.startswith(host + ":")

    def serve_remote(self, sock: zmq.Socket, endpoint_key: str, port: int | None = None) -> None:
        """Also bind `sock` for downloaders on other hosts, CURVE only (when `remote.listen` is set).
        Call after its local bind: that one keeps no encryption (ipc, this user only)."""
        r = self.config.remote
        if not r.listen:
            return
        if self._authenticator is None:
            self._authenticator = curve.authenticator(self.context, r.keys_dir)
        self._keys(curve.serve, sock)
        host = f"[{r.listen}]" if ":" in r.listen else r.listen
        endpoint = f"tcp://{host}:{port or getattr(r, REMOTE_PORTS[endpoint_key])}"
        sock.bind(endpoint)
        monitor = sock.get_monitor_socket(sum(curve.REFUSALS))
        self._sockets.append(monitor)
        self.on(monitor, self._remote_refusal)
        self.log.info("remote_endpoint", endpoint=endpoint, serves=endpoint_key, security="CURVE")

    def _keys(self, apply: Callable[[zmq.Socket, str], None], sock: zmq.Socket) -> None:
        """Keys gone or unreadable since the supervisor checked them: a restart cannot help."""
        try:
            apply(sock, self.config.remote.keys_dir)
        except curve.CurveKeyError as exc:
            self.log.error("curve_keys_unusable", error=str(exc)[:300],
                           action=f"exiting fatal ({EXIT_FATAL}): the supervisor stops the service")
            raise SystemExit(EXIT_FATAL) from None

    def _remote_refusal(self, monitor: zmq.Socket) -> None:
        for _ in range(100):
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            self.remote_refused += 1
            self.log.warning("remote_refused", endpoint=event["endpoint"].decode(errors="replace"),
                             reason=curve.REFUSALS.get(event["event"], str(event["event"])),
                             refused_total=self.remote_refused, action="connection dropped, nothing delivered")

    def on(self, sock: zmq.Socket, handler: Callable[[zmq.Socket], None]) -> None:
        self._handlers[sock] = handler
        self.poller.register(sock, zmq.POLLIN)

    def receive(self, sock: zmq.Socket) -> messages.Message | None:
        """One frame from `sock`, typed; None (counted, logged) if it is malformed."""
        frame = sock.recv(copy=True)
        message = messages.decode(frame)
        if isinstance(message, messages.DecodeError):
            self.dropped_malformed += 1
            self.log.warning("malformed_message", size=message.size, reason=message.reason,
                             dropped_total=self.dropped_malformed, action="dropped")
            return None
        self.handled += 1
        return message

    def take_clock(self, sock: zmq.Socket, clock: ServerClock) -> None:
        """Read the `ClockSync` messages waiting on a bus SUB into `clock` (one line when it is
        first known: checks against the exchange's now start then)."""
        for _ in range(100):
            if not sock.poll(0):
                return
            message = self.receive(sock)
            if isinstance(message, messages.ClockSync):
                if not clock.synced:
                    self.log.info("clock_known", offset_ms=round(message.offset_ms, 1),
                                  action="candles dated in the future are refused from now on")
                clock.update(message)

    def send(self, sock: zmq.Socket, message: messages.Message, block: bool = True) -> bool:
        """Send one message; with block=False a full or absent peer drops it and returns False."""
        try:
            sock.send(messages.encode(message), 0 if block else zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    # -- the hooks ------------------------------------------------------------------------------
    def setup(self) -> None:
        """Create sockets and register handlers."""

    def tick(self, now: float) -> None:
        """Periodic work; called at least every `poll_ms`."""

    def teardown(self) -> None:
        """Finish or hand back the work in hand; sockets are closed afterwards."""

    def poll_timeout_ms(self) -> int:
        return self.poll_ms

    # -- the loop -------------------------------------------------------------------------------
    def stop(self, *_args: object) -> None:
        self._running = False

    def run(self) -> int:
        die_with_parent(self.parent_pid)
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.context = zmq.Context()
        self._heartbeat = self.socket(zmq.PUSH, self.config.endpoints.control, hwm=10)
        try:
            self.setup()
            self.log.info("started", pid=os.getpid())
            self._running = True
            while self._running:
                self._beat()
                events = self._wait(self.poll_timeout_ms())
                for sock, handler in self._handlers.items():
                    if sock in events:
                        handler(sock)
                self.tick(time.monotonic())
                self.log.flush()  # counts of rate-limited warnings whose window has passed
                if self.parent_pid and os.getppid() != self.parent_pid:
                    self.log.warning("supervisor_gone", action="exiting")
                    break
            self.teardown()
            self.log.info("stopped", handled=self.handled, dropped_malformed=self.dropped_malformed)
            return self.exit_code
        finally:
            for sock in self._sockets:
                sock.close(linger=LINGER_MS)
            if self._authenticator is not None:
                self._authenticator.stop()
            self.context.term()

    def _wait(self, timeout_ms: int) -> dict:
        if not self._handlers:
            # zmq_poll over no sockets returns at once instead of waiting: an actor that only
            # sends (time-sync) would spin a core.
            time.sleep(timeout_ms / 1000)
            return {}
        return dict(self.poller.poll(timeout_ms))

    def _beat(self) -> None:
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.config.supervisor.heartbeat_s
        self.measure()
        beat = messages.Heartbeat(actor=self.name, pid=os.getpid(), sent_at_ms=now_ms(),
                                  handled=self.handled, dropped_malformed=self.dropped_malformed,
                                  metrics=self.metrics.samples(), **self.beat_fields())
        self.send(self._heartbeat, beat, block=False)

    def beat_now(self) -> None:
        """Send a heartbeat at once (figures that just became final, e.g. at the end of --once)."""
        self._next_heartbeat = 0.0
        self._beat()

    def measure(self) -> None:
        """Set this actor's gauges in `self.metrics` (called just before each heartbeat)."""

    def beat_fields(self) -> dict:
        """What this actor adds to its heartbeat (an actor overrides it; see messages.Heartbeat)."""
        return {}
