#!/usr/bin/env bash
# Install everything with the test extra, check the installed set's licences (no GPL or
# AGPL package next to Apache-2.0 Convertd), run the quality gate (ruff, mypy), then the
# test suite against real servers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
.venv/bin/python scripts/licenses.py
bash scripts/check.sh
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
# the whole suite in two parts: every test but the serial ones two at a time (each xdist
# worker starts its own servers), then the serial ones one at a time, because they time
# kills, restarts, floods and process limits that a second test beside them would skew
.venv/bin/python -m pytest -m "not serial" -n 2 --dist worksteal --durations=15
exec .venv/bin/python -m pytest -m serial --durations=15
