#!/usr/bin/env python3
"""Entry point: `python supervisor.py [options]`; see `--help` and the README."""

import sys

from kl_actors.commands import main

if __name__ == "__main__":
    sys.exit(main())
