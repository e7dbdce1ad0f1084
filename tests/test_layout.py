"""The tree's import rules, checked over folders (kl_actors/__init__.py has the module map):

- `core/` is pure: no sockets, database, HTTP, WebSocket or event loop libraries, no file I/O, no
  processes; only `core/clock.py` reads local time (every other core module is given `now`);
- an actor module imports no other actor (they talk over sockets; `registry.py` names them), only
  the shell (`base.py`) and its own parts (`scheduler_backfill.py` for the scheduler);
- `sim/` imports nothing of the service: it is a second, independent implementation of the
  exchange that the tests compare the service with.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "kl_actors"
IO_LIBRARIES = {"zmq", "apsw", "requests", "websocket", "aiohttp", "socket", "sqlite3", "subprocess",
                "threading", "os", "shutil", "pathlib", "asyncio", "urllib.request", "http"}
CLOCK = {"time"}


def imports(path: Path, root: Path = PKG.parent) -> list[tuple[str, int]]:
    """(absolute module, line) of every import in `path`, relative ones resolved."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, node.lineno))
            found += [(f"{module}.{a.name}", node.lineno) for a in node.names]
    return found


def top(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("path", sorted((PKG / "core").glob("*.py")), ids=lambda p: p.name)
def test_core_is_pure(path):
    for module, line in imports(path):
        assert top(module) not in IO_LIBRARIES and module not in IO_LIBRARIES, f"{path.name}:{line} imports {module}"
        if path.name != "clock.py":
            assert top(module) not in CLOCK, f"{path.name}:{line} reads the clock ({module}); pass `now` in"
        assert not module.startswith(("kl_actors.actors", "kl_actors.store", "kl_actors.supervisor", "kl_actors.commands",
                                      "kl_actors.sim", "kl_actors.log")), f"{path.name}:{line} imports {module}"
    source = path.read_text()
    assert "open(" not in source.replace("_open(", ""), f"{path.name} opens a file"


@pytest.mark.parametrize("path", sorted((PKG / "actors").glob("*.py")), ids=lambda p: p.name)
def test_an_actor_imports_no_other_actor(path):
    if path.name in ("__init__.py", "base.py", "registry.py"):
        return
    own = path.stem.split("_")[0]  # an actor may be split by idea: scheduler_backfill.py is the scheduler's
    for module, line in imports(path):
        if module.startswith("kl_actors.actors."):
            name = module.split(".")[2]
            assert name == "base" or name.startswith(own + "_"), f"{path.name}:{line} imports actor module {module}"


@pytest.mark.parametrize("path", sorted((PKG / "sim").glob("*.py")), ids=lambda p: p.name)
def test_the_simulator_imports_nothing_of_the_service(path):
    for module, line in imports(path):
        if top(module) == "kl_actors":
            assert module.startswith("kl_actors.sim"), f"sim/{path.name}:{line} imports {module}"


def test_rules_see_relative_imports(tmp_path):
    """A core module reaching an actor through a relative import is seen as doing so."""
    fake = tmp_path / "kl_actors" / "core" / "probe.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..actors import base\nfrom . import intervals\nimport zmq\n")
    found = [m for m, _ in imports(fake, root=tmp_path)]
    assert {"kl_actors.actors.base", "kl_actors.core.intervals", "zmq"} <= set(found)
