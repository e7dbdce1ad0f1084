#!/usr/bin/env bash
# Runs the test suite on a fresh machine: makes .venv, installs the project with its test extras,
# runs pytest. Extra arguments go to pytest (e.g. scripts/test.sh tests/core -q).
# The suite waits on real time (minute boundaries, leases, a stalled writer) far more than it
# computes, so eight worker processes overlap the waits, longest tests first (tests/conftest.py):
# 33 min of test time / 8 = about 4 min, while its 7 min of CPU need 3.5 on two cores;
# pass `-n 0` to run in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
# Bytecode caches on: the suite starts about a thousand Python processes (actors, simulators),
# each of which would otherwise compile the project's modules again, and each worker would
# rewrite every test module's asserts again (an environment may turn the caches off).
unset PYTHONDONTWRITEBYTECODE
# Compiled once here, not by the dozens of actors the first tests start at the same moment.
"$VENV/bin/python" -m compileall -q kl_actors supervisor.py scripts tests >/dev/null
workers=(-n 8 --dist loadgroup --maxschedchunk 1)
for arg in "$@"; do
  case "$arg" in -n|-n*|--numprocesses*) workers=() ;; esac
done
exec "$VENV/bin/python" -m pytest "${workers[@]}" "$@"
