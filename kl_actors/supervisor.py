"""The supervisor: loads the config and (from issue 3 on) starts and watches every actor."""

from __future__ import annotations

import json
import sys

import msgspec

from . import cli
from . import config as cfg


def main(argv: list[str] | None = None) -> int:
    args = cli.parser().parse_args(argv)
    try:
        config = cfg.resolve_endpoints(cli.effective_config(args))
    except cfg.ConfigError as exc:
        print(f"kl-actors: config error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(msgspec.to_builtins(config), indent=2))
    return 0
