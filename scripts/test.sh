#!/usr/bin/env bash
# Install everything with the test extra, then run the test suite against real servers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
exec .venv/bin/python -m pytest "$@"
