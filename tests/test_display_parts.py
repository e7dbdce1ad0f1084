"""The parts of the progress display (display.py) on their own: when it draws, what it shows of
the log, the tail of a real file, and the frames it renders (the whole display in a real
pseudo-terminal is tests/service/test_display.py)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys

import pytest
from rich.console import Console

from kl_actors import cli, display, logfile
from kl_actors import config as cfg
from kl_actors.messages import Progress


def test_it_draws_on_a_terminal_only_unless_told():
    master, slave = os.openpty()
    read_end, write_end = os.pipe()
    with os.fdopen(slave, "w") as tty, os.fdopen(write_end, "w") as pipe:
        assert display.wanted("auto", tty) and not display.wanted("auto", pipe)
        assert display.wanted("on", pipe) and not display.wanted("off", tty)
    assert not display.wanted("auto", tty)  # closed: not a terminal any more, and no crash
    os.close(master)
    os.close(read_end)


def test_the_switch_on_the_command_line_and_in_the_config(tmp_path):
    args = cli.parser().parse_args(["--progress", "off"])
    assert cli.effective_config(args).display.progress == "off"
    assert cli.effective_config(cli.parser().parse_args([])).display.progress == "auto"
    bad = tmp_path / "bad.toml"
    bad.write_text('[display]\nprogress = "sometimes"\n')
    with pytest.raises(cfg.ConfigError, match="display.progress"):
        cfg.load(bad)
    proc = subprocess.run([sys.executable, "supervisor.py", "--progress", "sometimes"], cwd=cli.PROJECT_ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "invalid choice: 'sometimes'" in proc.stderr


def test_log_file_defaults_to_the_runtime_dir():
    config = cfg.resolve_endpoints(cfg.check(cfg.Config(endpoints=cfg.EndpointsConfig(runtime_dir="/run/k")), "t"))
    assert str(logfile.log_path(config)) == "/run/k/service.log"
    config = cfg.Config(display=cfg.DisplayConfig(log_file="/var/log/kl.log"))
    assert str(logfile.log_path(config)) == "/var/log/kl.log"


def test_only_warnings_errors_and_stray_output_are_shown():
    base = "ts=2026-12-06T01:48:50.140Z level={} actor=writer event=x"
    assert display.shown(base.format("warning")) and display.shown(base.format("error"))
    assert not display.shown(base.format("info")) and not display.shown(base.format("debug"))
    # An info line that mentions a warning in a value is still an info line.
    assert not display.shown(base.format("info") + ' detail="level=warning "')
    assert display.shown("Traceback (most recent call last):") and not display.shown("   ")


def test_control_characters_of_a_line_are_written_as_escapes():
    # A value from outside (an exchange's error text) must not drive the terminal.
    hostile = 'ts=x level=warning actor=downloader-1 event=http_error detail="\x1b]0;owned\x07\x1b[2J\x9b1m\ttab"'
    text = display.printable(hostile).plain
    assert not any(ord(c) < 0x20 and c != "\t" or 0x7F <= ord(c) < 0xA0 for c in text)
    assert text.endswith('detail="\\x1b]0;owned\\x07\\x1b[2J\\x9b1m\ttab"')


def test_the_tail_reads_whole_lines_from_where_it_started_and_after_a_truncation(tmp_path):
    path = tmp_path / "service.log"
    path.write_text("old line\n")
    tail = display.LogTail(path)
    try:
        assert tail.lines() == []
        with open(path, "a") as f:
            f.write("one\ntw")
            f.flush()
            assert tail.lines() == ["one"]  # half a line waits for its end
            f.write("o\nthree \x0c\x1c end\n")
            f.flush()
            assert tail.lines() == ["two", "three \x0c\x1c end"]
        path.write_text("new\n")  # truncated (copytruncate): read again from the start
        assert tail.lines() == ["new"]
        with open(path, "ab") as f:  # a "line" longer than one read is dropped, not kept growing
            f.write(b"x" * (display.TAIL_MAX_BYTES + 10))
            f.flush()
            assert tail.lines() == [] and len(tail._partial) == 0
            f.write(b"x\nafter\n")
            f.flush()
            assert tail.lines()[-1] == "after"
    finally:
        tail.close()


def test_a_terminal_that_went_away_stops_the_drawing_not_the_service(tmp_path):
    log = tmp_path / "service.log"
    log.touch()
    master, slave = os.openpty()
    tty = os.fdopen(slave, "w")
    stderr = sys.stderr
    try:
        terminal = display.Display(tty, log)
        terminal.start()
        terminal.update(1.0, None, uptime_s=1, actors_running=1, actors_total=1, restarts=0)
        os.close(master)  # the window closed: writes now fail with EIO
        with open(log, "a") as f:
            f.write("ts=x level=error actor=writer event=e\n")
        terminal.update(2.0, None, uptime_s=2, actors_running=1, actors_total=1, restarts=0)
        assert terminal.gone
        terminal.stop("closing")  # no exception either
        assert sys.stderr is stderr  # the live region's redirection undone
    finally:
        with contextlib.suppress(OSError):
            tty.close()


def test_durations():
    assert [display.duration(s) for s in (-1.0, 0.2, 12.4, 492.5, 3600, 11_130, 198_000)] == \
        ["?", "0s", "12s", "8m13s", "1h00m", "3h05m", "2d07h"]


def frame(progress: Progress | None, width: int = 120) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(display.render(progress, uptime_s=192, actors_running=7, actors_total=8, restarts=1,
                                 bar_width=max(display.BAR_MIN, min(display.BAR_MAX, width - 60))))
    return console.file.getvalue()


def test_a_frame_shows_the_figures():
    text = frame(Progress(at_ms=1, tasks_done=9377, tasks_total=19140, candles=1, candles_per_s=12345.6,
                          eta_s=492.5, weight_used=1176, weight_limit=2400, failed=2))
    assert "up 3m12s  actors 7/8  restarts 1" in text
    assert "9,377/19,140 tasks 48%  ETA 8m13s" in text and "━" in text
    assert "12,345.6 candles/s  weight 1,176/2,400 a minute  failed 2" in text
    assert "archive" not in text  # no archive work, no archive row


def test_a_frame_shows_archive_work_and_the_end():
    text = frame(Progress(at_ms=1, tasks_done=40, tasks_total=40, archive_files_done=120, archive_files_total=400,
                          archive_mb_per_s=3.21, archive_eta_s=100.0))
    assert "40/40 tasks 100%  ETA done" in text
    assert "120/400 files 30%  3.21 MB/s  ETA 1m40s" in text


def test_on_80_columns_each_bar_is_one_line():
    text = frame(Progress(at_ms=1, tasks_done=19_139, tasks_total=19_140, eta_s=5000.0, archive_files_done=12_344,
                          archive_files_total=12_345, archive_mb_per_s=123.45, archive_eta_s=3599.0,
                          candles_per_s=123_456.7, weight_used=2352, weight_limit=2400, failed=1234), width=80)
    lines = text.splitlines()
    assert len(lines) == 4, text  # header, backfill, archive, figures: nothing wrapped
    assert lines[1].rstrip().endswith("19,139/19,140 tasks 99%  ETA 1h23m")
    assert lines[2].rstrip().endswith("12,344/12,345 files 99%  123.45 MB/s  ETA 59m59s")


def test_a_frame_before_any_figures():
    assert "waiting for the scheduler's first figures" in frame(None)
    assert "nothing planned yet" in frame(Progress(at_ms=1, weight_limit=2400))
