#!/usr/bin/env bash
# Install everything with the test extra, check the installed set's licences (no GPL or
# AGPL package next to Apache-2.0 Convertd), run the quality gate (ruff, mypy), then the
# test suite against real servers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
.venv/bin/python scripts/licenses.py
bash scripts/check.sh
exec .venv/bin/python -m pytest "$@"
