"""The progress display on a terminal: the backfill's bar and figures, and the log's warnings.

When the supervisor's stderr is a terminal (`display.progress = "auto"`, or `"on"` / `--progress
on` to force it), the supervisor draws here, with `rich`, what the scheduler's heartbeat says
(`messages.Progress`): an overall bar of tasks done / total, candles/s, the weight used / limit
this minute, the ETA and the failed tasks; archive files done / total and MB/s when there is
archive work. Meanwhile every log line (the actors' and the supervisor's) goes to the service log
(logfile.py: `display.log_file`, default `<runtime_dir>/service.log`, appended to and rotated by
size), and `LogTail` shows its
warnings and errors (and anything that is not a log line: a traceback) above the bar.

It owns the terminal while the service runs and leaves it clean when it stops (the last frame
drawn whole, the cursor shown, a closing line). It never changes a log line, never draws on a
non-terminal unless told to (a service manager or CI gets the log lines on stderr exactly as
before), and never touches the database or a socket: the supervisor feeds it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from . import config as cfg, logfile
from .messages import Progress

REDRAW_S = 0.25  # at most four frames a second: enough to see it move, little work
TAIL_MAX_BYTES = 4 << 20  # of new log read per turn (a flood is shown a turn later, not all at once)
BAR_MAX, BAR_MIN = 40, 10  # columns; the rest of a line is the figures (~60 columns)


def wanted(setting: str, stream: IO) -> bool:
    """Draw on `stream`? "on" and "off" say; "auto": only if it is a terminal."""
    if setting != "auto":
        return setting == "on"
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


# Control characters (ESC, CSI, BEL, ...) in a log line are written as \xNN: a value that came
# from outside (an exchange's error text) must not move the cursor or retitle the terminal.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09}


def printable(line: str) -> Text:
    return Text(line.translate(_CONTROLS))


def for_service(config: cfg.Config, stream: IO, stack: contextlib.ExitStack) -> tuple[Display | None, IO | None]:
    """The display and the service log (open as long as `stack`) when this service draws on
    `stream`, else (None, None): log lines stay on stderr. Raises OSError (the log file)."""
    if not wanted(config.display.progress, stream):
        return None, None
    path = logfile.log_path(config)
    log_stream = stack.enter_context(logfile.open_log(path))
    return Display(stream, path, force=config.display.progress == "on"), log_stream


def shown(line: str) -> bool:
    """Lines of the log worth the operator's eye: warnings and errors, and whatever is not a log
    line at all (a traceback of a crashing actor)."""
    if not line.startswith("ts="):
        return bool(line.strip())
    return " level=warning " in line or " level=error " in line


class LogTail:
    """The complete lines added to a file since it was opened (a shorter file: truncated or
    rotated by copytruncate, read again from its start)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "rb")  # noqa: SIM115 - read as long as the display runs
        self._file.seek(0, os.SEEK_END)
        self._partial = b""

    def lines(self) -> list[str]:
        if os.fstat(self._file.fileno()).st_size < self._file.tell():
            self._file.seek(0)
            self._partial = b""
        data = self._partial + self._file.read(TAIL_MAX_BYTES)
        end = data.rfind(b"\n") + 1
        # A "line" longer than a whole read is no log line: dropped, so memory stays bounded.
        self._partial = data[end:] if len(data) - end < TAIL_MAX_BYTES else b""
        if not end:
            return []
        # split on newlines only: a form feed or \x1c inside a value does not end a log line
        return data[:end - 1].decode("utf-8", "replace").split("\n")

    def close(self) -> None:
        self._file.close()


def duration(seconds: float) -> str:
    """12s, 8m12s, 3h05m, 2d07h; "?" when unknown (< 0)."""
    if seconds < 0:
        return "?"
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def render(progress: Progress | None, *, uptime_s: float, actors_running: int, actors_total: int,
           restarts: int, bar_width: int = BAR_MAX):
    """One frame: a header line, the backfill's bar (and the archive's), the figures."""
    header = Text.assemble(("kl-actors", "bold"), f"  up {duration(uptime_s)}  actors {actors_running}/"
                           f"{actors_total}  restarts {restarts}")
    bars = Table.grid(padding=(0, 1))
    if progress is None:
        return Group(header, Text("backfill  waiting for the scheduler's first figures"))
    p = progress
    if p.tasks_total:
        percent = 100 * p.tasks_done // p.tasks_total
        bars.add_row("backfill", ProgressBar(total=p.tasks_total, completed=p.tasks_done, width=bar_width),
                     f"{p.tasks_done:,}/{p.tasks_total:,} tasks {percent}%  "
                     f"ETA {'done' if p.tasks_done >= p.tasks_total else duration(p.eta_s)}")
    else:
        bars.add_row("backfill", Text("nothing planned yet"))
    if p.archive_files_total:
        percent = 100 * p.archive_files_done // p.archive_files_total
        bars.add_row("archive", ProgressBar(total=p.archive_files_total, completed=p.archive_files_done,
                                            width=bar_width),
                     f"{p.archive_files_done:,}/{p.archive_files_total:,} files {percent}%  "
                     f"{p.archive_mb_per_s:,.2f} MB/s  ETA {duration(p.archive_eta_s)}")
    # (no candle count: `candles` counts REST candles only, the rate archive ones too)
    figures = Text(f"{p.candles_per_s:,.1f} candles/s  weight {p.weight_used:,}/{p.weight_limit:,} a minute"
                   f"  failed {p.failed:,}")
    if p.failed:
        figures.stylize("bold red", figures.plain.rindex("failed"))
    return Group(header, bars, figures)


class Display:
    """The live region on `stream` and the tail of the service log above it."""

    def __init__(self, stream: IO, log_file: Path, force: bool = False) -> None:
        self.log_file = log_file
        # force: draw even on a non-terminal (`display.progress = "on"`).
        self.console = Console(file=stream, force_terminal=True if force else None, highlight=False,
                               emoji=False, markup=False)
        self.live = Live(console=self.console, auto_refresh=False, transient=False,
                         redirect_stdout=True, redirect_stderr=True)
        self.tail = LogTail(log_file)
        self._next_draw = 0.0
        # The terminal went away (EIO, a closed pty): the service goes on, the log has it all.
        self.gone = False

    def start(self) -> None:
        self.console.print(f"kl-actors: the log goes to {self.log_file}; warnings and errors are shown here")
        self.live.start()

    def _show_new_lines(self) -> bool:
        lines = [line for line in self.tail.lines() if shown(line)]
        for line in lines:
            # soft_wrap: a log line stays one line (the terminal folds it), whole for copy and grep.
            self.console.print(printable(line), soft_wrap=True)
        return bool(lines)

    def update(self, now: float, progress: Progress | None, **counts) -> None:
        """Show new warnings and errors; draw a new frame when one is due (`now`: monotonic)."""
        if self.gone:
            return
        try:
            if self._show_new_lines() or now >= self._next_draw:
                self._next_draw = now + REDRAW_S
                bar_width = max(BAR_MIN, min(BAR_MAX, self.console.width - 60))
                self.live.update(render(progress, bar_width=bar_width, **counts), refresh=True)
        except OSError:
            self.gone = True

    def stop(self, closing: str) -> None:
        """The last frame drawn whole, the cursor shown, then `closing` on its own line."""
        try:
            if not self.gone:
                self._show_new_lines()
        except OSError:
            self.gone = True
        finally:
            self.tail.close()
            try:
                self.live.stop()
                self.console.print(closing)
            except OSError:
                pass  # no terminal to leave clean
