"""The service log's rotation on real files: copies shifted and bounded, the log cut in place for
the writers that keep appending to it, nothing lost or changed, a failed copy leaves it whole."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from harness import ROOT, in_mount_namespace
from kl_actors import logfile


def lines(n0: int, n: int) -> str:
    return "".join(f"ts=x level=info actor=a event=line n={i}\n" for i in range(n0, n0 + n))


def test_not_due_below_the_size_and_no_file(tmp_path):
    path = tmp_path / "service.log"
    assert logfile.rotate(path, 100, 3) == 0
    path.write_text(lines(0, 1))
    assert logfile.rotate(path, 1000, 3) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["service.log"]


def test_copies_shift_the_oldest_goes_and_writers_go_on_at_the_start(tmp_path):
    path = tmp_path / "service.log"
    # Writers hold the file open, appending, as the actors do (their inherited stderr).
    writer = logfile.open_log(path)
    other = os.open(path, os.O_WRONLY | os.O_APPEND)
    written = []
    for turn in range(5):
        text = lines(turn * 100, 100)
        half = len(text) // 2
        cut = text.index("\n", half) + 1
        writer.write(text[:cut])
        os.write(other, text[cut:].encode())
        written.append(text)
        assert logfile.rotate(path, 1000, 3) == len(text.encode())
        assert path.stat().st_size == 0
    writer.write(lines(500, 1))
    os.write(other, lines(501, 1).encode())
    writer.close()
    os.close(other)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["service.log", "service.log.1", "service.log.2", "service.log.3"]
    # Newest first, each whole; the two oldest turns were dropped.
    assert [(tmp_path / f"service.log.{n}").read_text() for n in (1, 2, 3)] == written[:-4:-1]
    # After the cut the writers' lines land at the file's start, no hole of zeros before them.
    assert path.read_text() == lines(500, 2)
    for p in tmp_path.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


def test_a_failed_rotation_leaves_the_log_whole(tmp_path):
    path = tmp_path / "service.log"
    path.write_text(lines(0, 50))
    (tmp_path / "service.log.1").mkdir()  # the old copy cannot be removed
    with pytest.raises(OSError):
        logfile.rotate(path, 100, 1)
    assert path.read_text() == lines(0, 50)


def test_a_full_disk_leaves_the_log_whole_and_no_partial_copy(tmp_path):
    """On a 1 MiB file system holding a 600 KiB log there is no room for the copy: the rotation
    fails, the log is as it was, and the partial copy is removed (it would only fill the disk)."""
    data = tmp_path / "data"
    data.mkdir()
    script = tmp_path / "rotate.py"
    script.write_text(
        "import json, sys\n"
        "from pathlib import Path\n"
        "from kl_actors import logfile\n"
        "log, text = Path(sys.argv[1]), sys.argv[2] * int(sys.argv[3])\n"
        "log.write_text(text)\n"
        "try:\n"
        "    logfile.rotate(log, 1000, 3)\n"
        "    error = None\n"
        "except OSError as exc:\n"
        "    error = exc.strerror\n"
        "print(json.dumps({'size': len(text), 'whole': log.read_text() == text,\n"
        "                  'error': error, 'files': sorted(p.name for p in log.parent.iterdir())}))\n")
    wrap = in_mount_namespace(f"mount -t tmpfs -o size=1m tmpfs {data}")
    done = subprocess.run([*wrap, sys.executable, str(script), str(data / "service.log"), lines(0, 1), "16000"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"size": 16_000 * len(lines(0, 1)), "whole": True,
                                       "error": "No space left on device", "files": ["service.log"]}
    assert 16_000 * len(lines(0, 1)) > 600_000
