"""Benchmarks of kl-actors, one module per bench, one command line: `python scripts/bench.py <sub>`
(a thin entry point that runs this package's `__main__.py`, which holds the subcommands).

- `sim.py`      pages/s and candles/s the simulator serves, cold and warm
- `writer.py`   writer rows/s through its sockets versus raw apsw upserts
- `backfill.py` backfill rate at the real weight limit versus the ceiling; scaling with downloaders
- `live.py`     close -> commit and close -> feed latency, WebSocket path versus REST boundary path
- `universe_live.py`      the top of the day with 550 symbols x 15 intervals (`live --universe`)
- `universe_backfill.py`  550 x 15 backfilled from empty with `--once` (`universe`)
- `archive.py`  since-listing bootstrap from the simulator's archive, cold then warm
- `api.py`      the read API: pages of 1500 1m candles, 1 and 16 clients, requests/s and p99

The benches start the service, the simulator and configs with the test harness
(`tests/harness.py`: `free_port`, `make_config`, `RunningService`, `wait_for`), so a bench and a
test run the same code; importing this package puts the repository and `tests/` on `sys.path`.
A bench prints figures and asserts nothing: the tests prove behaviour, the benches measure it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Appended, not prepended: `tests/` holds test modules whose names must not shadow anything.
if str(ROOT / "tests") not in sys.path:
    sys.path.append(str(ROOT / "tests"))


def service_config(workdir: Path, **settings):
    """`harness.make_config` with the service's own supervisor timers (the harness shortens them
    for tests; a bench measures the defaults). `settings`: a dict per config section, or a value
    for a top-level key (`mode="stream-only"`)."""
    import msgspec

    from harness import make_config
    from kl_actors import config as cfg

    top = {key: value for key, value in settings.items() if not isinstance(value, dict)}
    sections = {key: value for key, value in settings.items() if isinstance(value, dict)}
    sections["supervisor"] = {**msgspec.structs.asdict(cfg.SupervisorConfig()), **sections.get("supervisor", {})}
    config = make_config(workdir, **sections)
    if top:
        config = cfg.resolve_endpoints(cfg.check(msgspec.structs.replace(config, **top), "bench"))
    return config
