"""Start-up guards with real processes: one service per runtime dir and per database (also
`--once` beside a running service), a database that cannot be written, harmful config, and a
`--sim` simulator that dies with its supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import apsw
import msgspec
import pytest
import zmq

from kl_actors.core import intervals
from kl_actors import messages
from kl_actors.store import Store, StoreError
from harness import ROOT, make_config, pid_alive, wait_for, write_toml

ACTORS = ["broker", "writer"]


def _run_to_exit(config, workdir: Path, *extra: str, name: str = "second.toml") -> tuple[int, str]:
    toml = write_toml(config, workdir / name)
    proc = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--config", str(toml), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stderr


T0 = 1_700_000_040_000 - 1_700_000_040_000 % 60_000


def _stored_opens(db: str) -> list[int]:
    try:
        store = Store.open_readonly(path=db)
    except StoreError:
        return []
    try:
        return [r[0] for r in store.candles("BTCUSDT", "1m")]
    except StoreError:
        return []
    finally:
        store.close()


def _assert_writes(config) -> None:
    """A batch pushed to the writer's endpoint lands in the database: the ipc path is still the
    first service's, and its writer still commits."""
    open_ms = T0 + len(_stored_opens(config.database.path)) * 60_000
    candle = messages.Candle(open_ms, "100.1", "101.0", "99.9", "100.5", "12.34",
                             intervals.close_time("1m", open_ms), "1234.5", 42, "6.0", "617.2")
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect(config.endpoints.writer)
    try:
        push.send(messages.encode(messages.KlineBatch("BTCUSDT", "1m", "rest", [candle], task_id="probe")))
        wait_for(lambda: open_ms in _stored_opens(config.database.path), timeout=10, what="the probe row")
    finally:
        push.close()
        context.term()


def _assert_undisturbed(service, before: dict) -> None:
    after = service.wait_running(ACTORS, timeout=10)
    assert {n: after[n]["pid"] for n in ACTORS} == {n: before[n]["pid"] for n in ACTORS}
    assert all(after[n]["restarts"] == 0 for n in ACTORS)
    assert service.proc.poll() is None
    _assert_writes(service.config)


def test_second_supervisor_on_same_runtime_dir_exits_2(workdir, service_factory):
    config = make_config(workdir)
    first = service_factory(config, ["--actors", "broker,writer"])
    before = first.wait_running(ACTORS)
    config_json = (Path(config.endpoints.runtime_dir) / "config.json").read_bytes()
    code, err = _run_to_exit(config, workdir, "--actors", "broker,writer")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"kl-actors: already running (pid {first.proc.pid}): runtime directory "), err
    assert (Path(config.endpoints.runtime_dir) / "config.json").read_bytes() == config_json
    _assert_undisturbed(first, before)


def test_second_supervisor_on_same_database_other_runtime_dir_exits_2(workdir, service_factory):
    config = make_config(workdir)
    first = service_factory(config, ["--actors", "broker,writer"])
    before = first.wait_running(ACTORS)
    other = make_config(workdir / "b")  # another runtime dir and feed port ...
    (workdir / "b").mkdir()
    other = msgspec.structs.replace(other, database=config.database)  # ... the same database
    code, err = _run_to_exit(other, workdir / "b")
    assert code == 2, err
    assert err.strip() == (f"kl-actors: already running (pid {first.proc.pid}): database "
                           f"{config.database.path} is locked ({config.database.path}.lock)"), err
    assert not (Path(other.endpoints.runtime_dir) / "config.json").exists()
    _assert_undisturbed(first, before)


def test_once_from_cron_beside_running_service_refuses(workdir, service_factory):
    config = make_config(workdir)
    first = service_factory(config, ["--actors", "broker,writer"])
    before = first.wait_running(ACTORS)
    code, err = _run_to_exit(config, workdir, "--once")
    assert code == 2, err
    assert f"kl-actors: already running (pid {first.proc.pid})" in err
    _assert_undisturbed(first, before)


def test_lock_of_a_kill9_supervisor_does_not_block_a_new_start(workdir, service_factory):
    config = make_config(workdir)
    first = service_factory(config, ["--actors", "broker,writer"])
    pids = [first.wait_running(ACTORS)[n]["pid"] for n in ACTORS]
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait()
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=10, what="actors of the killed supervisor to exit")
    lock = Path(config.endpoints.runtime_dir) / "supervisor.lock"
    assert lock.read_text().strip() == str(first.proc.pid)  # the stale file is still there
    second = service_factory(config, ["--actors", "broker,writer"])
    second.wait_running(ACTORS)
    assert lock.read_text().strip() == str(second.proc.pid)
    code, err = second.stop()
    assert code == 0, err


def test_database_in_unwritable_place_exits_2_with_one_line(workdir):
    blocker = workdir / "not-a-dir"
    blocker.write_text("a file where the database directory should be")
    config = make_config(workdir, database={"path": str(blocker / "db.sqlite")})
    code, err = _run_to_exit(config, workdir, "--actors", "broker,writer")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kl-actors: database {blocker / 'db.sqlite'}: "), err
    assert "Traceback" not in err


@pytest.fixture
def readonly_mount(workdir):
    """A real read-only file system holding a database: tests run as root, and root ignores file
    modes (chmod 0444 is no obstacle), but not a read-only mount."""
    mountpoint = workdir / "ro"
    mountpoint.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mountpoint)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        conn = apsw.Connection(str(mountpoint / "db.sqlite"))
        conn.execute("PRAGMA journal_mode=WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1)")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE")
        conn.close()
        subprocess.run(["mount", "-o", "remount,ro", str(mountpoint)], check=True)
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def test_read_only_database_exits_2_without_crash_loop(workdir, readonly_mount):
    db = readonly_mount / "db.sqlite"
    config = make_config(workdir, database={"path": str(db)})
    code, err = _run_to_exit(config, workdir, "--actors", "broker,writer")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kl-actors: database {db}: "), err
    assert "actor_started" not in err and "Traceback" not in err


def test_harmful_config_file_exits_2_naming_the_key(workdir):
    config = make_config(workdir)
    toml = workdir / "bad.toml"
    text = msgspec.toml.encode(config).decode().replace("request_timeout_s = 10.0", "request_timeout_s = nan")
    assert "nan" in text
    toml.write_text(text)
    proc = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--config", str(toml)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (f"kl-actors: config error: {toml}: key "
                                   "exchange.request_timeout_s: must be a finite number, got nan")


def test_sim_simulator_dies_with_a_kill9_supervisor(workdir, service_factory):
    service = service_factory(make_config(workdir), ["--sim", "--sim-symbols", "3", "--actors", "broker"])
    service.wait_running(["broker"], timeout=30)

    def simulator_pid():
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(") ", 1)[1].split()[1]) == service.proc.pid and b"kl_actors.sim" in cmdline:
                return int(entry.name)
        return None

    sim = wait_for(simulator_pid, timeout=10, what="the simulator process")
    os.kill(service.proc.pid, signal.SIGKILL)
    service.proc.wait()
    try:
        wait_for(lambda: not pid_alive(sim), timeout=10, what="the simulator to exit")
    finally:
        if pid_alive(sim):
            os.kill(sim, signal.SIGKILL)


def test_database_turning_read_only_stops_the_service_without_crash_loop(workdir, service_factory):
    """The disk goes read-only under a running service (ext4 errors=remount-ro): the restarted
    writer exits fatal, and the supervisor stops with exit 2 and one line instead of looping."""
    mountpoint = workdir / "disk"
    mountpoint.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mountpoint)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        service = service_factory(make_config(workdir, database={"path": str(mountpoint / "db.sqlite")}),
                                  ["--actors", "broker,writer"])
        writer = service.wait_running(ACTORS)["writer"]["pid"]
        # Hold the supervisor still so it cannot restart the writer before the file system is
        # read-only (a file open for writing makes the remount fail).
        os.kill(service.proc.pid, signal.SIGSTOP)
        try:
            os.kill(writer, signal.SIGKILL)
            wait_for(lambda: not pid_alive(writer), timeout=10, what="writer to die")
            # Its main thread is a zombie before its last thread (ZeroMQ's) has closed the
            # database's files, which keep the remount busy (EBUSY) until then.
            tries: list[str] = []

            def remounted() -> bool:
                done = subprocess.run(["mount", "-o", "remount,ro", str(mountpoint)], capture_output=True, text=True)
                tries.append(done.stderr.strip())
                return done.returncode == 0
            try:
                wait_for(remounted, timeout=15, interval=0.1, what="the file system remounted read-only")
            except AssertionError:
                raise AssertionError(f"remount failed {len(tries)} times; last: {tries[-1]!r}") from None
        finally:
            os.kill(service.proc.pid, signal.SIGCONT)
        service.proc.wait(timeout=30)
        code, err = service.stop()
        assert code == 2, err
        assert "kl-actors: actor writer cannot run (see its last log line); stopping the service" in err
        assert "event=database_unusable" in err
        assert err.count("event=actor_started name=writer") == 2  # the first start and one restart
        assert "Traceback" not in err
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
