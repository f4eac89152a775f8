#!/usr/bin/env bash
# The quality gate over the whole tree: lint, formatting and types (strict on app/ and
# converters/, see [tool.mypy] in pyproject.toml), and no function over 60 lines that does
# not say why in its docstring (issue 11). Any finding fails. scripts/test.sh runs
# it before the tests; .pre-commit-config.yaml runs the same four checks.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python scripts/long_functions.py >/dev/null
