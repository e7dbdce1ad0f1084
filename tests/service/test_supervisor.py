"""The supervisor with real actor processes: restarts, intensity, clean stop, no orphans."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import pytest

from harness import make_config, pid_alive, wait_for

ACTORS = ["broker", "writer"]

# Loaded by every Python process on PYTHONPATH before its main module: the actors named in
# KL_SLOW_START ("name=seconds,...") sleep that long before importing anything, on their first
# start only, as a fresh interpreter on a loaded host does while it imports and compiles.
SLOW_START = """
import os, sys, time
_spec = dict(item.split("=") for item in os.environ.get("KL_SLOW_START", "").split(",") if item)
if len(sys.argv) > 2 and sys.argv[1] in _spec and "--restarts" in sys.argv \\
        and sys.argv[sys.argv.index("--restarts") + 1] == "0":
    time.sleep(float(_spec[sys.argv[1]]))
"""


def test_actors_start_are_named_and_runtime_dir_private(workdir, service_factory):
    service = service_factory(make_config(workdir), ["--actors", "broker,writer"])
    status = service.wait_running(ACTORS)
    for name in ACTORS:
        cmdline = Path(f"/proc/{status[name]['pid']}/cmdline").read_bytes().split(b"\0")
        assert b"kl_actors.run" in cmdline and name.encode() in cmdline
    runtime = Path(service.config.endpoints.runtime_dir)
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o700
    assert stat.S_IMODE((runtime / "config.json").stat().st_mode) == 0o600
    code, _ = service.stop()
    assert code == 0


def test_sigterm_stops_every_actor_and_exits_zero(workdir, service_factory):
    service = service_factory(make_config(workdir), ["--actors", "broker,writer"])
    status = service.wait_running(ACTORS)
    pids = [status[n]["pid"] for n in ACTORS]
    started = time.monotonic()
    code, err = service.stop()
    assert code == 0, err
    assert time.monotonic() - started < service.config.supervisor.stop_timeout_s + 3
    assert not any(pid_alive(p) for p in pids)
    assert "event=stopped exit_code=0" in err


def test_sigkill_of_supervisor_leaves_no_orphans(workdir, service_factory):
    service = service_factory(make_config(workdir), ["--actors", "broker,writer"])
    status = service.wait_running(ACTORS)
    pids = [status[n]["pid"] for n in ACTORS]
    os.kill(service.proc.pid, signal.SIGKILL)
    service.proc.wait()
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=5.0, what="children to exit")


def test_kill9_of_any_actor_restarts_it_and_counts(workdir, service_factory):
    service = service_factory(make_config(workdir), ["--actors", "broker,writer"])
    status = service.wait_running(ACTORS)
    for name in ACTORS:
        old = status[name]["pid"]
        os.kill(old, signal.SIGKILL)
        status = wait_for(lambda: (st := service.status()) and st[name]["pid"] not in (None, old) and st,
                          timeout=5.0, what=f"{name} restarted")
        assert status[name]["restarts"] == 1
        assert status[name]["last_exit"] == "killed by SIGKILL"  # seen exiting, not timed out as silent
        status = service.wait_running(ACTORS)
    code, _ = service.stop()
    assert code == 0


def test_crash_loop_backs_off_then_stops_cleanly(workdir, service_factory):
    config = make_config(workdir, supervisor={"max_restarts": 3, "restart_window_s": 30.0,
                                              "restart_backoff_initial_s": 0.2,
                                              "restart_backoff_max_s": 2.0})
    service = service_factory(config, ["--actors", "broker,writer"])
    status = service.wait_running(ACTORS)
    broker_pid = status["broker"]["pid"]
    pid = wait_for(lambda: service.pid("writer"), timeout=5.0, what="writer pid")
    for kill in range(4):
        os.kill(pid, signal.SIGKILL)
        if kill < 3:
            old = pid
            pid = wait_for(lambda: (service.pid("writer") or old) != old and service.pid("writer"),
                           timeout=15.0, what="writer restarted")
    # The fourth crash is the service's to act on: wait for its own exit, never race it with a stop.
    code = service.proc.wait(timeout=30)
    _, err = service.stop()
    assert code == 1
    assert "kl-actors: actor writer failed 4 times within 30s (last: killed by SIGKILL); stopping the service" in err
    assert not pid_alive(broker_pid)
    # The backoff doubled between restarts (0.2 s, 0.4 s, 0.8 s).
    restarts = [line for line in err.splitlines() if "event=actor_exited name=writer" in line]
    assert [r.split("action=")[1] for r in restarts] == ['"restart in 0.20s"', '"restart in 0.40s"',
                                                          '"restart in 0.80s"']


def test_bad_config_one_line_exit_2(workdir):
    import subprocess
    import sys

    from harness import ROOT

    bad = workdir / "bad.toml"
    bad.write_text('[downloader]\nprocesses = "many"\n')
    proc = subprocess.run([sys.executable, "supervisor.py", "--config", str(bad)], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"kl-actors: config error: {bad}: key downloader.processes: Expected int, got str"]


@pytest.mark.slow(25)
def test_a_slow_start_is_waited_for_and_silence_before_or_after_the_first_heartbeat_kills(
        workdir, service_factory):
    """`start_timeout_s` runs from an actor's start to its first heartbeat, `heartbeat_timeout_s`
    after it: a start three times the heartbeat timeout is no failure, a start that never
    beats is killed at the start timeout, and a stopped actor at the heartbeat timeout."""
    site = workdir / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_START)
    config = make_config(workdir, supervisor={"heartbeat_timeout_s": 2.0, "start_timeout_s": 15.0})
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "KL_SLOW_START": "writer=6,broker=600"}
    service = service_factory(config, ["--actors", "broker,writer"], env=env)
    status = service.wait_running(ACTORS, timeout=60)
    # The broker that never beat was killed once, at the start timeout; the writer waited for.
    assert status["broker"]["restarts"] == 1 and status["writer"]["restarts"] == 0, status
    log = service.log_text()
    exits = [line for line in log.splitlines() if "event=actor_exited" in line]
    assert len(exits) == 1 and "name=broker" in exits[0], exits
    waited = float(exits[0].split('why="no heartbeat ')[1].split("s after its start")[0])
    assert 15.0 <= waited < 25.0, exits
    # After its first heartbeat the writer is held to the heartbeat timeout.
    writer = status["writer"]["pid"]
    os.kill(writer, signal.SIGSTOP)
    line = wait_for(lambda: next((ln for ln in service.log_text().splitlines()
                                  if "event=actor_exited name=writer" in ln), None), 30, what="writer killed")
    silent = float(line.split('why="silent for ')[1].split("s")[0])
    assert 2.0 <= silent < 10.0, line
    status = service.wait_running(ACTORS)
    assert status["writer"]["pid"] != writer and status["writer"]["restarts"] == 1
    assert status["writer"]["last_exit"] == f"silent for {silent:.1f}s"
    code, log = service.stop()
    assert code == 0, log[-3000:]
    assert not pid_alive(writer)
