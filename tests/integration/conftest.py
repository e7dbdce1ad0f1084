"""Fixtures for tests that run real processes; the helpers themselves live in procs.py."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from procs import RunningService


@pytest.fixture
def workdir():
    # ipc:// paths must stay short (about 100 bytes), so not under pytest's long tmp_path.
    path = Path(tempfile.mkdtemp(prefix="kl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def service_factory(workdir):
    started: list[RunningService] = []

    def start(config, extra_args=None) -> RunningService:
        service = RunningService(config, workdir, extra_args)
        started.append(service)
        return service

    yield start
    for service in started:
        service.cleanup()
