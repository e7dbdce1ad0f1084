"""Downloaders on another host (issue 14): the service's internal sockets served over TCP with
CURVE, a second `supervisor.py --connect` process set standing in for the second host, peers
without an authorized key refused, and a remote set killed mid-backfill losing nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
import zmq.auth

import msgspec

from exactness import assert_exact, run_once, trading_symbols
from harness import ROOT, RunningService, WriterProcess, backfill_config, candle, free_port, server_ms, wait_for
from kl_actors import config as cfg
from kl_actors import messages
from kl_actors.messages import KlineBatch

MIN = 60_000


def keygen(keys: Path, client: str | None = None) -> str:
    argv = [sys.executable, str(ROOT / "supervisor.py"), "keygen", str(keys)] + (["--client", client] if client else [])
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def remote_ports() -> dict:
    return {"tasks_port": free_port(), "results_port": free_port(), "writer_port": free_port(), "bus_port": free_port()}


def test_keygen_makes_the_server_pair_and_a_client_bundle(tmp_path):
    keys = tmp_path / "keys"
    out = keygen(keys, "hostb")
    assert "hostb" in out
    for path in ("server.key", "server.key_secret", "authorized/hostb.key",
                 "hostb/client.key", "hostb/client.key_secret", "hostb/server.key"):
        assert (keys / path).is_file(), path
    assert (keys / "hostb" / "server.key").read_bytes() == (keys / "server.key").read_bytes()
    assert (keys / "authorized" / "hostb.key").read_bytes() == (keys / "hostb" / "client.key").read_bytes()
    for secret in ("server.key_secret", "hostb/client.key_secret"):
        assert (keys / secret).stat().st_mode & 0o077 == 0, secret
    server_before = (keys / "server.key_secret").read_bytes()
    keygen(keys, "hostc")  # a second host: the server's pair is kept
    assert (keys / "server.key_secret").read_bytes() == server_before
    assert sorted(p.name for p in (keys / "authorized").iterdir()) == ["hostb.key", "hostc.key"]
    again = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "keygen", str(keys), "--client", "hostb"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "has keys already" in again.stderr


def test_listen_without_keys_or_a_non_loopback_internal_endpoint_is_refused_at_start(tmp_path):
    def start(*args):
        done = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--runtime-dir", str(tmp_path / "rt"),
                               "--db", str(tmp_path / "db.sqlite"), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        return done.returncode, done.stderr
    code, err = start("--listen", "0.0.0.0")
    assert code == 2 and "remote.keys_dir" in err
    code, err = start("--listen", "0.0.0.0", "--keys", str(tmp_path / "none"))
    assert code == 2 and "CURVE keys" in err and "server.key_secret" in err
    keygen(tmp_path / "keys")
    code, err = start("--listen", "0.0.0.0", "--keys", str(tmp_path / "keys"))
    assert code == 2 and "no authorized client key" in err
    code, err = start("--connect", "10.1.2.3", "--keys", str(tmp_path / "keys"), "--actors", "downloader-3")
    assert code == 2 and "client.key_secret" in err
    keygen(tmp_path / "keys", "hostb")
    code, err = start("--connect", "10.1.2.3", "--keys", str(tmp_path / "keys" / "hostb"), "--actors", "writer")
    assert code == 2 and "downloaders only" in err
    assert not (tmp_path / "db.sqlite").exists()


def test_writer_takes_batches_only_from_authorized_curve_peers(tmp_path):
    keys = tmp_path / "keys"
    keygen(keys, "hostb")
    ports = remote_ports()
    writer = WriterProcess(tmp_path, remote={"listen": "127.0.0.1", "keys_dir": str(keys), **ports})
    ctx = zmq.Context()
    try:
        endpoint = f"tcp://127.0.0.1:{ports['writer_port']}"
        wait_for(lambda: "event=remote_endpoint" in writer.stderr(None), 10, what="remote endpoint bound")

        def batch(open_ms: int, task_id: str) -> bytes:
            return messages.encode(KlineBatch("BTCUSDT", "1m", "rest", [candle(open_ms)], task_id=task_id))

        def push(client_keys: tuple[bytes, bytes] | None, server_key: bytes | None) -> zmq.Socket:
            sock = ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            if client_keys:
                sock.curve_publickey, sock.curve_secretkey = client_keys
                sock.curve_serverkey = server_key
            sock.connect(endpoint)
            return sock
        server_public, _ = zmq.auth.load_certificate(str(keys / "server.key"))
        t0 = 1_700_000_040_000
        plain = push(None, None)  # no CURVE at all
        plain.send(batch(t0, "plain"), zmq.NOBLOCK)
        stranger = push(zmq.curve_keypair(), server_public)  # CURVE, but a key nobody authorized
        stranger.send(batch(t0 + MIN, "stranger"), zmq.NOBLOCK)
        wrong_server = push(zmq.auth.load_certificate(str(keys / "hostb" / "client.key_secret")),
                            zmq.curve_keypair()[0])  # an authorized key, talking to another server key
        wrong_server.send(batch(t0 + 2 * MIN, "wrong-server"), zmq.NOBLOCK)
        wait_for(lambda: writer.stderr(None).count("event=remote_refused") >= 3, 15, what="three refusals logged")
        # The stranger is refused by the authenticator; the other two fail the handshake itself.
        assert writer.stderr(None).count('reason="client key not authorized"') == 1

        allowed = push(zmq.auth.load_certificate(str(keys / "hostb" / "client.key_secret")), server_public)
        allowed.send(batch(t0 + 3 * MIN, "allowed"))
        writer.wait_committed("allowed", timeout=15)
        # The three refused peers keep retrying in the background; none of their batches is stored.
        assert [r[0] for r in writer.rows("BTCUSDT", "1m")] == [t0 + 3 * MIN]
        assert not any(isinstance(m, messages.Committed) and set(m.task_ids) & {"plain", "stranger", "wrong-server"}
                       for m in writer.bus_messages)
    finally:
        ctx.destroy(linger=0)
        writer.close()


def _kill_set(service: RunningService) -> None:
    """kill -9 of a whole process set at once: the supervisor and every actor it runs."""
    pids = [a["pid"] for a in service.status().values() if a.get("pid")]
    for pid in [service.proc.pid, *pids]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow(25)
def test_remote_downloaders_do_work_and_a_killed_remote_set_loses_nothing(tmp_path, sim_factory):
    keys = tmp_path / "keys"
    keygen(keys, "hostb")
    ports = remote_ports()
    sim = sim_factory(symbols=4, weight_limit=1_000_000, latency_ms=150)
    depth = {"1m": 20_000}
    main_dir, remote_dir = tmp_path / "a", tmp_path / "b"
    main_dir.mkdir()
    remote_dir.mkdir()
    main = backfill_config(main_dir, sim, depth, downloader={"processes": 1, "lease_s": 5.0},
                           remote={"listen": "127.0.0.1", "keys_dir": str(keys), **ports})
    remote = backfill_config(remote_dir, sim, depth, downloader={"processes": 1, "lease_s": 5.0},
                             remote={"connect": "127.0.0.1", "keys_dir": str(keys / "hostb"), **ports})
    assert remote.endpoints.tasks == f"tcp://127.0.0.1:{ports['tasks_port']}"
    second_host = RunningService(remote, remote_dir, ["--actors", "downloader-2,downloader-3"])
    ctx = zmq.Context()
    try:
        second_host.wait_running(["downloader-2", "downloader-3"], timeout=30)
        # A peer without CURVE trying to take tasks from the scheduler: it must never get one.
        thief = ctx.socket(zmq.PULL)
        thief.setsockopt(zmq.LINGER, 0)
        thief.connect(f"tcp://127.0.0.1:{ports['tasks_port']}")
        started = server_ms(sim)
        service = RunningService(main, main_dir, ["--once"])
        try:
            wait_for(lambda: "event=downloader_joined name=downloader-2" in service.log_text()
                     or "event=downloader_joined name=downloader-3" in service.log_text(), 60,
                     what="a remote downloader's first result")
            assert service.proc.poll() is None, "backfill over before the remote set could be killed"
            _kill_set(second_host)
            code = service.proc.wait(timeout=180)
        finally:
            service.stop()
        log = service.log_text()
        assert code == 0, log[-3000:]
        ended = server_ms(sim)
        assert "event=downloader_joined name=downloader-1" in log
        # Refused once (libzmq does not retry a failed handshake); which side saw the mismatch
        # first decides whether the reason has a detail.
        assert f"event=remote_refused endpoint=tcp://127.0.0.1:{ports['tasks_port']}" in log
        assert thief.poll(0) == 0  # not one task reached it
        checked = assert_exact(main_dir / "db.sqlite", sim, trading_symbols(sim), depth, started, ended)
        assert checked >= 4 * 20_000
    finally:
        ctx.destroy(linger=0)
        second_host.cleanup()


@pytest.mark.slow(20)
def test_a_remote_host_is_its_own_egress_group_with_its_own_budget(tmp_path, sim_factory):
    """The service host lists the remote host's group with no local downloader; the remote set
    joins it with `--egress hostb`: its downloader takes that group's tasks (its own weight budget,
    its own IP at the simulator) while the local group works beside it, and every table is exact."""
    keys = tmp_path / "keys"
    keygen(keys, "hostb")
    ports = {**remote_ports(), "group_tasks_port": free_port()}
    sim = sim_factory(symbols=4, weight_limit=1_000_000, latency_ms=100)
    depth = {"1m": 20_000}
    groups = [cfg.EgressConfig(name="local", source_address="127.0.0.2", downloaders=1),
              cfg.EgressConfig(name="hostb", source_address="127.0.0.3", downloaders=0)]
    main_dir, remote_dir = tmp_path / "a", tmp_path / "b"
    main_dir.mkdir()
    remote_dir.mkdir()

    def config(workdir, remote, egress=""):
        base = backfill_config(workdir, sim, depth, downloader={"lease_s": 5.0},
                               remote={"keys_dir": str(keys if "listen" in remote else keys / "hostb"),
                                       **ports, **remote})
        return cfg.check(msgspec.structs.replace(base, egress=groups, remote=msgspec.structs.replace(
            base.remote, egress=egress)), "test")
    main = cfg.resolve_endpoints(config(main_dir, {"listen": "127.0.0.1"}))
    remote = cfg.resolve_endpoints(config(remote_dir, {"connect": "127.0.0.1"}, egress="hostb"))
    assert cfg.tasks_endpoint(remote, 1) == f"tcp://127.0.0.1:{ports['group_tasks_port']}"
    second_host = RunningService(remote, remote_dir, ["--actors", "downloader-2"])
    try:
        second_host.wait_running(["downloader-2"], timeout=30)
        started = server_ms(sim)
        code, err = run_once(main, main_dir)
        ended = server_ms(sim)
        assert code == 0, err[-3000:]
        assert "event=downloader_joined name=downloader-2" in err and "event=downloader_joined name=downloader-1" in err
        by_ip = sim.stats()["by_ip"]
        assert {"127.0.0.2", "127.0.0.3"} <= set(by_ip), by_ip
        assert by_ip["127.0.0.3"]["weight"] > 0 and by_ip["127.0.0.2"]["weight"] > 0, by_ip
        assert all(v["429"] == 0 and v["418"] == 0 for v in by_ip.values()), by_ip
        assert "actor=downloader-2@hostb" in second_host.log_text()
        assert_exact(main_dir / "db.sqlite", sim, trading_symbols(sim), depth, started, ended)
    finally:
        second_host.cleanup()
