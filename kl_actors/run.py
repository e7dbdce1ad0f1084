"""Launcher of one actor process: `python -m kl_actors.run <name> --config-file F --parent-pid P
[--restarts N]` (N: earlier runs of this actor in this service, so it can tell a restart).

The actor's name is on the command line so `ps` shows which actor a process is (`writer`,
`downloader-2`, ...). The supervisor writes the effective config as JSON into the runtime
directory and passes its path. Actor modules are imported by name here so that actors never
import one another.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import msgspec

from .config import Config

# Actor kind -> (module, class). A name is the kind, or kind-N for pooled actors (downloader-2).
ACTOR_KINDS = {
    "broker": ("kl_actors.broker", "Broker"),
    "writer": ("kl_actors.writer", "Writer"),
    "scheduler": ("kl_actors.scheduler", "Scheduler"),
    "downloader": ("kl_actors.downloader", "Downloader"),
    "websocket": ("kl_actors.websocket", "WebSocketActor"),
    "timesync": ("kl_actors.timesync", "TimeSync"),
}


def kind_of(name: str) -> str:
    kind = name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isdigit() else name
    if kind not in ACTOR_KINDS:
        raise SystemExit(f"kl-actors: unknown actor {name!r}")
    return kind


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kl_actors.run")
    p.add_argument("name")
    p.add_argument("--config-file", required=True)
    p.add_argument("--parent-pid", type=int, default=0)
    p.add_argument("--restarts", type=int, default=0, help="how often this actor was restarted before")
    args = p.parse_args(argv)
    with open(args.config_file, "rb") as f:
        config = msgspec.json.decode(f.read(), type=Config)
    module_name, class_name = ACTOR_KINDS[kind_of(args.name)]
    actor_class = getattr(importlib.import_module(module_name), class_name)
    return actor_class(config, args.name, parent_pid=args.parent_pid, restarts=args.restarts).run()


if __name__ == "__main__":
    sys.exit(main())
