#!/usr/bin/env bash
# Runs every check: lint, types, layering contracts, unit and integration tests.
# With MASON_REQUIRE_INTEGRATION=1 a skipped integration test fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
export PATH="$PWD/.venv/bin:$PATH"
ruff check src tests bench scripts
ruff format --check src tests bench scripts
mypy src
lint-imports
# docs/architecture.md §9: a cache's type is dispatched on in one place, the backend table
# (mason/cache/backends.py); a `type ==`/`type in` test or a comparison with a backend's name
# anywhere else in mason.cache fails the run. `media_type ==` and the like do not match.
dispatch='(^|[^A-Za-z0-9_])type[[:space:]]*(==|!=|in[[:space:]]|not[[:space:]]+in[[:space:]])'
dispatch+='|(==|!=)[[:space:]]*"(registry|local|inline)"|"(registry|local|inline)"[[:space:]]*(==|!=)'
if grep -rnE --include='*.py' "$dispatch" src/mason/cache | grep -v '^src/mason/cache/backends\.py:'; then
    echo "error: cache type dispatch outside src/mason/cache/backends.py (see its docstring)" >&2
    exit 1
fi
pytest -q -p no:cacheprovider "$@"
