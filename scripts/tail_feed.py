#!/usr/bin/env python3
"""Print what the kl-actors consumer feed publishes.

    python scripts/tail_feed.py [--feed tcp://127.0.0.1:7755] [--prefix kline.BTCUSDT.] [--closed-only]

Each message is two ZeroMQ frames: the topic `kline.<SYMBOL>.<interval>` (UTF-8), then a
MessagePack map (see README, "Consumer feed"). A jump in `seq` for a topic means messages were
lost (slow consumer, or the feed restarted and seq began again at 1).

It imports only ZeroMQ and a MessagePack decoder, never `kl_actors`: the proof that a program in
any language with those two libraries can read the feed.
"""

from __future__ import annotations

import argparse
import sys

import msgspec
import zmq


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
            try:
                k = msgspec.msgpack.decode(body)
                seq, closed, stored, source, c = k["seq"], k["closed"], k["stored"], k["source"], k["candle"]
            except (msgspec.DecodeError, KeyError, TypeError) as exc:
                print(f"undecodable message on {topic!r}: {exc}", file=sys.stderr)
                continue
            gap = seq - last_seq.get(topic, seq - 1) - 1
            last_seq[topic] = seq
            seen += 1
            if a.closed_only and not closed:
                continue
            flags = ("closed" if closed else "live") + (" stored" if stored else "") + f" {source}"
            note = f"  (gap: {gap} lost)" if gap > 0 else ""
            print(f"{topic.decode('utf-8', 'replace')} seq={seq} {flags} t={c[0]} o={c[1]} h={c[2]} l={c[3]} "
                  f"c={c[4]} v={c[5]} n={c[8]}{note}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        ctx.destroy(linger=0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
