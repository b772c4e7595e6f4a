#!/usr/bin/env bash
# The main job: start a local registry, build and push, show the registry cache hits.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m mason.demo "$@"
