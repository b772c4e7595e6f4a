#!/usr/bin/env bash
# Runs every check: lint, types, layering contracts, unit and integration tests.
# With MASON_REQUIRE_INTEGRATION=1 a skipped integration test fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
ruff check src tests bench
mypy src
lint-imports
pytest -q -p no:cacheprovider "$@"
