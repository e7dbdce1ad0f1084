"""Shared pytest fixtures.

- `sim`: one simulator subprocess for the whole session (weight limit lifted, fast WS pushes).
  Tests using it must leave faults/holes as they found them; tests that need special options or
  change global state use `sim_factory` instead.
- `sim_factory(**options)`: starts a dedicated simulator (options as for `SimProcess`); every
  process it started is stopped at the end of the test, also on failure.
- `fixtures_dir`: `tests/fixtures/` (recorded real responses, see its README).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kl_actors.sim.process import SimProcess  # noqa: E402
from harness import RunningService  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def sim():
    with SimProcess(symbols=20, seed=1, weight_limit=1_000_000, ws_push_ms=100) as process:
        yield process


@pytest.fixture
def sim_factory():
    started: list[SimProcess] = []

    def start(**options) -> SimProcess:
        process = SimProcess(**options)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def workdir():
    # ipc:// paths must stay short (about 100 bytes), so not under pytest's long tmp_path.
    path = Path(tempfile.mkdtemp(prefix="kl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def service_factory(workdir):
    started: list[RunningService] = []

    def start(config, extra_args=None, env=None) -> RunningService:
        service = RunningService(config, workdir, extra_args, env)
        started.append(service)
        return service

    yield start
    for service in started:
        service.cleanup()


WORKERS = 8  # scripts/test.sh's -n


def pytest_collection_modifyitems(items):
    """Longest first: `@pytest.mark.slow(seconds)` says how long a test waits (measured here; 30 s
    when not given). scripts/test.sh runs eight workers with `--dist loadgroup --maxschedchunk 1`: each
    worker starts with two tests, then takes one whenever it has fewer than two (a module marked
    `xdist_group` goes to one worker whole, so its module-scoped fixture is built once). So the first
    sixteen places alternate a long test and a quick one, and every worker starts on a long wait."""
    def expected_s(item):
        mark = item.get_closest_marker("slow")
        return (mark.args[0] if mark.args else 30) if mark else 0
    items.sort(key=lambda item: -expected_s(item))
    slow = [i for i in items if expected_s(i)]
    quick = [i for i in items if not expected_s(i)]
    head = []
    for i in range(min(WORKERS, len(slow))):
        head.append(slow[i])
        if quick:
            head.append(quick.pop(0))
    items[:] = head + slow[WORKERS:] + quick
