"""The supervisor: starts every actor as its own OS process, watches, restarts, stops.

It owns the runtime directory (mode 0700: the ipc endpoints in it are reachable by this user
only), writes the effective config there for the actors, and keeps each actor's state (pid,
restarts, last heartbeat) in `status.json` beside it. An actor that exits, goes silent for
`supervisor.heartbeat_timeout_s`, or sends no first heartbeat within `start_timeout_s` is
restarted after an exponential backoff; an actor restarted more than `max_restarts` times
within `restart_window_s` stops the whole service with exit status 1 and one line naming the
actor and its last exit; an actor exiting with `config.EXIT_FATAL` (a restart cannot help) stops
it at once with exit status 2. SIGTERM/SIGINT stop every actor (SIGTERM, then SIGKILL after
`stop_timeout_s`) and exit 0. Actors die with the supervisor (see actors/base.py).

With `[metrics] listen` it also serves Prometheus metrics (metrics_http.py): every accepted
heartbeat's metrics go into one aggregate, next to its own figures (restarts of each actor, the
size of the database and WAL files, by os.stat only); an actor's exit keeps its counts.

Before any actor (or the `--sim` simulator) starts, it takes an exclusive lock in the runtime dir
and one beside the database (`<db>.lock`, see locks.py) and checks the database can be written:
a second copy (also `--once` from cron beside a running service) or a read-only database ends
with one line and exit 2. Beyond that check the supervisor never touches the database or the
exchange; with `--sim` it only starts the bundled simulator and points the exchange URLs at it.

It keeps the scheduler's latest `Progress` (from its heartbeat) in `status.json`, and when its
stderr is a terminal it feeds the progress display (display.py), with every log line, its own and
the actors' stderr, going to the service log meanwhile, which it rotates by size (logfile.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import zmq

from . import display, logfile, messages
from .locks import PidLock, StartError, check_database_writable
from . import config as cfg
from .log import Logger
from .metrics_http import MetricsServer
from .core.restarts import RestartPolicy


def actor_names(config: cfg.Config) -> list[str]:
    """The actors of this configuration, in start order (`--once` needs no WebSocket)."""
    names = ["broker", "writer", "timesync", "scheduler"]
    # Numbered across the egress groups, in their order (`config.downloader_group`).
    names += [f"downloader-{i}" for i in range(1, cfg.downloader_count(config) + 1)]
    if config.mode != "once":
        names.append("websocket")
        if config.api.listen:  # the read API: a service that exits when done has nothing to serve
            names.append("api")
    return names


# In --once mode the scheduler ends the run: 0 when everything was fetched, 3 when not.
ONCE_EXIT = {0: 0, 3: 1}


def describe_exit(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def make_runtime_dir(runtime_dir: Path) -> None:
    try:
        runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StartError(f"runtime directory {runtime_dir}: cannot create: {exc.strerror}") from None
    info = runtime_dir.stat()
    if info.st_uid != os.getuid():
        raise StartError(f"runtime directory {runtime_dir} belongs to another user")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(runtime_dir, 0o700)


def take_locks(stack: contextlib.ExitStack, config: cfg.Config, names: list[str]) -> None:
    """The runtime dir's lock always; the database's lock (and its write check) when this
    supervisor runs an actor that writes it or spends the weight budget. Raises StartError."""
    runtime_dir = Path(config.endpoints.runtime_dir)
    make_runtime_dir(runtime_dir)
    stack.enter_context(PidLock(str(runtime_dir / "supervisor.lock"), f"runtime directory {runtime_dir}"))
    if {"writer", "scheduler"} & set(names):
        db = config.database.path
        check_database_writable(db)
        stack.enter_context(PidLock(db + ".lock", f"database {db}"))


class Watched:
    """One supervised actor: its current process and its restart bookkeeping."""

    def __init__(self, name: str, policy: RestartPolicy) -> None:
        self.name = name
        self.policy = policy
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.last_heartbeat = 0.0
        self.beaten = False  # this process has sent a heartbeat (until then, start_timeout_s holds)
        self.restart_at: float | None = None
        self.last_exit = ""


class Supervisor:
    def __init__(self, config: cfg.Config, names: list[str], log_stream=None,
                 terminal: display.Display | None = None) -> None:
        self.config = config
        # With the progress display on, every log line (ours, and the actors' stderr) goes to
        # the service log; the display shows its warnings and errors (display.py).
        self.log_stream = log_stream
        self.log_file = logfile.log_path(config) if log_stream is not None else None
        # After a failed rotation, the next try (a minute later, not a copy a second); 0: none failed.
        self.log_rotate_retry_at = 0.0
        self.terminal = terminal
        self.log = Logger("supervisor", config.log.level, stream=log_stream)
        s = config.supervisor
        self.watched = {
            n: Watched(n, RestartPolicy(s.restart_backoff_initial_s, s.restart_backoff_max_s,
                                        s.max_restarts, s.restart_window_s))
            for n in names
        }
        self.runtime_dir = Path(config.endpoints.runtime_dir)
        self.config_file = self.runtime_dir / "config.json"
        self.status_file = self.runtime_dir / "status.json"
        self._stopping = False
        self.exit_code = 0
        self.started_at_ms = int(time.time() * 1000)  # for the uptime in status.json
        self.started_at = time.monotonic()
        self.progress: messages.Progress | None = None  # the latest from the scheduler's heartbeat
        self.metrics: MetricsServer | None = MetricsServer(config.metrics.listen) if config.metrics.listen else None
        self.metrics_refused = 0

    # -- runtime directory ---------------------------------------------------------------------
    def prepare_runtime_dir(self) -> None:
        make_runtime_dir(self.runtime_dir)
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(self.config))

    # -- processes -----------------------------------------------------------------------------
    def spawn(self, w: Watched) -> None:
        argv = [sys.executable, "-m", "kl_actors.run", w.name, "--config-file", str(self.config_file),
                "--parent-pid", str(os.getpid()), "--restarts", str(w.policy.total_restarts)]
        w.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=self.log_stream)
        w.started_at = w.last_heartbeat = time.monotonic()
        w.beaten = False
        w.restart_at = None
        group = ({"egress": cfg.downloader_group(self.config, w.name)[1].name}
                 if self.config.egress and w.name.startswith("downloader-") else {})
        self.log.info("actor_started", name=w.name, pid=w.proc.pid, restarts=w.policy.total_restarts, **group)

    def _on_exit(self, w: Watched, now: float, why: str) -> None:
        uptime = now - w.started_at
        w.last_exit = why
        w.proc = None
        if self.metrics is not None:
            self.metrics.exited(w.name)
        delay = w.policy.record_exit(now, uptime)
        if delay is None:
            self.log.error("giving_up", name=w.name, restarts=w.policy.recent(),
                           window_s=self.config.supervisor.restart_window_s, last_exit=why,
                           action="stopping all actors")
            print(f"kl-actors: actor {w.name} failed {w.policy.recent()} times within "
                  f"{self.config.supervisor.restart_window_s:g}s (last: {why}); stopping the service",
                  file=sys.stderr, flush=True)
            self.exit_code = 1
            self._stopping = True
            return
        w.restart_at = now + delay
        self.log.warning("actor_exited", name=w.name, why=why, uptime_s=round(uptime, 2),
                         action=f"restart in {delay:.2f}s")

    def check(self, now: float) -> None:
        timeout = self.config.supervisor.heartbeat_timeout_s
        start_timeout = self.config.supervisor.start_timeout_s
        for w in self.watched.values():
            if w.proc is not None:
                code = w.proc.poll()
                if code is not None and w.name == "scheduler" and self.config.mode == "once" and code in ONCE_EXIT:
                    self.log.info("once_finished", scheduler_exit=code, action="stopping all actors")
                    w.proc = None
                    self.exit_code = ONCE_EXIT[code]
                    self._stopping = True
                    return
                if code == cfg.EXIT_FATAL:
                    self.log.error("actor_fatal", name=w.name, action="stopping all actors")
                    print(f"kl-actors: actor {w.name} cannot run (see its last log line); stopping the service",
                          file=sys.stderr, flush=True)
                    w.proc = None
                    w.last_exit = "fatal"
                    self.exit_code = 2
                    self._stopping = True
                    return
                if code is not None:
                    self._on_exit(w, now, describe_exit(code))
                elif now - w.last_heartbeat > (timeout if w.beaten else start_timeout):
                    silent = now - w.last_heartbeat
                    self.log.warning("actor_silent", name=w.name, silent_s=round(silent, 1),
                                     since="last heartbeat" if w.beaten else "start", action="killing")
                    w.proc.kill()
                    w.proc.wait()
                    self._on_exit(w, now, f"silent for {silent:.1f}s" if w.beaten
                                  else f"no heartbeat {silent:.1f}s after its start")
            elif w.restart_at is not None and now >= w.restart_at and not self._stopping:
                self.spawn(w)
            if self._stopping:
                return

    def heartbeat(self, beat: messages.Heartbeat) -> None:
        w = self.watched.get(beat.actor)
        if w is None:
            return
        if w.proc is not None:
            if w.proc.pid != beat.pid:
                return  # an earlier process's
            w.last_heartbeat = time.monotonic()
            w.beaten = True
            if self.metrics is not None and beat.metrics:
                refused = self.metrics.take(beat.actor, beat.pid, beat.metrics)
                if refused:
                    self.metrics_refused += refused
                    self.log.warning("metrics_refused", name=beat.actor, samples=refused,
                                     refused_total=self.metrics_refused,
                                     reason=self.metrics.aggregate.last_refusal[:200], action="dropped")
        # (also the last beat of a scheduler that has exited: the final figures of --once)
        if beat.actor == "scheduler" and beat.progress is not None:
            self.progress = beat.progress

    def rotate_log(self, now: float) -> None:
        """The service log cut back past `display.log_max_mib` (logfile.py); a failure (a full
        disk) is one line and the log goes on growing until a later try succeeds."""
        if self.log_file is None or now < self.log_rotate_retry_at:
            return
        d = self.config.display
        try:
            moved = logfile.rotate(self.log_file, int(d.log_max_mib * (1 << 20)), d.log_keep)
        except OSError as exc:
            if not self.log_rotate_retry_at:  # one line per failure spell, not one a try
                self.log.error("log_rotate_failed", file=str(self.log_file), error=exc.strerror or str(exc),
                               action="the log grows until a later try succeeds (one a minute)")
            self.log_rotate_retry_at = now + 60.0
            return
        self.log_rotate_retry_at = 0.0
        if moved:
            self.log.info("log_rotated", file=str(self.log_file), moved_bytes=moved, keep=d.log_keep)

    def own_metrics(self) -> None:
        """The supervisor's own figures: each actor's restarts, the database's size on disk."""
        own = self.metrics.own
        for name, w in self.watched.items():
            own.total("actor_restarts_total", (name,), w.policy.total_restarts)
        size = 0
        for path in (self.config.database.path, self.config.database.path + "-wal"):
            with contextlib.suppress(OSError):
                size += os.stat(path).st_size
        own.set("database_bytes", (), size)
        self.metrics.own_figures(os.getpid())

    def write_status(self, now: float) -> None:
        status = {
            name: {"pid": w.proc.pid if w.proc else None, "restarts": w.policy.total_restarts,
                   # None until this process's first heartbeat: started is not yet running
                   "heartbeat_age_s": round(now - w.last_heartbeat, 2) if w.proc and w.beaten else None,
                   "last_exit": w.last_exit}
            for name, w in self.watched.items()
        }
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"supervisor_pid": os.getpid(), "actors": status,
                                   "started_at_ms": self.started_at_ms,
                                   "progress": msgspec.to_builtins(self.progress),
                                   "written_at_ms": time.time_ns() // 1_000_000}))
        os.replace(tmp, self.status_file)

    def _serve_metrics(self) -> None:
        try:
            host, port = self.metrics.start()
        except OSError as exc:
            raise StartError(f"metrics.listen {self.config.metrics.listen}: cannot serve: {exc.strerror or exc}") from None
        self.own_metrics()
        self.log.info("metrics_serving", url=f"http://{host}:{port}/metrics")

    def stop_all(self) -> None:
        running = [w for w in self.watched.values() if w.proc is not None]
        for w in running:
            with contextlib.suppress(ProcessLookupError):
                w.proc.terminate()
        deadline = time.monotonic() + self.config.supervisor.stop_timeout_s
        for w in running:
            try:
                w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log.warning("actor_stop_timeout", name=w.name, action="killing")
                w.proc.kill()
                w.proc.wait()
            self.log.info("actor_stopped", name=w.name, how=describe_exit(w.proc.returncode))
            w.proc = None

    def request_stop(self, *_args: object) -> None:
        self._stopping = True

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> int:
        try:
            return self._run()
        finally:
            if self.terminal is not None:
                self.terminal.stop(f"kl-actors: stopped, exit status {self.exit_code}; the whole log is in "
                                   f"{self.terminal.log_file}")

    def last_beats(self, control: zmq.Socket) -> None:
        """The heartbeats the stopped actors sent last (the scheduler's final figures of --once)."""
        for _ in range(1000):  # every actor has stopped: a few frames at most
            if not control.poll(50):
                return
            beat = messages.decode(control.recv())
            if isinstance(beat, messages.Heartbeat):
                self.heartbeat(beat)

    def draw(self, now: float) -> None:
        if self.terminal is not None:
            self.terminal.update(now, self.progress, uptime_s=now - self.started_at,
                                 actors_running=sum(w.proc is not None for w in self.watched.values()),
                                 actors_total=len(self.watched),
                                 restarts=sum(w.policy.total_restarts for w in self.watched.values()))

    def _run(self) -> int:
        self.prepare_runtime_dir()
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        if self.terminal is not None:
            self.terminal.start()
        context = zmq.Context()
        control = context.socket(zmq.PULL)
        control.setsockopt(zmq.LINGER, 0)
        control.bind(self.config.endpoints.control)
        try:
            if self.metrics is not None:
                self._serve_metrics()
            for w in self.watched.values():
                self.spawn(w)
            next_status = 0.0
            while not self._stopping:
                if control.poll(100):
                    for _ in range(1000):
                        try:
                            frame = control.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        beat = messages.decode(frame)
                        if isinstance(beat, messages.Heartbeat):
                            self.heartbeat(beat)
                now = time.monotonic()
                if not self._stopping:
                    # A Ctrl-C reaches the actors too (one process group): their exits are the
                    # stop's, not crashes to report and restart.
                    self.check(now)
                self.draw(now)
                if now >= next_status:
                    self.rotate_log(now)
                    self.write_status(now)
                    if self.metrics is not None:
                        self.own_metrics()
                    next_status = now + self.config.supervisor.heartbeat_s
        finally:
            self.stop_all()
            self.last_beats(control)
            self.write_status(time.monotonic())
            if self.metrics is not None:
                self.metrics.stop()
            control.close()
            context.term()
        self.log.info("stopped", exit_code=self.exit_code)
        return self.exit_code
