"""The downloader actor: fetches kline pages over REST, `downloader.concurrency` at a time.

Each downloader belongs to one egress group (`config.downloader_group`: downloaders are numbered
across the groups): its REST sessions go out that group's way (`exchange.session`), it takes tasks
from that group's tasks socket, and every `TaskResult` names the group (`egress`), so the
scheduler feeds the answer's weight header to that group's budget. Its log lines name the group
(`actor=downloader-3@eth1`).

Sockets (all touched by the actor thread only):
- `tasks`   PULL, RCVHWM 1, connected to the scheduler's PUSH for this downloader's group. Read only while a request slot is
            free (unregistered from the poller otherwise), so no process hoards work.
- `results` PUSH to the scheduler: exactly one `TaskResult` per task taken.
- `writer`  PUSH of a good page as a `KlineBatch` (`live` for boundary fetches), of a good archive
            file as `ArchiveBatch`es (columns).
- `bus_sub` SUB: `ClockSync` feeds the `ServerClock` (a candle is closed by the server's clock,
            not ours); other bus traffic is ignored.

Worker threads (one keep-alive `requests.Session` each) never touch ZeroMQ: tasks go to them on a
queue, outcomes come back on another queue and a byte on a pipe whose read end sits in the poller
wakes the loop. So a worker stuck in a slow request can never block the context from closing.

A good page goes to the writer first and its result second (an empty page too: the writer's
`Committed` for it is how the scheduler learns the range is done). A failed task sends no page.
After a 429/418 no request starts until `Retry-After` has passed; tasks that come meanwhile are
answered `rate_limited` at once without touching the exchange. It never retries on its own: the
scheduler owns retries and the weight budget. What an answer means lives in `core/answers.py`. A body is
read only up to a cap derived from the page's limit (`httpcap.klines_cap_bytes`): past it the task
is `invalid` ("body too large") and the rest is never read.

Archive tasks (`ArchiveTask`, one bulk-archive zip) run on their own worker threads and never
take a REST slot, so they can never delay a boundary fetch; the scheduler bounds how many are
out at once (`archive.concurrency`, pool-wide), which also bounds this process's archive queue.
A worker fetches the `.CHECKSUM`, then the zip (both capped), and `core/archive.classify`
verifies the checksum before anything else is read. A good file goes to the writer as
`ArchiveBatch`es of 2,000 candles as columns (`source="archive"`), each encoded by the worker
as soon as its piece is checked (`archive.read_pieces`) and sent once the whole file is valid;
only the last carries the task id, so the scheduler's `Committed` for it means the whole file
is in. A bad one sends nothing and is logged naming the file.
No REST weight is spent and a REST `Retry-After` does not hold archive work.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time

import requests
import zmq

from .. import config as cfg
from .. import messages
from .. import exchange
from ..core import answers, archive
from .base import Actor
from ..core.budget import hold_until_ms
from ..core.clock import ServerClock
from ..httpcap import BodyTooLarge, SMALL_BODY_CAP_BYTES, get_capped, klines_cap_bytes
from ..core.metrics import REQUEST_OUTCOMES
from ..messages import ArchiveBatch, ArchiveTask, Candle, CandleColumns, ClockSync, DownloadTask, KlineBatch, TaskResult

STOP_WAIT_S = 2.0        # teardown: how long in-flight requests may still finish and be reported
MAX_READS_PER_WAKE = 256  # bound one handler call so no socket starves the others
# A monthly 1m zip of the busiest symbol is a few MB; far past that is not a kline file.
ARCHIVE_ZIP_CAP_BYTES = 256 * 1024 * 1024
ARCHIVE_MIN_TIMEOUT_S = 60.0  # a zip of several MB needs longer than a klines page


class Downloader(Actor):

    # -- sockets and state -------------------------------------------------------------------
    def setup(self) -> None:
        e = self.config.endpoints
        group_index, self.group = cfg.downloader_group(self.config, self.name)
        if self.config.egress:
            self.log.actor = f"{self.name}@{self.group.name}"
        self.tasks_in = self.socket(zmq.PULL, cfg.tasks_endpoint(self.config, group_index), hwm=1)
        self.results_out = self.socket(zmq.PUSH, e.results, hwm=10_000)
        # Pages wait here only while the writer is stalled; the scheduler's max_uncommitted keeps
        # them far below this.
        self.writer = self.socket(zmq.PUSH, e.writer, hwm=1000)
        self.bus = self.socket(zmq.SUB, e.bus_sub, subscribe=b"")
        self.on(self.tasks_in, self._on_tasks)
        self.on(self.bus, self._on_bus)

        self.clock = ServerClock()
        self.slots = self.config.downloader.concurrency
        self.in_flight: dict[str, DownloadTask] = {}
        self.blocked_until = 0.0  # monotonic; no request starts before it (Retry-After)
        self.fetched_candles = 0
        self.stopping = False
        self.work: queue.Queue[DownloadTask | None] = queue.Queue()
        self.outcomes: queue.Queue[tuple[DownloadTask, TaskResult, list[Candle] | None]] = queue.Queue()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.on(self.wake_r, self._on_outcomes)  # type: ignore[arg-type]  # a raw fd polls too
        self.workers = [threading.Thread(target=self._worker, name=f"fetch-{i}", daemon=True)
                        for i in range(self.slots)]
        # Archive work: its own threads and queue, never a REST slot.
        self.archive_url = cfg.archive_url(self.config)
        self.archive_in_flight: dict[str, ArchiveTask] = {}
        self.archive_work: queue.Queue[ArchiveTask | None] = queue.Queue()
        self.archived_files = 0
        archive_slots = math.ceil(self.config.archive.concurrency / cfg.downloader_count(self.config))
        self.archive_workers = [threading.Thread(target=self._archive_worker, name=f"archive-{i}",
                                                 daemon=True)
                                for i in range(archive_slots if self.archive_url else 0)]
        self.workers += self.archive_workers
        for worker in self.workers:
            worker.start()

    # -- the actor thread: tasks in ----------------------------------------------------------
    def _on_tasks(self, sock: zmq.Socket) -> None:
        for _ in range(MAX_READS_PER_WAKE):
            if len(self.in_flight) >= self.slots or not sock.poll(0):
                break
            msg = self.receive(sock)
            if msg is None:
                continue  # malformed: counted and logged by receive()
            if isinstance(msg, ArchiveTask):
                self._start_archive(msg)
                continue
            if not isinstance(msg, DownloadTask):
                self.log.warning("unexpected_message", socket="tasks", kind=type(msg).__name__,
                                 action="dropped")
                continue
            self._start(msg)
        self._arm()

    def _start(self, task: DownloadTask) -> None:
        wait_s = self.blocked_until - time.monotonic()
        if wait_s > 0:
            self._report(task, answers.held_back(task, wait_s), None)
            return
        if task.task_id in self.in_flight:
            self.log.warning("duplicate_task", task_id=task.task_id, action="dropped")
            return
        self.in_flight[task.task_id] = task
        self.work.put(task)

    def _start_archive(self, task: ArchiveTask) -> None:
        if task.task_id in self.archive_in_flight:
            self.log.warning("duplicate_task", task_id=task.task_id, action="dropped")
            return
        if not self.archive_url:
            self._report(task, TaskResult(task_id=task.task_id, status="absent",
                                          detail="archive is off in this configuration"), None)
            return
        self.archive_in_flight[task.task_id] = task
        self.archive_work.put(task)

    def _arm(self) -> None:
        """Poll the tasks socket only while a request slot is free, so tasks stay with the scheduler."""
        registered = any(s is self.tasks_in for s, _ in self.poller.sockets)
        if len(self.in_flight) < self.slots:
            if not registered:
                self.poller.register(self.tasks_in, zmq.POLLIN)
        elif registered:
            self.poller.unregister(self.tasks_in)

    def _on_bus(self, sock: zmq.Socket) -> None:
        for _ in range(MAX_READS_PER_WAKE):
            if not sock.poll(0):
                return
            msg = self.receive(sock)
            if isinstance(msg, ClockSync):
                self.clock.update(msg)

    # -- the actor thread: outcomes back -----------------------------------------------------
    def _on_outcomes(self, _fd: int) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                task, result, page = self.outcomes.get_nowait()
            except queue.Empty:
                break
            if isinstance(task, ArchiveTask):
                self.archive_in_flight.pop(task.task_id, None)
                self._report(task, result, page)
                continue
            self.in_flight.pop(task.task_id, None)
            if result.status in ("rate_limited", "banned"):
                # Any value (the next-window sentinel, a 3-day ban) becomes a bounded hold here;
                # no worker waits it out: tasks meanwhile are answered `held_back` at once.
                server_now = self.clock.now_ms()
                wait_s = (hold_until_ms(result.retry_after_s, server_now) - server_now) / 1000
                self.blocked_until = max(self.blocked_until, time.monotonic() + wait_s)
            self._report(task, result, page)
        self._arm()
        if not self.stopping and len(self.in_flight) < self.slots:
            self._on_tasks(self.tasks_in)  # take the next task now, not one poll later

    def _report(self, task: DownloadTask | ArchiveTask, result: TaskResult,
                page: list[Candle] | list[bytes] | None) -> None:
        if isinstance(task, ArchiveTask):
            self._report_archive(task, result, page)
            return
        if result.requested_at_ms:  # 0: answered without a request (held back by a Retry-After)
            self.metrics.inc("requests_total", (REQUEST_OUTCOMES.get(result.status, result.status),))
        if result.status == "ok" and page is not None:
            # The page first: the scheduler may count the task done only after the writer commits.
            self.send(self.writer, KlineBatch(symbol=task.symbol, interval=task.interval, source="rest",
                                              candles=page, task_id=task.task_id,
                                              live=task.priority == "boundary",
                                              requested_at_ms=result.requested_at_ms))
            self.fetched_candles += len(page)
            self.log.debug("fetched", task_id=task.task_id, symbol=task.symbol, interval=task.interval,
                           candles=len(page), weight_used=result.weight_used_1m)
        else:
            self.log.warning("task_failed", task_id=task.task_id, symbol=task.symbol,
                             interval=task.interval, status=result.status, http=result.http_status,
                             retry_after_s=result.retry_after_s, detail=result.detail[:200],
                             action="reported")
        result.egress = self.group.name
        self._send_result(result)

    def _send_result(self, result: TaskResult) -> None:
        result.by = self.name  # the scheduler names who did the work (a downloader on another host)
        self.send(self.results_out, result)

    def _report_archive(self, task: ArchiveTask, result: TaskResult, frames: list[bytes] | None) -> None:
        f = archive.task_file(task)
        if result.status == "ok" and frames is not None:
            # The file's `ArchiveBatch`es, encoded by the worker as each piece was checked
            # (`_archive_piece`); only the last names the task: the writer commits in order, so
            # its Committed means every batch of the file is in. An empty file: one empty batch.
            for frame in frames or [messages.encode(ArchiveBatch(
                    symbol=task.symbol, interval=task.interval, columns=messages.columns_of([]),
                    task_id=task.task_id))]:
                self.writer.send(frame)
            self.archived_files += 1
            self.fetched_candles += result.candles
            self.log.debug("archive_file_stored", task_id=task.task_id, file=f.name,
                           candles=result.candles, batches=len(frames))
        elif result.status == "absent":
            self.log.info("archive_file_absent", task_id=task.task_id, file=f.name,
                          detail=result.detail[:200], action="reported; the scheduler plans its range otherwise")
        else:
            self.log.warning("archive_file_failed", task_id=task.task_id, file=f.name,
                             url=f.url(self.archive_url), status=result.status, http=result.http_status,
                             attempt=task.attempt, detail=result.detail[:300],
                             action="nothing stored; reported")
        self._send_result(result)

    # -- stop --------------------------------------------------------------------------------
    def teardown(self) -> None:
        self.stopping = True  # tasks not taken yet stay with the scheduler
        deadline = time.monotonic() + STOP_WAIT_S
        while (self.in_flight or self.archive_in_flight) and time.monotonic() < deadline:
            if zmq.select([self.wake_r], [], [], 0.05)[0]:
                self._on_outcomes(self.wake_r)
        if self.in_flight or self.archive_in_flight:
            self.log.warning("stop_with_requests_in_flight",
                             tasks=sorted(self.in_flight) + sorted(self.archive_in_flight),
                             action="not reported; the scheduler's lease re-issues them")
        for _ in self.workers:
            self.work.put(None)
            self.archive_work.put(None)
        for worker in self.workers:
            worker.join(timeout=0.2)  # daemon threads: one stuck in a request cannot hold the exit
        self.log.info("downloader_stopped", fetched_candles=self.fetched_candles,
                      archive_files=self.archived_files)

    # -- worker threads (no ZeroMQ here) -----------------------------------------------------
    def _worker(self) -> None:
        session = exchange.session(self.config.exchange, self.group)
        url = exchange.url(self.config.exchange, exchange.KLINES_PATH)
        timeout_s = self.config.exchange.request_timeout_s
        try:
            while True:
                task = self.work.get()
                if task is None:
                    return
                page = None
                requested_at_ms = self.clock.now_ms()
                try:
                    response, body = get_capped(session, url, params=answers.klines_params(task),
                                                timeout_s=timeout_s, cap_bytes=klines_cap_bytes(task.limit))
                    result, page = answers.classify(task, response.status_code, response.headers,
                                                  body, self.clock.now_ms())
                    result.requested_at_ms = requested_at_ms
                except BodyTooLarge as exc:
                    result = answers.too_large(task, exc.status, exc.headers, str(exc))
                    result.requested_at_ms = requested_at_ms
                except requests.RequestException as exc:
                    result = answers.network_failure(task, exc)
                    result.requested_at_ms = requested_at_ms  # it may have reached the exchange
                except Exception as exc:  # noqa: BLE001 - a bug here must still free the slot
                    result = TaskResult(task_id=task.task_id, status="invalid",
                                        detail=f"downloader error {type(exc).__name__}: {exc}"[:300])
                self.outcomes.put((task, result, page))
                try:
                    os.write(self.wake_w, b"!")
                except OSError:
                    pass  # the pipe is full of wake-ups already: the loop will drain the queue
        finally:
            session.close()

    def _archive_worker(self) -> None:
        session = exchange.session(self.config.exchange)
        timeout_s = max(self.config.exchange.request_timeout_s, ARCHIVE_MIN_TIMEOUT_S)
        try:
            while True:
                task = self.archive_work.get()
                if task is None:
                    return
                f = archive.task_file(task)
                try:
                    # The CHECKSUM first: small, and its 404 spares the zip's download.
                    sum_response, sum_body = get_capped(session, f.checksum_url(self.archive_url),
                                                        cap_bytes=SMALL_BODY_CAP_BYTES, timeout_s=timeout_s)
                    if sum_response.status_code != 200:
                        zip_status, zip_body = 0, b""
                    else:
                        zip_response, zip_body = get_capped(session, f.url(self.archive_url),
                                                            cap_bytes=ARCHIVE_ZIP_CAP_BYTES,
                                                            timeout_s=timeout_s)
                        zip_status = zip_response.status_code
                    # A CHECKSUM that is not 200 decides the result; the zip is not asked.
                    result, candles = archive.classify(task, sum_response.status_code, sum_body,
                                                       zip_status, zip_body, self.clock.now_ms(),
                                                       piece=_archive_piece(task))
                    result.bytes_read = len(zip_body) + len(sum_body)
                except BodyTooLarge as exc:
                    result, candles = TaskResult(task_id=task.task_id, status="bad_file", http_status=exc.status,
                                                 detail=f"{f.name}: {exc}"), None
                except requests.RequestException as exc:
                    result, candles = TaskResult(task_id=task.task_id, status="network",
                                                 detail=f"{f.name}: {type(exc).__name__}: {exc}"[:300]), None
                except Exception as exc:  # noqa: BLE001 - a bug here must still free the task
                    result, candles = TaskResult(task_id=task.task_id, status="invalid",
                                                 detail=f"downloader error {type(exc).__name__}: {exc}"[:300]), None
                self.outcomes.put((task, result, candles))
                try:
                    os.write(self.wake_w, b"!")
                except OSError:
                    pass
        finally:
            session.close()


def _archive_piece(task: ArchiveTask):
    """What a worker makes of each checked piece of an archive file: its `ArchiveBatch`, encoded
    at once so the piece's Python objects are freed while still in the CPU's cache
    (`archive.read_pieces`); the file's last piece names the task."""
    def piece(columns: CandleColumns, last: bool) -> bytes:
        return messages.encode(ArchiveBatch(symbol=task.symbol, interval=task.interval, columns=columns,
                                            task_id=task.task_id if last else ""))
    return piece
