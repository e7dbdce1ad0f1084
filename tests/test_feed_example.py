"""The feed example consumer (`scripts/tail_feed.py`) reads the real feed format with only ZeroMQ
and a MessagePack decoder: run it as a process against a PUB socket sending what the broker sends."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading

import zmq

from harness import ROOT, free_port, wait_for
from kl_actors import messages
from kl_actors.messages import Candle, FeedKline

SCRIPT = ROOT / "scripts" / "tail_feed.py"


def test_example_imports_nothing_of_kl_actors():
    tree = ast.parse(SCRIPT.read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(m.split(".")[0] == "kl_actors" for m in modules), modules


def test_example_prints_each_message_and_the_seq_gap():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.bind(endpoint)
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--feed", endpoint, "--count", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        candle = Candle(1_700_000_040_000, "100.1", "101", "99.9", "100.5", "12.3", 1_700_000_099_999,
                        "1234.5", 42, "6", "617.2")
        topic = messages.feed_topic("币安人生USDT", "1m")

        def publish(seq):
            pub.send_multipart([topic, messages.encode(FeedKline("币安人生USDT", "1m", seq, True, "rest", True,
                                                                 candle))])
        # PUB drops messages until the subscriber has joined: seq 1 until the script shows it.
        wait_for(lambda: publish(1) or lines, 30, interval=0.05, what="the first message printed")
        wait_for(lambda: publish(4) or any("seq=4" in line for line in lines), 30, interval=0.05,
                 what="the message after the gap printed")
    finally:
        proc.kill()
        proc.wait()
        pub.close(0)
    lines = [line.rstrip("\n") for line in lines]
    assert lines[0] == ("kline.币安人生USDT.1m seq=1 closed stored rest t=1700000040000 o=100.1 h=101 "
                        "l=99.9 c=100.5 v=12.3 n=42")
    after = next(line for line in lines if "seq=4" in line)
    assert after.endswith("(gap: 2 lost)"), lines
