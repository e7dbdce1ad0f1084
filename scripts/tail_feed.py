#!/usr/bin/env python3
"""Print what the kl-actors consumer feed publishes.

    python scripts/tail_feed.py [--feed tcp://127.0.0.1:7755] [--prefix kline.BTCUSDT.] [--closed-only]

Each message is two ZeroMQ frames: the topic `kline.<SYMBOL>.<interval>` (ASCII), then a
MessagePack map (see README, "Consumer feed"). A jump in `seq` for a topic means messages were
lost (slow consumer, or the feed restarted and seq began again at 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zmq  # noqa: E402

from kl_actors import messages  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--feed", default="tcp://127.0.0.1:7755")
    p.add_argument("--prefix", action="append", default=None, help="topic prefix (repeatable); default kline.")
    p.add_argument("--closed-only", action="store_true")
    p.add_argument("--count", type=int, default=0, help="exit after this many messages (0: run forever)")
    a = p.parse_args(argv)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.connect(a.feed)
    for prefix in a.prefix or ["kline."]:
        sub.setsockopt(zmq.SUBSCRIBE, prefix.encode())
    last_seq: dict[bytes, int] = {}
    seen = 0
    try:
        while a.count == 0 or seen < a.count:
            topic, body = sub.recv_multipart()
            k = messages.decode_feed(body)
            if isinstance(k, messages.DecodeError):
                print(f"undecodable message on {topic!r}: {k.reason}", file=sys.stderr)
                continue
            gap = k.seq - last_seq.get(topic, k.seq - 1) - 1
            last_seq[topic] = k.seq
            seen += 1
            if a.closed_only and not k.closed:
                continue
            c = k.candle
            flags = ("closed" if k.closed else "live") + (" stored" if k.stored else "") + f" {k.source}"
            note = f"  (gap: {gap} lost)" if gap > 0 else ""
            print(f"{topic.decode()} seq={k.seq} {flags} t={c.open_time_ms} o={c.open} h={c.high} l={c.low} "
                  f"c={c.close} v={c.volume} n={c.trades}{note}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        ctx.destroy(linger=0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
