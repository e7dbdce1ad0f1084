#!/usr/bin/env bash
# Runs the service offline against the bundled exchange simulator on loopback: makes .venv,
# installs the project, starts `supervisor.py --sim`. Extra arguments go to supervisor.py.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
exec "$VENV/bin/python" supervisor.py --sim "$@"
