"""The downloader actor: fetches kline pages over REST, `downloader.concurrency` at a time.

Sockets: PULL from the scheduler's `tasks` (HWM 1, read only while a request slot is free, so
no process hoards work), PUSH of pages to the `writer`, PUSH of one `TaskResult` per task to the
scheduler's `results`, SUB on the bus for `ClockSync` (a candle counts as closed by the server's
clock, not ours). Worker threads own one keep-alive `requests.Session` each and hand outcomes back
through an in-process queue plus an inproc wake-up socket; only the actor thread touches the
real sockets.

A good page goes to the writer first and its result second (an empty page too: the writer's
`Committed` for it is how the scheduler learns the range is done). A failed task sends no page.
After a 429/418 the downloader starts no request until `Retry-After` has passed; tasks that come
meanwhile are answered `rate_limited` at once. It never retries on its own.
"""

from __future__ import annotations

import queue
import threading
import time

import requests
import zmq

from . import fetch
from .actor import Actor
from .clock import ServerClock
from .messages import ClockSync, DownloadTask, KlineBatch, TaskResult

WAKE_ENDPOINT = "inproc://downloader-wake"


class Downloader(Actor):
    kind = "downloader"

    def setup(self) -> None:
        e = self.config.endpoints
        self.tasks_in = self.socket(zmq.PULL, e.tasks, hwm=1)
        self.results_out = self.socket(zmq.PUSH, e.results, hwm=10_000)
        self.writer = self.socket(zmq.PUSH, e.writer, hwm=10_000)
        self.bus = self.socket(zmq.SUB, e.bus_sub, subscribe=b"")
        self.wake = self.socket(zmq.PULL, WAKE_ENDPOINT, bind=True)
        self.on(self.tasks_in, self._on_tasks)
        self.on(self.bus, self._on_bus)
        self.on(self.wake, self._on_outcomes)
        self.clock = ServerClock()
        self.slots = self.config.downloader.concurrency
        self.busy = 0
        self.blocked_until = 0.0  # monotonic
        self.work: queue.Queue = queue.Queue()
        self.outcomes: queue.Queue = queue.Queue()
        self.workers = [threading.Thread(target=self._worker, name=f"fetch-{i}", daemon=True)
                        for i in range(self.slots)]
        for w in self.workers:
            w.start()
        self.fetched = 0

    # -- the actor thread --------------------------------------------------------------------
    def _on_tasks(self, sock: zmq.Socket) -> None:
        while self.busy < self.slots:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            task = self._decode_task(frame)
            if task is None:
                continue
            wait = self.blocked_until - time.monotonic()
            if wait > 0:
                self.send(self.results_out, TaskResult(task_id=task.task_id, status="rate_limited",
                                                       retry_after_s=round(wait, 3), detail="held back by Retry-After"))
                continue
            self.busy += 1
            self.work.put(task)
        self._arm()

    def _decode_task(self, frame: bytes) -> DownloadTask | None:
        from . import messages

        msg = messages.decode(frame)
        if isinstance(msg, DownloadTask):
            self.handled += 1
            return msg
        self.dropped_malformed += 1
        reason = msg.reason if isinstance(msg, messages.DecodeError) else f"unexpected {type(msg).__name__}"
        self.log.warning("malformed_message", socket="tasks", reason=reason, dropped_total=self.dropped_malformed,
                         action="dropped")
        return None

    def _arm(self) -> None:
        """Listen for tasks only while a slot is free."""
        if self.busy < self.slots:
            if self.tasks_in not in self._registered():
                self.poller.register(self.tasks_in, zmq.POLLIN)
        elif self.tasks_in in self._registered():
            self.poller.unregister(self.tasks_in)

    def _registered(self) -> set:
        return {s for s, _ in self.poller.sockets}

    def _on_bus(self, sock: zmq.Socket) -> None:
        while sock.poll(0):
            msg = self.receive(sock)
            if isinstance(msg, ClockSync):
                self.clock.update(msg)

    def _on_outcomes(self, sock: zmq.Socket) -> None:
        while sock.poll(0):
            sock.recv()
        while True:
            try:
                task, result, page = self.outcomes.get_nowait()
            except queue.Empty:
                break
            self.busy -= 1
            self._report(task, result, page)
        self._arm()

    def _report(self, task: DownloadTask, result: TaskResult, page) -> None:
        if result.status in ("rate_limited", "banned"):
            self.blocked_until = max(self.blocked_until, time.monotonic() + max(result.retry_after_s, 1.0))
        if page is not None:
            self.send(self.writer, KlineBatch(symbol=task.symbol, interval=task.interval, source="rest",
                                              candles=page, task_id=task.task_id,
                                              live=task.priority == "boundary"))
            self.fetched += len(page)
            self.log.debug("fetched", task_id=task.task_id, candles=len(page), weight_used=result.weight_used_1m)
        else:
            self.log.warning("task_failed", task_id=task.task_id, symbol=task.symbol, interval=task.interval,
                             status=result.status, http=result.http_status, detail=result.detail[:200],
                             action="reported")
        self.send(self.results_out, result)

    def teardown(self) -> None:
        deadline = time.monotonic() + 2.0
        while self.busy and time.monotonic() < deadline:
            if self.wake.poll(100):
                self._on_outcomes(self.wake)
        for _ in self.workers:
            self.work.put(None)
        for w in self.workers:
            w.join(timeout=1.0)  # a worker's socket must close before the context ends

    # -- worker threads ----------------------------------------------------------------------
    def _worker(self) -> None:
        assert self.context is not None
        wake = self.context.socket(zmq.PUSH)
        wake.setsockopt(zmq.LINGER, 0)
        wake.connect(WAKE_ENDPOINT)
        session = requests.Session()
        if self.config.exchange.proxy:
            session.proxies = {"http": self.config.exchange.proxy, "https": self.config.exchange.proxy}
        rest_url, timeout = self.config.exchange.rest_url, self.config.exchange.request_timeout_s
        try:
            while True:
                task = self.work.get()
                if task is None:
                    return
                try:
                    response = fetch.request(session, rest_url, task, timeout)
                    result, page = fetch.classify(task, response, self.clock.now_ms())
                except requests.RequestException as exc:
                    result, page = fetch.network_failure(task, exc), None
                self.outcomes.put((task, result, page))
                wake.send(b"")
        finally:
            session.close()
            wake.close()
