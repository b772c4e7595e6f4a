#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks for mason and its tests:
# the system packages (only when missing, only as root) and a virtualenv in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker-registry runc busybox-static skopeo umoci buildah apache2-utils openssl)
commands=(docker-registry runc busybox skopeo umoci buildah htpasswd openssl)
missing=()
for i in "${!packages[@]}"; do
    command -v "${commands[$i]}" >/dev/null 2>&1 || [ -x "/usr/sbin/${commands[$i]}" ] || missing+=("${packages[$i]}")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "mason setup: missing system packages: ${missing[*]}" >&2
        echo "mason setup: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "mason setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
stamp=.venv/.mason-installed
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
    touch "$stamp"
fi
