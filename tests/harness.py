"""Helpers for tests that run real actor processes: configs in temp dirs, a running supervisor."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import zmq

from kl_actors import config as cfg
from kl_actors import messages

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False



def make_config(workdir: Path, **sections) -> cfg.Config:
    """A config whose endpoints, runtime dir and database live in `workdir`, fast timers."""
    base = cfg.Config()
    endpoints = msgspec.structs.replace(
        base.endpoints, runtime_dir=str(workdir / "rt"), feed=f"tcp://127.0.0.1:{free_port()}")
    database = msgspec.structs.replace(base.database, path=str(workdir / "db.sqlite"))
    supervisor = msgspec.structs.replace(
        base.supervisor, heartbeat_s=0.2, heartbeat_timeout_s=5.0, restart_backoff_initial_s=0.05,
        restart_backoff_max_s=0.5, stop_timeout_s=5.0)
    config = msgspec.structs.replace(base, endpoints=endpoints, database=database, supervisor=supervisor)
    for name, changes in sections.items():
        config = msgspec.structs.replace(config, **{name: msgspec.structs.replace(getattr(config, name), **changes)})
    return cfg.resolve_endpoints(cfg.check(config, "test"))


def write_toml(config: cfg.Config, path: Path) -> Path:
    path.write_bytes(msgspec.toml.encode(config))
    return path


def _pump(pipe, lines: list[str]) -> None:
    for line in pipe:
        lines.append(line)
    pipe.close()


class RunningService:
    """A real `supervisor.py` process with the given config, stopped (and its actors) on exit."""

    def __init__(self, config: cfg.Config, workdir: Path, extra_args: list[str] | None = None) -> None:
        self.config = config
        self.status_file = Path(config.endpoints.runtime_dir) / "status.json"
        toml = write_toml(config, workdir / "service.toml")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "supervisor.py"), "--config", str(toml), *(extra_args or [])],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.seen_pids: set[int] = set()
        # Drain both pipes as the service runs: every actor shares the supervisor's stderr, and a
        # full pipe would block their log writes (and so the actors) in a long or chatty run.
        self.err_lines: list[str] = []
        self.out_lines: list[str] = []
        self._readers = [threading.Thread(target=_pump, args=(pipe, lines), daemon=True)
                         for pipe, lines in ((self.proc.stderr, self.err_lines), (self.proc.stdout, self.out_lines))]
        for reader in self._readers:
            reader.start()

    def log_text(self) -> str:
        return "".join(self.err_lines)

    def status(self) -> dict:
        try:
            data = json.loads(self.status_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        if data.get("supervisor_pid") != self.proc.pid:
            return {}
        for actor in data["actors"].values():
            if actor["pid"]:
                self.seen_pids.add(actor["pid"])
        return data["actors"]

    def pid(self, name: str) -> int | None:
        return self.status().get(name, {}).get("pid")

    def wait_running(self, names, timeout: float = 15.0) -> dict:
        def ready():
            st = self.status()
            ok = all(st.get(n, {}).get("pid") and st[n]["heartbeat_age_s"] is not None
                     and st[n]["heartbeat_age_s"] < 1.0 for n in names)
            return st if ok else None
        return wait_for(ready, timeout, what=f"actors {names} running")

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        return self.proc.returncode, self.log_text()

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.status()
        for pid in self.seen_pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


class FeedCollector:
    """A consumer of the feed on its own thread: every message as (topic, decoded body), in order,
    in `messages`; `stop()` ends it."""

    def __init__(self, endpoint: str) -> None:
        self.messages: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(endpoint,), daemon=True)
        self._thread.start()

    def _run(self, endpoint: str) -> None:
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.connect(endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, b"kline.")
        try:
            while not self._stop.is_set():
                if sub.poll(100):
                    topic, body = sub.recv_multipart()
                    self.messages.append((topic, messages.decode_feed(body)))
        finally:
            ctx.destroy(linger=0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
