"""The time-sync actor as a real process against simulators whose clocks are off.

The test plays the broker: it binds a SUB at `bus_pub` (where the broker's XSUB would be) and a
PULL at `control` (heartbeats); time-sync connects its PUB to it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import zmq
from harness import ActorProcess, free_port, make_config

from kl_actors import messages
from kl_actors.actors.timesync import next_measurement_ms


def test_next_measurement_is_at_second_30_of_server_time():
    # Local 12:00:10.000, server 4 s ahead (12:00:14) -> server 12:00:30 = local 12:00:26.
    local = 1_700_000_000_000 - 1_700_000_000_000 % 60_000 + 10_000
    assert next_measurement_ms(local, 4000) == local + 16_000
    # Server already past :30 -> the next minute's :30.
    assert next_measurement_ms(local + 30_000, 4000) == local + 76_000
    assert next_measurement_ms(local, -3000) == local + 23_000


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.slow
@pytest.mark.parametrize("offset_ms", [4000, -3000])
def test_publishes_clock_sync_with_the_simulators_offset(sim_factory, workdir, offset_ms):
    sim = sim_factory(symbols=2, clock_offset_ms=offset_ms)
    config = make_config(workdir, exchange={"rest_url": sim.rest_url, "ws_url": sim.ws_url},
                         live={"clock_samples": 5})
    Path(config.endpoints.runtime_dir).mkdir(mode=0o700, exist_ok=True)
    ctx = zmq.Context()
    bus = ctx.socket(zmq.SUB)
    bus.setsockopt(zmq.LINGER, 0)
    bus.setsockopt(zmq.SUBSCRIBE, b"")
    bus.bind(config.endpoints.bus_pub)
    control = ctx.socket(zmq.PULL)
    control.setsockopt(zmq.LINGER, 0)
    control.bind(config.endpoints.control)
    actor = ActorProcess("timesync", config, workdir)
    try:
        syncs: list[messages.ClockSync] = []
        deadline = time.monotonic() + 15
        while len(syncs) < 2 and time.monotonic() < deadline:
            if bus.poll(200):
                message = messages.decode(bus.recv())
                assert isinstance(message, messages.ClockSync), message
                syncs.append(message)
            assert actor.proc.poll() is None, actor.stderr()
        assert syncs, f"no ClockSync within 15 s\n{actor.stderr()}"
        for sync in syncs:
            assert abs(sync.offset_ms - offset_ms) <= 100, sync
            assert sync.rtt_ms >= 0
            assert abs(sync.measured_at_ms - time.time() * 1000) < 20_000
        assert "event=clock_measured" in actor.stderr()
        # Between measurements it waits, not spins: an idle time-sync burns a sliver of one core.
        busy_before = _cpu_seconds(actor.proc.pid)
        time.sleep(3)
        assert _cpu_seconds(actor.proc.pid) - busy_before < 1.0
    finally:
        actor.stop()
        bus.close()
        control.close()
        ctx.term()


def test_unreachable_exchange_is_logged_and_retried(workdir):
    config = make_config(workdir, exchange={"rest_url": f"http://127.0.0.1:{free_port()}", "request_timeout_s": 1.0})
    Path(config.endpoints.runtime_dir).mkdir(mode=0o700, exist_ok=True)
    ctx = zmq.Context()
    control = ctx.socket(zmq.PULL)
    control.setsockopt(zmq.LINGER, 0)
    control.bind(config.endpoints.control)
    actor = ActorProcess("timesync", config, workdir)
    try:
        deadline = time.monotonic() + 10
        while "event=clock_failed" not in actor.stderr() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert actor.proc.poll() is None
        log = actor.stderr()
        assert "event=clock_failed" in log and "retry in 3.0s" in log
    finally:
        actor.stop()
        control.close()
        ctx.term()
