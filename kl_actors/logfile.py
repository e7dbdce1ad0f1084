"""The service log file: where every log line goes while the progress display is on.

It owns the file's place (`display.log_file`, default `<runtime_dir>/service.log`), opening it
(appended to, mode 0600) and rotating it by size for a service that runs for months: past
`display.log_max_mib` the file is copied to `<log>.1` (older copies shift to `.2` ... up to
`display.log_keep`, the oldest dropped) and cut to nothing in place. Copy-and-truncate, because
every actor writes to the same open file it inherited, appending: after the cut their writes land
at the file's new start, and no process has to reopen anything. The display's tail reads a
shorter file again from its start (display.LogTail).

Only a line written in the instant between the last read of the copy and the cut can be lost;
it never changes a line, and never touches anything but the log and its copies.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import IO

from . import config as cfg

COPY_CHUNK = 1 << 20


def log_path(config: cfg.Config) -> Path:
    """Where the log lines go while the display is on."""
    return Path(config.display.log_file or Path(config.endpoints.runtime_dir) / "service.log")


def open_log(path: Path) -> IO[str]:
    """The service log, appended to (mode 0600: it names hosts and paths); line-buffered, so
    each line is in the file when the tail reads it. Raises OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return os.fdopen(fd, "a", buffering=1)


def copy_name(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def rotate(path: Path, max_bytes: int, keep: int) -> int:
    """Rotates the log when it has reached `max_bytes`; returns the bytes moved to `<log>.1`
    (0: not due). Raises OSError, with the log left whole (it is cut only after a full copy)."""
    try:
        if os.stat(path).st_size < max_bytes:
            return 0
    except FileNotFoundError:
        return 0
    with contextlib.suppress(FileNotFoundError):
        os.remove(copy_name(path, keep))
    for n in range(keep - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            os.replace(copy_name(path, n), copy_name(path, n + 1))
    first = copy_name(path, 1)
    fd = os.open(first, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as dst, open(path, "rb") as src:
            shutil.copyfileobj(src, dst, COPY_CHUNK)
            # The lines appended while it copied, then the cut at once: only a line written
            # between this last read and the truncate is lost.
            while chunk := src.read(COPY_CHUNK):
                dst.write(chunk)
            dst.flush()
            copied = dst.tell()
            os.truncate(path, 0)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(first)  # a partial copy on a full disk would only take more of it
        raise
    return copied

