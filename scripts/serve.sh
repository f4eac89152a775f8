#!/usr/bin/env bash
# Install everything, then run the whole service (embedded PostgreSQL and Redis by default).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/convertd serve "$@"
