"""The progress display (display.py): the whole service in a real pseudo-terminal, a backfill
against the simulator, Ctrl-C typed on the terminal; and on pipes, the log lines as before."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from contextlib import closing
from pathlib import Path

import pytest

from harness import ROOT, backfill_config, make_config, wait_for, write_toml
from kl_actors.store import Store

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
TASKS = re.compile(r"([\d,]+)/([\d,]+) tasks")
HIDE, SHOW = b"\x1b[?25l", b"\x1b[?25h"


class Terminal:
    """`supervisor.py` on the slave side of a pty that is its controlling terminal (a session of
    its own, so Ctrl-C typed on the master reaches its process group as on a real terminal);
    everything it draws collected from the master."""

    def __init__(self, args: list[str], columns: int = 120, rows: int = 40) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
        env["TERM"] = "xterm-256color"
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "supervisor.py"), *args], cwd=ROOT, env=env,
            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)  # ours: the master reads EOF (EIO) once the service's copies are closed
        self.master = master
        self.output = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the slave side is closed
                return
            if not data:
                return
            with self._lock:
                self.output += data

    def raw(self) -> bytes:
        with self._lock:
            return bytes(self.output)

    def text(self) -> str:
        return ANSI.sub(b"", self.raw()).decode("utf-8", "replace")

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._reader.join(timeout=5)
        os.close(self.master)


def counts(text: str) -> list[tuple[int, int]]:
    """(done, total) of every frame's backfill bar, in order."""
    return [(int(d.replace(",", "")), int(t.replace(",", ""))) for d, t in TASKS.findall(text)]


def status(config) -> dict:
    try:
        return json.loads((Path(config.endpoints.runtime_dir) / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@pytest.mark.slow(35)
def test_display_draws_updates_shows_warnings_and_leaves_the_terminal_clean_on_ctrl_c(workdir, sim_factory):
    # ~160 pages of 499 candles at 150 ms each over 4 slots: several seconds of frames.
    sim = sim_factory(symbols=4, seed=3, weight_limit=1_000_000, latency_ms=150)
    config = backfill_config(workdir, sim, {"1m": 20_000}, archive={"enabled": False})
    toml = write_toml(config, workdir / "service.toml")
    term = Terminal(["--config", str(toml)])
    pids: list[int] = []
    try:
        # It draws: the bar with its figures, mid-backfill.
        wait_for(lambda: any(0 < d < t for d, t in counts(term.text())), 60, what="a frame mid-backfill")
        text = term.text()
        assert "candles/s" in text and "weight " in text and "failed 0" in text
        assert HIDE in term.raw()  # the cursor is hidden while the region is live
        # A warning reaches the terminal above the bar: a downloader killed mid-run.
        pids = [a["pid"] for a in status(config)["actors"].values() if a["pid"]]
        victim = status(config)["actors"]["downloader-2"]["pid"]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: "event=actor_exited name=downloader-2" in term.text(), 30, what="the warning shown")
        # It updates, up to the whole backfill; the total is the scheduler's (status.json).
        wait_for(lambda: any(d == t > 0 for d, t in counts(term.text())), 90, what="a frame with the backfill done")
        frames = counts(term.text())
        done = [d for d, _ in frames]
        assert done == sorted(done) and len(set(done)) >= 3, done
        total = frames[-1][1]
        progress = wait_for(lambda: (status(config).get("progress") or {}).get("tasks_done") == total
                            and status(config)["progress"], 10, what="status.json's progress")
        assert progress["tasks_total"] == total > 100  # 4 tables of 20,000 candles in pages of 499
        # Ctrl-C on the terminal: the service stops as before, exit 0.
        term.type(b"\x03")
        assert term.finish() == 0, term.text()[-3000:]
    finally:
        term.close()
    raw = term.raw()
    # Clean: the cursor shown after it was last hidden, and the last line is whole and not a bar.
    assert raw.rindex(SHOW) > raw.rindex(HIDE)
    after = ANSI.sub(b"", raw[raw.rindex(SHOW):]).decode()
    assert after.endswith("\r\n")
    last = after.rstrip("\r\n").split("\r\n")[-1]
    assert last.startswith("kl-actors: stopped, exit status 0; the whole log is in "), repr(after)
    assert "━" not in after and "tasks" not in after
    # The stop is no crash: no actor's exit is reported after the Ctrl-C.
    exits = [ln for ln in term.text().splitlines() if "event=actor_exited" in ln]
    assert len(exits) == 1, "\n".join(exits)
    # Info lines are in the log file only; the terminal has the bar and the warnings.
    log = (Path(config.endpoints.runtime_dir) / "service.log").read_text()
    assert "event=progress tasks_done=" in log and "event=actor_started name=writer" in log
    assert "event=stopped exit_code=0" in log and "event=actor_exited name=downloader-2" in log
    assert "level=info" not in term.text()
    assert not [p for p in pids if _alive(p)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


@pytest.mark.slow(35)
def test_on_pipes_the_log_lines_stay_as_they_were_and_status_has_the_progress(workdir, sim_factory, service_factory):
    sim = sim_factory(symbols=3, seed=4, weight_limit=1_000_000)
    config = backfill_config(workdir, sim, {"1m": 3_000, "5m": 1_000}, archive={"enabled": False})
    service = service_factory(config, ["--once"])
    code = service.proc.wait(timeout=120)
    _, err = service.stop()
    assert code == 0, err[-3000:]
    assert "\x1b" not in err  # no drawing, no colour
    lines = err.splitlines()
    assert lines and all(line.startswith("ts=") and " level=" in line and " event=" in line for line in lines)
    progress_lines = [ln for ln in lines if " event=progress " in ln]
    assert progress_lines and "candles_per_s=" in progress_lines[-1] and "eta_s=" in progress_lines[-1]
    assert "event=actor_started name=scheduler" in err and "event=stopped exit_code=1" not in err
    assert not (Path(config.endpoints.runtime_dir) / "service.log").exists()
    # status.json carries the scheduler's last figures: those of the last progress line.
    data = json.loads(service.status_file.read_text())
    last = dict(f.split("=", 1) for f in progress_lines[-1].split() if "=" in f)
    p = data["progress"]
    assert p["tasks_done"] == p["tasks_total"] == int(last["tasks_total"]) == int(last["tasks_done"]) > 0
    with closing(Store.open_readonly(path=config.database.path)) as store:
        rows = sum(store.count(symbol, interval) for symbol, tables in store.kline_tables().items()
                   for interval in tables)
    # (a page committed before its result came counts too: every stored candle is in the figures)
    assert p["candles"] == int(last["candles"]) == rows > 0
    assert p["weight_limit"] == int(last["weight_limit"]) and p["failed"] == 0
    assert 0 < data["started_at_ms"] <= p["at_ms"]


def test_a_log_file_that_cannot_be_opened_is_one_line_and_exit_2(workdir):
    config = make_config(workdir, display={"log_file": str(workdir / "missing" / "service.log")})
    toml = write_toml(config, workdir / "service.toml")
    proc = subprocess.run([sys.executable, "supervisor.py", "--config", str(toml), "--progress", "on",
                           "--actors", "broker"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"kl-actors: the log file {workdir}/missing/service.log: cannot open: No such file or directory"]


@pytest.mark.slow(20)
def test_the_service_log_is_rotated_by_size_and_no_line_is_lost(workdir, sim_factory, service_factory):
    """A backfill logging every page (DEBUG) into a log rotated past 5 KiB: several copies, each
    line whole, and every task's `fetched` line in one of them."""
    sim = sim_factory(symbols=4, seed=3, weight_limit=1_000_000)
    config = backfill_config(workdir, sim, {"1m": 20_000}, archive={"enabled": False}, log={"level": "DEBUG"},
                             display={"progress": "on", "log_max_mib": 5 / 1024, "log_keep": 1000})
    service = service_factory(config, ["--once"])
    service.proc.wait(timeout=180)
    code, err = service.stop()
    assert code == 0, err[-3000:]
    path = Path(config.endpoints.runtime_dir) / "service.log"
    copies = sorted(path.parent.glob("service.log.*"), key=lambda p: -int(p.suffix[1:]))  # oldest first
    # At most one rotation a status tick (0.2 s here): how many depends on the backfill's pace.
    assert len(copies) >= 2, copies
    texts = [p.read_text() for p in [*copies, path]]
    log = "".join(texts)
    assert all(t.endswith("\n") for t in texts)
    assert all(line.startswith("ts=") and " event=" in line for line in log.splitlines()), \
        [line for line in log.splitlines() if not line.startswith("ts=")][:5]
    # Each rotation is said once, in the fresh log (after what an actor wrote in between).
    said = [sum(" event=log_rotated " in line for line in t.splitlines()) for t in texts]
    assert said == [0] + [1] * len(copies), said
    progress = json.loads((Path(config.endpoints.runtime_dir) / "status.json").read_text())["progress"]
    fetched = set(re.findall(r" event=fetched task_id=(\S+)", log))
    assert len(fetched) == progress["tasks_done"] == progress["tasks_total"] > 100
