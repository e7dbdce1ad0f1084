"""Entry point of the benchmarks: `python scripts/bench.py <sub> [...]`, `--help` for the list.

The benches are the package `scripts/bench/` (one module per bench); this file only runs its
command line. Python prefers the package `bench/` next to this file over this file itself.
"""

from bench.__main__ import main

if __name__ == "__main__":
    raise SystemExit(main())
