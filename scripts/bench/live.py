"""Live-edge latency benchmark: `python scripts/bench.py live [--minutes 3] [--symbols 200]`.

What it measures: for every 1m candle that closes while the service runs, the time from its
close (open + 60 s, server time) to
- its commit in the database: `committed_at_ms` of the first `Committed` on the internal bus
  whose table entry covers the candle (the writer's wall clock, taken right after COMMIT);
- its arrival at a feed consumer: local wall time when a SUB socket on the consumer feed
  received the first `FeedKline` for that candle of the kind being measured.
Reported as count, p50, p99 and max per path and measure, plus how many of the expected
candles (symbols x boundaries) were seen at all, so a missing candle cannot hide in the figures.

How: two runs, each against its own simulator (clock offset 0, so local wall time is server
time) and a fresh database, 1m only, depth 5 so backfill is over within seconds:
1. WebSocket path: the whole service. The WebSocket `x:true` close is usually committed first
   and the boundary REST fetch follows and replaces it; when the REST copy wins the race, the
   late WebSocket copy is refused by the upsert and never published as stored, so the table also
   shows the first stored copy of either source and which copy the first commit held.
2. REST boundary path: every actor but `websocket` (`supervisor.py --actors ...`), so the
   boundary fetch is the only way a candle gets in.
Only boundaries after backfill is over (every task of the scheduler's first plan committed) and,
on the WebSocket path, after the WebSocket connection is open are counted, so neither start-up
nor backfill commits pollute the figures. The bench subscribes before the service starts.

The simulator sends a kline's `x:true` event 200-400 ms after the close on purpose (the exchange
takes 0.2-2 s), and the scheduler asks for a boundary candle `live.boundary_margin_ms` after the
close: both delays are part of the figures, as they are for a real consumer.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests
import zmq
from harness import RunningService, wait_for

from kl_actors import config as cfg
from kl_actors import messages
from kl_actors.core import intervals
from kl_actors.sim.process import SimProcess
from kl_actors.supervisor import actor_names

from . import service_config

INTERVAL = "1m"
DEPTH = 5
MINUTE_MS = 60_000
TAIL_S = 15.0  # after the last counted boundary: anything later than this counts as missing
BACKFILL_KINDS = ("new:", "tail:", "hole:")  # task id prefixes of backfill (scheduler.py)


def now_ms() -> float:
    return time.time() * 1000


# -- the service --------------------------------------------------------------------------------

def make_config(workdir: Path, sim: SimProcess) -> cfg.Config:
    return service_config(workdir, exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
                          klines={"intervals": [INTERVAL], "depth": {INTERVAL: DEPTH}}, log={"level": "INFO"})


class Service(RunningService):
    """The harness's `RunningService` (`supervisor.py` with `config`, `--actors` when given), plus
    what a bench waits for and reads in its log; a wait ends at once when the service exits."""

    def __init__(self, config: cfg.Config, workdir: Path, actors: list[str] | None) -> None:
        super().__init__(config, workdir, ["--actors", ",".join(actors)] if actors else None)
        self.names = actors or actor_names(config)

    def wait(self, predicate, timeout_s: float, what: str):
        def alive_and_true():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited ({self.proc.returncode}) while waiting for {what}:\n"
                                   + "".join(self.err_lines[-30:]))
            return predicate()
        return wait_for(alive_and_true, timeout_s, what=what)

    def wait_started(self, timeout_s: float) -> None:
        self.wait(lambda: all(self.pid(n) for n in self.names), timeout_s, "every actor started")

    def wait_log(self, pattern: str, timeout_s: float) -> re.Match:
        compiled = re.compile(pattern)

        def found() -> re.Match | None:
            return next((m for line in list(self.err_lines) if (m := compiled.search(line))), None)
        return self.wait(found, timeout_s, f"log line {pattern!r}")

    def problems(self) -> Counter:
        """Warning and error events in the log: where to look when candles are missing."""
        found: Counter = Counter()
        for line in self.err_lines:
            m = re.search(r"level=(warning|error) actor=(\S+) event=(\S+)", line)
            if m:
                found[f"{m.group(2)} {m.group(3)} ({m.group(1)})"] += 1
        return found

    def finish(self) -> int:
        """`stop()` (SIGTERM, kill after 20 s), then kill any actor left behind; the exit status."""
        code, _ = super().stop()
        self.cleanup()
        return code


def trading_symbols(sim: SimProcess) -> list[str]:
    info = requests.get(sim.rest_url + "/fapi/v1/exchangeInfo", timeout=10).json()
    return sorted(s["symbol"] for s in info["symbols"]
                  if s["contractType"] == "PERPETUAL" and s["quoteAsset"] == "USDT" and s["status"] == "TRADING")


# -- what the bench sees: the bus and the feed ----------------------------------------------------

@dataclass
class Seen:
    """First sightings per candle (symbol, open_ms); all times are wall-clock ms."""

    commit: dict[tuple[str, int], float] = field(default_factory=dict)
    # Whether that first commit carried the candle's REST boundary task (else: the WebSocket copy).
    commit_by_rest: dict[tuple[str, int], bool] = field(default_factory=dict)
    # (symbol, open_ms, source, stored) -> arrival of the first closed FeedKline of that kind.
    feed: dict[tuple[str, int, str, bool], float] = field(default_factory=dict)
    backfill_commits: dict[str, float] = field(default_factory=dict)  # task id -> committed_at_ms
    feed_gaps: int = 0  # seq jumps: messages the feed dropped for this consumer


class Recorder(threading.Thread):
    """Subscribes to the internal bus and the consumer feed; one thread so both clocks are read
    the same way, right after the receive."""

    def __init__(self, config: cfg.Config) -> None:
        super().__init__(daemon=True)
        self.seen = Seen()
        self._halt = threading.Event()
        self._ctx = zmq.Context()
        self.bus = self._sub(config.endpoints.bus_sub, b"")
        self.feed = self._sub(config.endpoints.feed, b"kline.")
        self._last_seq: dict[bytes, int] = {}

    def _sub(self, endpoint: str, prefix: bytes) -> zmq.Socket:
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, 0)  # never drop on our side: a stall shows as latency instead
        sock.setsockopt(zmq.SUBSCRIBE, prefix)
        sock.connect(endpoint)  # before the service binds it: zmq retries until it exists
        return sock

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.bus, zmq.POLLIN)
        poller.register(self.feed, zmq.POLLIN)
        try:
            while not self._halt.is_set():
                for sock, _ in poller.poll(100):
                    for _ in range(1000):
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        at = now_ms()
                        if sock is self.bus:
                            self._on_bus(frames[0])
                        else:
                            self._on_feed(frames, at)
        finally:
            self._ctx.destroy(linger=0)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def _on_bus(self, frame: bytes) -> None:
        msg = messages.decode(frame)
        if not isinstance(msg, messages.Committed):
            return
        s = self.seen
        for task_id in msg.task_ids:
            if task_id.startswith(BACKFILL_KINDS):
                s.backfill_commits.setdefault(task_id, msg.committed_at_ms)
        rest_tasks = set(msg.task_ids)
        for t in msg.tables:
            if t.interval != INTERVAL:
                continue
            for open_ms in intervals.open_times(INTERVAL, t.first_open_ms, t.last_open_ms):
                key = (t.symbol, open_ms)
                if key not in s.commit:
                    s.commit[key] = msg.committed_at_ms
                    s.commit_by_rest[key] = f"boundary:{t.symbol}:{INTERVAL}:{open_ms}" in rest_tasks

    def _on_feed(self, frames: list[bytes], at: float) -> None:
        topic, body = frames
        k = messages.decode_feed(body)
        if isinstance(k, messages.DecodeError):
            return
        last = self._last_seq.get(topic)
        if last is not None and k.seq != last + 1:
            self.seen.feed_gaps += 1
        self._last_seq[topic] = k.seq
        if k.closed:
            self.seen.feed.setdefault((k.symbol, k.candle.open_time_ms, k.source, k.stored), at)

    def backfill_over_ms(self, planned_tasks: int) -> float | None:
        """When the last task of the first plan was committed, once all of them have been."""
        done = sorted(self.seen.backfill_commits.values())
        return done[planned_tasks - 1] if len(done) >= planned_tasks else None


# -- one run and its figures ------------------------------------------------------------------------

@dataclass
class Figures:
    path: str
    expected: int
    # measure label -> latencies in ms (one per candle seen)
    latencies: dict[str, list[float]]
    notes: list[str]


def run_path(path: str, n_symbols: int, minutes: int, weight_limit: int) -> Figures:
    workdir = Path(tempfile.mkdtemp(prefix="klb-", dir="/tmp"))  # ipc:// paths must stay short
    try:
        with SimProcess(symbols=n_symbols, weight_limit=weight_limit) as sim:
            symbols = trading_symbols(sim)
            config = make_config(workdir, sim)
            actors = None if path == "websocket" else [n for n in actor_names(config) if n != "websocket"]
            recorder = Recorder(config)
            recorder.start()
            service = Service(config, workdir, actors)
            try:
                boundaries = _wait_live_run(service, recorder, path, minutes)
            finally:
                code = service.finish()
                recorder.stop()
            stats = sim.stats()
        return _figures(path, symbols, boundaries, recorder.seen, service, code, stats)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_live_run(service: Service, recorder: Recorder, path: str, minutes: int) -> list[int]:
    """Wait for start-up and backfill, then for `minutes` boundaries; returns those boundaries."""
    service.wait_started(30)
    planned = int(service.wait_log(r"event=planned tasks=(\d+)", 60).group(1))
    ready = service.wait(lambda: recorder.backfill_over_ms(planned), 120, f"{planned} backfill tasks committed")
    if path == "websocket":
        service.wait_log(r"actor=websocket event=connection_opened", 30)
        ready = max(ready, now_ms())
    first = intervals.next_boundary(INTERVAL, int(ready))
    boundaries = [first + i * MINUTE_MS for i in range(minutes)]
    print(f"  {path}: {planned} backfill tasks committed by {_hhmm(ready)}; counting the candles closing "
          f"at {', '.join(_hhmm(b) for b in boundaries)} (UTC)", flush=True)
    end = boundaries[-1] + TAIL_S * 1000
    while now_ms() < end:
        if service.proc.poll() is not None:
            raise RuntimeError("the service exited during the run:\n" + "".join(service.err_lines[-30:]))
        time.sleep(0.2)
    return boundaries


def _hhmm(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ms / 1000))


def _figures(path: str, symbols: list[str], boundaries: list[int], seen: Seen, service: Service,
             exit_code: int, stats: dict) -> Figures:
    candles = [(s, b - MINUTE_MS, b) for b in boundaries for s in symbols]  # (symbol, open, close)

    def feed_at(symbol: str, open_ms: int, *kinds: tuple[str, bool]) -> float | None:
        """First arrival among the given (source, stored) kinds of closed FeedKline."""
        times = [seen.feed[(symbol, open_ms, *k)] for k in kinds if (symbol, open_ms, *k) in seen.feed]
        return min(times) if times else None

    def after_close(when) -> list[float]:
        return [t - c for s, o, c in candles if (t := when(s, o)) is not None]

    stored_kinds = [("ws", True), ("rest", True)] if path == "websocket" else [("rest", True)]
    lat: dict[str, list[float]] = {
        "close -> commit (first Committed)": after_close(lambda s, o: seen.commit.get((s, o)))}
    if path == "websocket":
        by_rest = seen.commit_by_rest
        lat["  of which the WS copy was first"] = after_close(
            lambda s, o: seen.commit[(s, o)] if by_rest.get((s, o)) is False else None)
        lat["  of which the Committed held the REST fetch"] = after_close(
            lambda s, o: seen.commit[(s, o)] if by_rest.get((s, o)) else None)
        lat["close -> feed, raw WS close (stored=false, ws)"] = after_close(
            lambda s, o: feed_at(s, o, ("ws", False)))
        lat["close -> feed, stored WS copy (stored=true, ws)"] = after_close(
            lambda s, o: feed_at(s, o, ("ws", True)))
        lat["close -> feed, stored REST copy (stored=true, rest)"] = after_close(
            lambda s, o: feed_at(s, o, ("rest", True)))
        lat["close -> feed, first stored copy (ws or rest)"] = after_close(
            lambda s, o: feed_at(s, o, *stored_kinds))
    else:
        lat["close -> feed, stored REST copy (stored=true, rest)"] = after_close(
            lambda s, o: feed_at(s, o, *stored_kinds))
    # The hop after COMMIT: bus announcement, then writer -> broker -> consumer.
    lat["commit -> feed (first stored copy - first commit)"] = [
        t - seen.commit[(s, o)] for s, o, _ in candles
        if (s, o) in seen.commit and (t := feed_at(s, o, *stored_kinds)) is not None]
    lat["close -> boundary tasks queued (scheduler late_ms)"] = _boundary_late_ms(service, boundaries)

    notes = []
    missing = [(s, o) for s, o, _ in candles if (s, o) not in seen.commit]
    if missing:
        examples = ", ".join(f"{s}@{_hhmm(o)}" for s, o in missing[:5])
        notes.append(f"never committed: {len(missing)}, e.g. {examples}")
    if path == "websocket":
        notes.append("a WS copy that reaches the writer after the REST copy is refused by the upsert (REST "
                     "wins) and never published as stored: hence a short 'stored WS copy' count")
    notes.append(f"feed seq jumps seen by the consumer: {seen.feed_gaps}")
    status = stats.get("responses_by_status", {})
    notes.append(f"simulator: 429={status.get('429', 0)} 418={status.get('418', 0)}; service exit {exit_code}")
    problems = service.problems()
    if problems:
        notes.append("log warnings/errors: " + ", ".join(f"{k} x{n}" for k, n in problems.most_common(8)))
    return Figures(path, len(candles), lat, notes)


def _boundary_late_ms(service: Service, boundaries: list[int]) -> list[float]:
    """How long after each counted boundary the scheduler queued its fetches (server clock)."""
    wanted = set(boundaries)
    late = []
    for line in service.err_lines:
        m = re.search(r"event=boundary boundary_ms=(\d+) .*late_ms=(-?\d+)", line)
        if m and int(m.group(1)) in wanted:
            late.append(float(m.group(2)))
    return late


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def print_figures(f: Figures) -> None:
    print(f"\n{f.path} path: {f.expected} candles expected")
    print(f"  {'measure':<52} {'seen':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for label, values in f.latencies.items():
        values = sorted(values)
        per_candle = label.startswith(("close -> commit", "close -> feed"))
        seen = f"{len(values)}/{f.expected}" if per_candle else f"{len(values)}"
        if values:
            print(f"  {label:<52} {seen:>9} {percentile(values, 50):>8.0f} {percentile(values, 99):>8.0f} "
                  f"{values[-1]:>8.0f}")
        else:
            print(f"  {label:<52} {seen:>9} {'-':>8} {'-':>8} {'-':>8}")
    for note in f.notes:
        print(f"  {note}")
    sys.stdout.flush()


def run(minutes: int = 3, symbols: int = 200, weight_limit: int = 2400) -> None:
    realistic = "realistic (the exchange's figure)" if weight_limit == 2400 else "not the exchange's 2400"
    defaults = cfg.Config()
    print(f"live latency: {symbols} symbols x {INTERVAL}, {minutes} boundaries per path, depth {DEPTH}; "
          f"simulator weight limit {weight_limit}/min, {realistic}; clock offset 0 (local = server time)")
    print(f"service defaults: {defaults.downloader.processes} downloaders x {defaults.downloader.concurrency} "
          f"in flight, boundary margin {defaults.live.boundary_margin_ms} ms, finality re-check "
          f"{defaults.live.final_recheck_ms} ms, writer max delay {defaults.writer.max_delay_ms} ms; "
          f"simulator sends WS x:true 200-400 ms after the close", flush=True)
    for path in ("websocket", "rest"):
        print_figures(run_path(path, symbols, minutes, weight_limit))
