"""Start-up guards of the supervisor: one service per runtime dir and per database, and a database
it can write. Each failure is a `StartError` whose message is the one line printed before exit 2.

Locks are `fcntl.flock` on small files (`<runtime_dir>/supervisor.lock`, `<db>.lock`) holding the
owner's pid: the kernel drops them when the process dies (also on kill -9), so a stale file never
blocks a new start. Never SQLite's exclusive locking mode: outside readers of the database must
never be blocked by the service.
"""

from __future__ import annotations

import fcntl
import os

import apsw


class StartError(RuntimeError):
    """The service must not start; the message is one line for the operator."""


class PidLock:
    """An exclusive, non-blocking flock on `path`, held until `release()` or process exit."""

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self.what = what
        self.fd: int | None = None

    def acquire(self) -> "PidLock":
        try:
            # The held descriptor is read-only (flock needs no more): a file open for writing
            # would pin its file system writable (a remount read-only fails with EBUSY).
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StartError(f"cannot open lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise StartError(f"already running (pid {holder}): {self.what} is locked ({self.path})") from None
        self.fd = fd
        try:
            with open(self.path, "w") as f:
                f.write(f"{os.getpid()}\n")
        except OSError as exc:
            self.release()
            raise StartError(f"cannot write lock file {self.path}: {exc.strerror}") from None
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "PidLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isascii() and text.isdigit() else "unknown"


def check_database_writable(path: str) -> None:
    """Open the database read-write (creating it and its directory if absent) and take the write
    lock for a moment; a read-only file, directory or file system fails here with one line,
    instead of a writer crash loop later."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise StartError(f"database {path}: cannot create directory {directory}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise StartError(f"database {path}: directory {directory} is not writable")
    try:
        conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
    except apsw.Error as exc:
        raise StartError(f"database {path}: cannot open read-write: {exc}") from None
    try:
        # SQLite silently falls back to read-only for a write-protected file.
        if conn.readonly("main"):
            raise StartError(f"database {path}: the file is read-only")
        conn.set_busy_timeout(1000)
        try:
            # Writes the header of a new file; on an existing one only takes and drops the lock.
            conn.execute("BEGIN IMMEDIATE; PRAGMA user_version; COMMIT")
        except apsw.BusyError:
            pass  # another program writes right now: the file is writable
        except apsw.Error as exc:
            raise StartError(f"database {path}: cannot write: {exc}") from None
    finally:
        conn.close()
