#!/usr/bin/env bash
# Runs every check: lint, types, layering contracts, unit and integration tests.
# With MASON_REQUIRE_INTEGRATION=1 a skipped integration test fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
export PATH="$PWD/.venv/bin:$PATH"
ruff check src tests bench scripts
mypy src
lint-imports
pytest -q -p no:cacheprovider "$@"
