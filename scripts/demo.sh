#!/usr/bin/env bash
# The main job: start a local registry, build examples/ and push it with a registry cache,
# wipe the local state, build again: every step CACHED, same digest (scripts/demo.py).
# --keep leaves the registry running afterwards, to build your own Dockerfile against it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
exec .venv/bin/python scripts/demo.py "$@"
