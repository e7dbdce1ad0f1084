"""The writer facing a database that refuses writes (a part of the writer actor, by idea).

When the database refuses every write (another process holds the write lock, the disk is full,
the file turned read-only, an I/O error), no batch is at fault: the group is kept whole, the
inbox is no longer read (senders' queues fill up, so the pressure reaches them), heartbeats go
on, and the group is tried again every fraction of a second (busy) or every few seconds (the
rest). No attempt waits longer than `BUSY_SLICE_MS` for the lock. One line when it starts
(`database_blocked`), one when it ends (`database_resumed blocked_s=`). Opening the database
at start is retried the same way; a file that can never be written (read-only, not a database,
cannot be created) is one `database_unusable` line and exit status `EXIT_FATAL` (78), on which the
supervisor stops the service with exit 2 instead of restarting the writer.

A mixin of `Writer`: it uses the writer's state (`store`, `hold`, `pending`) and never runs on
its own; it never drops a batch.
"""

from __future__ import annotations

import time

import apsw

from ..config import EXIT_FATAL
from ..store import Store, StoreError

# The longest one attempt waits for another process's write lock (far below any heartbeat
# timeout); waits beyond it happen in the loop, with heartbeats.
BUSY_SLICE_MS = 250
HOLD_RETRY_S = 0.25        # busy: next attempt
HOLD_RETRY_SLOW_S = 2.0    # disk full, read-only, I/O error: next attempt
HOLD_ERRORS = (apsw.BusyError, apsw.LockedError, apsw.FullError, apsw.ReadOnlyError,
               apsw.IOError, apsw.CantOpenError)


class Hold:
    """The database refuses writes for now (busy, full, read-only): nothing is read, nothing is
    dropped, the whole pending group is tried again at `next_try`."""

    __slots__ = ("reason", "error", "since", "next_try", "attempts")

    def __init__(self, reason: str, error: str, now: float, retry_s: float) -> None:
        self.reason = reason
        self.error = error
        self.since = now
        self.next_try = now + retry_s
        self.attempts = 1


class DatabaseHold:
    def _open_store(self, now: float) -> bool:
        try:
            self.store = Store.open_writer(self.config.database, busy_timeout_ms=self.busy_ms)
        except StoreError as exc:
            # The file can never be written as it is: restarting cannot help.
            self.log.error("database_unusable", error=str(exc)[:300],
                           action=f"exiting fatal ({EXIT_FATAL}): the supervisor stops the service")
            raise SystemExit(EXIT_FATAL) from None
        except HOLD_ERRORS as exc:
            self._hold(exc, now, opening=True)
            return False
        return True

    def _wait(self, timeout_ms: int) -> dict:
        if self.hold is not None:
            # The inbox is not read while the database refuses writes: batches wait in the
            # senders' queues (bounded by their high-water marks), and the pending group here
            # stays as it is. Only heartbeats and retries go on.
            time.sleep(timeout_ms / 1000)
            return {}
        return super()._wait(timeout_ms)

    def _hold(self, exc: Exception, now: float, opening: bool = False) -> None:
        reason = hold_reason(exc)
        retry_s = HOLD_RETRY_S if reason == "busy" else HOLD_RETRY_SLOW_S
        if self.hold is not None:
            self.hold.attempts += 1
            self.hold.next_try = now + retry_s
            return
        self.hold = Hold(reason, describe(exc), now, retry_s)
        self.log.warning("database_blocked", reason=reason, error=self.hold.error,
                         phase="opening" if opening else "commit", batches=len(self.pending),
                         rows=self.pending_rows,
                         action=f"holding the batches, inbox paused, retry every {retry_s}s")

    def _retry(self, now: float) -> None:
        if self.store is None and not self._open_store(now):
            return
        if self.pending:
            self._commit()
        else:
            self._resume()

    def _resume(self) -> None:
        if self.hold is None:
            return
        hold, self.hold = self.hold, None
        self.log.info("database_resumed", reason=hold.reason,
                      blocked_s=round(time.monotonic() - hold.since, 1), attempts=hold.attempts,
                      batches=len(self.pending))


def hold_reason(exc: Exception) -> str:
    """Why the database refuses writes, for the log line (busy decides the retry pace)."""
    if isinstance(exc, (apsw.BusyError, apsw.LockedError)):
        return "busy"
    if isinstance(exc, apsw.FullError):
        return "disk full"
    if isinstance(exc, apsw.ReadOnlyError):
        return "read-only"
    return "I/O error"


def describe(exc: Exception) -> str:
    """A database error as one short text, for a log line or a `WriteFailed`."""
    if isinstance(exc, apsw.FullError):
        return f"disk full: {exc}"
    if isinstance(exc, apsw.ReadOnlyError):
        return f"read-only: {exc}"
    if isinstance(exc, apsw.IOError):
        return f"I/O error: {exc}"
    return f"{type(exc).__name__}: {exc}"[:300]
