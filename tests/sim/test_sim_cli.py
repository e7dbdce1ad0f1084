"""The simulator's command line: ready lines, loopback guard, clean shutdown."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from kl_actors.sim.process import SimProcess, SimStartError

ROOT = Path(__file__).resolve().parents[2]


def test_two_ready_lines_and_clean_sigterm(sim_factory):
    sim = sim_factory(symbols=5, seed=3)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sim.rest_url)
    assert sim.ws_url == sim.rest_url.replace("http://", "ws://") + "/market"
    assert sim.port > 0 and requests.get(sim.rest_url + "/fapi/v1/ping").json() == {}
    info = sim.info()
    assert info["seed"] == 3 and info["n_symbols"] == 5
    proc = sim.proc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0  # a bound for a simulator that never exits, not a speed test


def test_sigint_exits_cleanly():
    with SimProcess(symbols=4) as sim:
        sim.proc.send_signal(signal.SIGINT)
        # Each of its two servers may take its 1 s shutdown timeout; on a busy machine more:
        # the bound only catches a simulator that never exits (a hog run saw 5 s pass).
        assert sim.proc.wait(30) == 0


def test_refuses_non_loopback_host():
    r = subprocess.run([sys.executable, "-m", "kl_actors.sim", "--host", "0.0.0.0",
                        "--port", "0"], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "non-loopback" in r.stderr
    t0 = time.monotonic()
    try:
        SimProcess(host="192.168.1.1").start()
        raise AssertionError("should not start")
    except SimStartError as e:
        assert "rc=2" in str(e)
    assert time.monotonic() - t0 < 10
