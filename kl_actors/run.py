"""Launcher of one actor process: `python -m kl_actors.run <name> --config-file F --parent-pid P
[--restarts N]` (N: earlier runs of this actor in this service, so it can tell a restart).

The actor's name is on the command line so `ps` shows which actor a process is (`writer`,
`downloader-2`, ...). The supervisor writes the effective config as JSON into the runtime
directory and passes its path. Actor modules are imported by name here so that actors never
import one another.
"""

from __future__ import annotations

import argparse
import sys

import msgspec

from .actors import registry
from .config import Config

def kind_of(name: str) -> str:
    kind = registry.kind_of(name)
    if kind is None:
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
    actor_class = registry.actor_class(kind_of(args.name))
    return actor_class(config, args.name, parent_pid=args.parent_pid, restarts=args.restarts).run()


if __name__ == "__main__":
    sys.exit(main())
