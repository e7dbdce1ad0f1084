"""`SimProcess`: the simulator as a real subprocess, for tests, benchmarks and the `--sim` demo.

    with SimProcess(symbols=20, seed=1, weight_limit=2400, ws_lifetime_s=5) as sim:
        sim.rest_url            # "http://127.0.0.1:PORT"
        sim.ws_url              # "ws://127.0.0.1:PORT/market"
        sim.archive_url         # "http://127.0.0.1:PORT2": the archive host's root
        sim.admin("stats")      # GET  /_sim/stats
        sim.admin("faults", {"latency_ms": 50})   # POST /_sim/faults
        sim.truth("BTCUSDT", "1m", start_ms, end_ms)

Keyword options map to CLI flags (`ws_lifetime_s=5` → `--ws-lifetime-s 5`; True → bare flag).
The process is killed on exit, also when start-up fails. `die_with_parent=True` (used by the
service's `--sim`) also ends it when the starting process dies, even by kill -9 (Linux
PR_SET_PDEATHSIG), and runs it in a session of its own: a Ctrl-C on the service's terminal stops
the service, which then stops its simulator last (not first, under its still running actors).
Stdlib only (urllib, ctypes).
"""

from __future__ import annotations

import collections
import ctypes
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import signal
from pathlib import Path

_PKG_PARENT = str(Path(__file__).resolve().parents[2])


def _read_lines(stream, out: "queue.Queue") -> None:
    """Forward the stdout lines (the first three are the URLs); keep draining so the child never
    blocks."""
    try:
        for line in stream:
            out.put(line)
    except (ValueError, OSError):
        pass
    out.put(None)


def _keep_tail(stream, tail: "collections.deque") -> None:
    """Drain stderr (so the child never blocks on a full pipe), keeping the last lines."""
    try:
        for line in stream:
            tail.append(line)
    except (ValueError, OSError):
        pass


_PR_SET_PDEATHSIG = 1


def _parent_death_signal(parent_pid: int):
    """A preexec_fn: SIGTERM this child when its parent dies (the parent *thread* in Linux terms,
    so start it from a thread that lives as long as the process, as the supervisor does)."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: nothing to import in the child

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec


class SimStartError(RuntimeError):
    pass


class SimProcess:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, start_timeout_s: float = 15.0,
                 python: str = sys.executable, die_with_parent: bool = False, **options):
        self.host, self.port = host, port
        self.start_timeout_s = start_timeout_s
        self.python = python
        self.options = options
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen | None = None
        self.rest_url = ""
        self.ws_url = ""
        self.archive_url = ""
        self.stderr_tail: collections.deque = collections.deque(maxlen=200)

    def command(self) -> list[str]:
        cmd = [self.python, "-m", "kl_actors.sim", "--host", self.host, "--port", str(self.port)]
        for key, value in self.options.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                cmd.append(flag)
            elif value is not False and value is not None:
                cmd += [flag, str(value)]
        return cmd

    def start(self) -> "SimProcess":
        env = dict(os.environ)
        env["PYTHONPATH"] = _PKG_PARENT + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, text=True,
                                     preexec_fn=_parent_death_signal(os.getpid()) if self.die_with_parent else None,
                                     start_new_session=self.die_with_parent)
        try:
            lines: queue.Queue = queue.Queue()
            threading.Thread(target=_read_lines, args=(self.proc.stdout, lines),
                             daemon=True).start()
            threading.Thread(target=_keep_tail, args=(self.proc.stderr, self.stderr_tail),
                             daemon=True).start()
            got = []
            deadline = time.monotonic() + self.start_timeout_s
            while len(got) < 3:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SimStartError("simulator did not print its URLs in time")
                try:
                    line = lines.get(timeout=left)
                except queue.Empty:
                    continue
                if line is None:
                    self.proc.wait(2)
                    time.sleep(0.1)
                    raise SimStartError(f"simulator exited early (rc={self.proc.returncode}):"
                                        f" {''.join(self.stderr_tail).strip()}")
                got.append(line.strip())
            lines = got
            self.rest_url, self.ws_url, self.archive_url = lines
            self.port = int(self.rest_url.rsplit(":", 1)[1])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 5.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
        return proc.returncode

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def __enter__(self) -> "SimProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- admin helpers --------------------------------------------------------------------
    def admin(self, path: str, payload: dict | None = None, *, method: str | None = None,
              params: dict | None = None, timeout_s: float = 10.0):
        """Call `/_sim/<path>`: GET without payload, POST with one; returns the decoded JSON."""
        url = f"{self.rest_url}/_sim/{path.lstrip('/')}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if payload is None else json.dumps(payload).encode()
        method = method or ("GET" if payload is None else "POST")
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"admin {method} {path}: HTTP {e.code} {e.read()!r}") from None

    def info(self) -> dict:
        return self.admin("info")

    def stats(self) -> dict:
        return self.admin("stats")

    def reset_stats(self) -> dict:
        return self.admin("stats/reset", {})

    def set_faults(self, **faults) -> dict:
        return self.admin("faults", faults)

    def add_hole(self, symbol: str, start_ms: int, end_ms: int) -> dict:
        return self.admin("holes", {"symbol": symbol, "start_ms": start_ms, "end_ms": end_ms})

    def clear_holes(self, symbol: str) -> dict:
        return self.admin("holes", {"symbol": symbol, "clear": True})

    def list_symbol(self, symbol: str, onboard_ms: int | None = None) -> dict:
        return self.admin("list", {"symbol": symbol, "onboard_ms": onboard_ms})

    def delist(self, symbol: str, at_ms: int | None = None, status: str = "SETTLING") -> dict:
        return self.admin("delist", {"symbol": symbol, "at_ms": at_ms, "status": status})

    def drop_ws(self) -> dict:
        return self.admin("ws/drop", {})

    def resume(self, symbol: str, at_ms: int | None = None) -> dict:
        return self.admin("resume", {"symbol": symbol, **({"at_ms": at_ms} if at_ms else {})})

    def truth(self, symbol: str, interval: str, start_ms: int = 0,
              end_ms: int | None = None) -> list[list]:
        params = {"symbol": symbol, "interval": interval, "startTime": start_ms}
        if end_ms is not None:
            params["endTime"] = end_ms
        return self.admin("truth", params=params)

    def market(self):
        """A local `Market` identical to the server's at start (same seed, size, anchor)."""
        from .market import Market
        info = self.info()
        return Market(seed=info["seed"], n_symbols=info["n_symbols"],
                      anchor_ms=info["anchor_ms"], tradfi=info.get("tradfi", 0),
                      odd=info.get("odd", 0), halted=info.get("halted", 0))
