#!/usr/bin/env bash
# The main job: start a local registry, build examples/ and push it with a registry cache,
# wipe the local state, build again: every step CACHED, same digest (python -m mason.cli.demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m mason.cli.demo "$@"
