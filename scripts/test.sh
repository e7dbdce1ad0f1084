#!/usr/bin/env bash
# Runs the test suite on a fresh machine: makes .venv, installs the project with its test extras,
# runs pytest. Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -q).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
exec "$VENV/bin/python" -m pytest "$@"
