"""The one test harness: configs in temp dirs, waits, a whole running service (`RunningService`),
one actor as a real process (`ActorProcess`; `WriterProcess` and `DownloaderProcess` add the
sockets of that actor's peers, owned by the test; `Peers` stands around the WebSocket actor),
a feed consumer (`FeedCollector`) and the one `candle()` factory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import msgspec
import pytest
import zmq

from kl_actors import config as cfg
from kl_actors import messages
from kl_actors.core import intervals
from kl_actors.messages import ClockSync, Candle, DownloadTask, KlineBatch, TaskResult
from kl_actors.store import Store

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offset_before_boundary(interval: str, lead_ms: int, at_least_ms: int = 0) -> int:
    """A simulator clock offset (at least `at_least_ms`) that starts its clock `lead_ms` before
    an `interval` boundary: a live test sees its boundaries without waiting up to a whole one."""
    local = int(time.time() * 1000)
    return intervals.next_boundary(interval, local + lead_ms + at_least_ms) - lead_ms - local


@contextlib.contextmanager
def bulk_connection(path) -> Iterator[apsw.Connection]:
    """A connection to build a large fixture with: no journal and no syncs meanwhile (not a WAL of
    gigabytes), and WAL once it is built, as the service's files are. To fill many tables with the
    same rows, make one and `INSERT INTO t SELECT * FROM first`: SQLite copies the records as they
    are, about four times faster than making them again."""
    conn = apsw.Connection(str(path))
    try:
        conn.execute("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF")
        yield conn
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
    finally:
        conn.close()


def in_mount_namespace(script: str) -> list[str]:
    """A command prefix running a process in its own mount namespace after `script` (sh) has
    mounted what the test needs there; skips the test where user namespaces are not allowed."""
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no user/mount namespaces here: {probe.stderr.decode(errors='replace')[:200]}")
    return ["unshare", "-rm", "sh", "-ec", script + '\nexec "$@"', "sh"]


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


def backfill_config(workdir: Path, sim, depth: dict[str, int], **overrides) -> cfg.Config:
    """A service config against `sim` for these intervals and depths; `overrides` per section."""
    sections = {
        "exchange": {"rest_url": sim.rest_url, "ws_url": sim.ws_url, "request_timeout_s": 3.0},
        "klines": {"intervals": list(depth), "depth": dict(depth)},
        "downloader": {"processes": 2, "concurrency": 2, "lease_s": 10.0},
    }
    for key, value in overrides.items():
        sections.setdefault(key, {}).update(value)
    return make_config(workdir, **sections)


def server_ms(sim) -> int:
    return sim.info()["server_time_ms"]


def write_toml(config: cfg.Config, path: Path) -> Path:
    path.write_bytes(msgspec.toml.encode(config))
    return path


def _pump(pipe, lines: list[str]) -> None:
    for line in pipe:
        lines.append(line)
    pipe.close()


class RunningService:
    """A real `supervisor.py` process with the given config, stopped (and its actors) on exit."""

    def __init__(self, config: cfg.Config, workdir: Path, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.config = config
        self.status_file = Path(config.endpoints.runtime_dir) / "status.json"
        toml = write_toml(config, workdir / "service.toml")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "supervisor.py"), "--config", str(toml), *(extra_args or [])],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **env} if env else None)
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

    def wait_running(self, names, timeout: float = 30.0) -> dict:
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


def candle(open_ms: int, interval: str = "1m", *, open: str = "100.10", close: str = "100.5",
           volume: str = "12.3400", trades: int = 42) -> Candle:
    """A valid candle with exact decimal strings (trailing zeros kept, as the exchange sends)."""
    return Candle(open_ms, open, "101.000", "99.9", close, volume, intervals.close_time(interval, open_ms),
                  "1234.56789012345678", trades, "6.00000001", "617.2")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ready(timeout_s: float, *sockets: zmq.Socket):
    """Each socket with a message waiting, as messages come, until `timeout_s` passes quietly."""
    poller = zmq.Poller()
    for sock in sockets:
        poller.register(sock, zmq.POLLIN)
    end = time.monotonic() + timeout_s
    while True:
        events = dict(poller.poll(max(0, int((end - time.monotonic()) * 1000))))
        if not events:
            return
        yield from (sock for sock in sockets if sock in events)


class ActorProcess:
    """One `python -m kl_actors.run <name>` process, its stderr in a file; killed by `stop()`."""

    def __init__(self, name: str, config, workdir: Path, wrap: list[str] | None = None) -> None:
        self.config = config
        config_file = workdir / f"{name}.json"
        config_file.write_bytes(msgspec.json.encode(config))
        self.stderr_path = workdir / f"{name}.stderr"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [*(wrap or []), sys.executable, "-m", "kl_actors.run", name, "--config-file", str(config_file)],
            cwd=ROOT, stderr=self._stderr)

    def stderr(self, tail: int | None = None) -> str:
        self._stderr.flush()
        text = self.stderr_path.read_text(errors="replace")
        return text[-tail:] if tail else text

    def kill(self) -> int:
        """SIGKILL (if still running), wait; the exit status."""
        if self.proc.poll() is None:
            self.proc.kill()
        rc = self.proc.wait(10)
        self._stderr.close()
        return rc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


class DownloaderProcess(ActorProcess):
    """A downloader process plus the sockets of all its peers, owned by the test."""

    def __init__(self, workdir: Path, rest_url: str, concurrency: int = 2, timeout_s: float = 5.0,
                 proxy: str = "", archive_url: str = "", egress: list[dict] | None = None,
                 name: str = "downloader-1") -> None:
        self.config = make_config(workdir, exchange={"rest_url": rest_url, "request_timeout_s": timeout_s,
                                                     "proxy": proxy},
                                  downloader={"concurrency": concurrency}, log={"level": "DEBUG"},
                                  archive={"base_url": archive_url, "concurrency": 2})
        if egress:  # `[[egress]]` groups: `name` takes tasks from its own group's socket
            self.config = cfg.check(msgspec.structs.replace(
                self.config, egress=[cfg.EgressConfig(**g) for g in egress]), "test")
        Path(self.config.endpoints.runtime_dir).mkdir(mode=0o700, exist_ok=True)
        e = self.config.endpoints
        self.ctx = zmq.Context()
        self.tasks = self._sock(zmq.PUSH, cfg.tasks_endpoint(self.config, cfg.downloader_group(self.config, name)[0]))
        self.results = self._sock(zmq.PULL, e.results)
        self.writer = self._sock(zmq.PULL, e.writer)
        self.bus = self._sock(zmq.PUB, e.bus_sub)
        self.control = self._sock(zmq.PULL, e.control)
        super().__init__(name, self.config, workdir)
        self.n = 0
        try:
            if not self.control.poll(10_000):
                raise AssertionError(f"downloader never sent a heartbeat\n{self.stderr()}")
        except BaseException:
            self.close()
            raise

    def _sock(self, kind: int, endpoint: str) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint)
        return sock

    def stderr(self, tail: int | None = 4000) -> str:
        return super().stderr(tail)

    def task(self, start_ms: int, end_ms: int, symbol: str = "BTCUSDT", interval: str = "1m",
             limit: int = 499, priority: str = "backfill") -> DownloadTask:
        self.n += 1
        t = DownloadTask(task_id=f"t-{self.n}", symbol=symbol, interval=interval, start_ms=start_ms,
                         end_ms=end_ms, limit=limit, priority=priority)
        self.tasks.send(messages.encode(t))
        return t

    def result(self, timeout_s: float = 5.0) -> TaskResult:
        if not self.results.poll(int(timeout_s * 1000)):
            raise AssertionError(f"no result within {timeout_s}s\n{self.stderr()}")
        msg = messages.decode(self.results.recv())
        assert isinstance(msg, TaskResult), msg
        return msg

    def batch(self, timeout_s: float = 2.0) -> KlineBatch | messages.ArchiveBatch | None:
        if not self.writer.poll(int(timeout_s * 1000)):
            return None
        msg = messages.decode(self.writer.recv())
        assert isinstance(msg, (KlineBatch, messages.ArchiveBatch)), type(msg)
        return msg

    def run(self, *args, **kwargs) -> tuple[TaskResult, KlineBatch | None]:
        """Send one task; its result, and its batch if one came (briefly waited for on failure)."""
        t = self.task(*args, **kwargs)
        result = self.result()
        assert result.task_id == t.task_id
        batch = self.batch(2.0 if result.status == "ok" else 0.2)
        if batch is not None:
            assert batch.task_id == t.task_id
        return result, batch

    def clock(self, offset_ms: float) -> None:
        self.bus.send(messages.encode(ClockSync(offset_ms=offset_ms, rtt_ms=1.0, measured_at_ms=now_ms())))

    def close(self) -> int | None:
        rc = self.kill()
        self.ctx.destroy(linger=0)
        return rc


class WriterProcess(ActorProcess):
    """A writer process plus the sockets of its peers, all owned by the test."""

    def __init__(self, workdir: Path, wait: bool = True, database: dict | None = None,
                 wrap: list[str] | None = None, remote: dict | None = None, **writer_settings) -> None:
        settings = {"max_rows_per_txn": 50_000, "max_delay_ms": 20, **writer_settings}
        self.config = make_config(workdir, writer=settings, log={"level": "DEBUG"},
                                  database=database or {}, remote=remote or {})
        Path(self.config.endpoints.runtime_dir).mkdir(mode=0o700, exist_ok=True)
        self.db_path = self.config.database.path
        e = self.config.endpoints
        self.ctx = zmq.Context()
        self.control = self._sock(zmq.PULL, e.control, bind=True)
        self.bus = self._sock(zmq.SUB, e.bus_pub, bind=True)
        self.feed = self._sock(zmq.SUB, e.feed_in, bind=True)
        self.push = self._sock(zmq.PUSH, e.writer, bind=False)
        super().__init__("writer", self.config, workdir, wrap=wrap)
        self.bus_messages: list = []
        self.feed_messages: list[tuple[bytes, messages.FeedKline]] = []
        self.heartbeats: list[messages.Heartbeat] = []
        self.heartbeat_times: list[float] = []  # monotonic arrival time of each heartbeat
        self.events: list[tuple[str, object]] = []  # ("bus"|"feed", message) in arrival order
        if wait:
            self.wait_connected()

    def _sock(self, kind: int, endpoint: str, bind: bool) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if kind == zmq.SUB:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        (sock.bind if bind else sock.connect)(endpoint)
        return sock

    def wait_connected(self) -> None:
        # An empty batch with a task id is answered at once: proves PUSH -> writer -> bus works.
        deadline = time.monotonic() + 10
        n = 0
        while time.monotonic() < deadline:
            n += 1
            probe = f"probe-{n}"
            self.send(KlineBatch("BTCUSDT", "1m", "rest", [], task_id=probe))
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                self.pump(0.05)
                if any(isinstance(m, messages.Committed) and probe in m.task_ids for m in self.bus_messages):
                    self.bus_messages.clear()
                    self.events.clear()
                    return
            assert self.proc.poll() is None, self.stderr()
        raise AssertionError(f"writer never answered a probe\n{self.stderr()}")

    def send(self, message) -> None:
        self.push.send(message if isinstance(message, bytes) else messages.encode(message))

    def pump(self, timeout_s: float) -> None:
        """Receive whatever arrives within timeout_s on bus, feed and control."""
        for sock in ready(timeout_s, self.bus, self.feed, self.control):
            if sock is self.bus:
                m = messages.decode(self.bus.recv())
                self.bus_messages.append(m)
                self.events.append(("bus", m))
            elif sock is self.feed:
                topic, body = self.feed.recv_multipart()
                f = messages.decode_feed(body)
                self.feed_messages.append((topic, f))
                self.events.append(("feed", f))
            else:
                self.heartbeats.append(messages.decode(self.control.recv()))
                self.heartbeat_times.append(time.monotonic())

    def wait_bus(self, predicate, timeout: float = 5.0, what: str = "bus message"):
        def found():
            self.pump(0.05)
            return next((m for m in self.bus_messages if predicate(m)), None)
        try:
            return wait_for(found, timeout, interval=0, what=what)
        except AssertionError:
            raise AssertionError(f"{what} not seen; bus={self.bus_messages}\n{self.stderr()}") from None

    def wait_committed(self, task_id: str, timeout: float = 5.0) -> messages.Committed:
        return self.wait_bus(lambda m: isinstance(m, messages.Committed) and task_id in m.task_ids,
                             timeout, what=f"Committed for {task_id}")

    def wait_failed(self, task_id: str, timeout: float = 5.0) -> messages.WriteFailed:
        return self.wait_bus(lambda m: isinstance(m, messages.WriteFailed) and task_id in m.task_ids,
                             timeout, what=f"WriteFailed for {task_id}")

    def reader(self) -> Store:
        return Store.open_readonly(path=self.db_path)

    def rows(self, symbol: str, interval: str) -> list[tuple]:
        store = self.reader()
        try:
            return store.candles(symbol, interval)
        finally:
            store.close()

    def stderr(self, tail: int | None = 6000) -> str:
        return super().stderr(tail)

    def close(self) -> None:
        self.kill()
        self.ctx.destroy(linger=0)


class Peers:
    """The sockets around the actor, and everything received on them with local receive times."""

    def __init__(self, config) -> None:
        e = config.endpoints
        Path(e.runtime_dir).mkdir(mode=0o700, exist_ok=True)
        self.ctx = zmq.Context()
        self.feed = self._bind(zmq.SUB, e.feed_in)
        self.writer = self._bind(zmq.PULL, e.writer)
        self.control = self._bind(zmq.PULL, e.control)
        self.feed_messages: list[tuple[bytes, messages.FeedKline]] = []
        self.gaps: list[messages.FeedGap] = []  # losses reported to the broker
        self.batches: list[tuple[int, messages.KlineBatch]] = []   # (local receive ms, batch)
        self.heartbeats = 0

    def _bind(self, kind: int, endpoint: str) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if kind == zmq.SUB:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.bind(endpoint)
        return sock

    def pump(self, timeout_s: float = 0.1) -> None:
        for sock in ready(timeout_s, self.feed, self.writer, self.control):
            if sock is self.feed:
                topic, body = self.feed.recv_multipart()
                if topic == messages.FEED_GAP_TOPIC:
                    self.gaps.append(messages.decode_feed_gap(body))
                else:
                    self.feed_messages.append((topic, messages.decode_feed(body)))
            elif sock is self.writer:
                self.batches.append((int(time.time() * 1000), messages.decode(self.writer.recv())))
            else:
                self.control.recv()
                self.heartbeats += 1

    def pump_until(self, actor, predicate, timeout: float, what: str):
        """Pump until `predicate()` is true; the actor must stay alive meanwhile."""
        def step():
            self.pump(0.1)
            assert actor.proc.poll() is None, actor.stderr()
            return predicate()
        return wait_for(step, timeout, interval=0, what=what)

    def closed(self, interval: str, open_ms: int) -> dict[str, messages.Candle]:
        return {b.symbol: b.candles[0] for _, b in self.batches
                if b.interval == interval and b.candles[0].open_time_ms == open_ms}

    def close(self) -> None:
        for s in (self.feed, self.writer, self.control):
            s.close()
        self.ctx.term()
