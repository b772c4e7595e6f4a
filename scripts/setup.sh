#!/usr/bin/env bash
# Installs what one job needs on a fresh Debian/Ubuntu machine, and nothing more:
#
#   bash scripts/setup.sh demo    scripts/demo.sh: a local registry, runc, busybox; mason in .venv
#   bash scripts/setup.sh test    scripts/test.sh: the demo's, plus the tools the integration
#                                 tests check mason against, and mason[test] in .venv
#   bash scripts/setup.sh bench   bench/*.py: the demo's, plus buildah and skopeo (the peers)
#
# System packages are installed only when missing, only as root, and each is named with the
# reason it is needed. When another apt or dpkg holds the dpkg lock (unattended-upgrades on a
# fresh VM), this waits for it up to 5 minutes instead of failing at once.
set -euo pipefail
cd "$(dirname "$0")/.."

job=${1:-}
case "$job" in
    demo | test | bench) ;;
    *)
        echo "usage: bash scripts/setup.sh demo|test|bench" >&2
        exit 2
        ;;
esac

# package, a command it provides, and why mason needs it
declare -A why=(
    [docker-registry]="the local CNCF registry images and caches are pushed to"
    [runc]="runs the Dockerfile's RUN steps"
    [busybox-static]="the one binary of the base image built on the fly"
    [skopeo]="the tests and benches check mason's images with another tool"
    [umoci]="the tests unpack mason's OCI layouts with another tool"
    [apache2-utils]="htpasswd, for the basic-auth registry the tests start"
    [openssl]="a throw-away CA for the TLS registry the tests start"
    [buildah]="the builder the benches compare mason with"
    [git]="ADD of a git repository, and the git server the tests start on loopback"
    [iproute2]="ip netns: the tests put a LAN registry in a network namespace of their own"
    [openssh-client]="ssh-agent, ssh-add, ssh-keygen: the --ssh tests forward a real agent"
    [qemu-user-static]="QEMU user-mode emulators: the multi-platform tests RUN steps of linux/arm64 images on this machine (mason registers them with binfmt_misc)"
)
declare -A provides=(
    [docker-registry]=docker-registry [runc]=runc [busybox-static]=busybox [skopeo]=skopeo
    [umoci]=umoci [apache2-utils]=htpasswd [openssl]=openssl [buildah]=buildah [git]=git
    [iproute2]=ip [openssh-client]=ssh-agent [qemu-user-static]=qemu-aarch64-static
)
packages=(docker-registry runc busybox-static)
extras=""  # pip extras of mason
case "$job" in
    test)
        packages+=(skopeo umoci apache2-utils openssl git iproute2 openssh-client qemu-user-static)
        extras="[test]"  # pytest, hypothesis, ruff, mypy, import-linter, PyJWT/cryptography (token registry)
        ;;
    bench) packages+=(skopeo buildah) ;;
esac

have() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]
}

# Polls the locks apt and dpkg take (fcntl locks, as dpkg takes them) for up to 5 minutes.
wait_for_dpkg_lock() {
    local waited=0 limit=300
    while ! python3 - <<'EOF' 2>/dev/null; do
import fcntl
for path in ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock"):
    try:
        with open(path, "a") as f:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except FileNotFoundError:
        pass
EOF
        if [ "$waited" -eq 0 ]; then
            echo "mason setup: another apt or dpkg is running (see: ps -C apt,apt-get,dpkg,unattended-upgr);" \
                "waiting up to $((limit / 60)) minutes for it to finish" >&2
        fi
        if [ "$waited" -ge "$limit" ]; then
            echo "mason setup: the dpkg lock is still held after $((limit / 60)) minutes;" \
                "run this again once the other apt or dpkg has finished" >&2
            exit 1
        fi
        sleep 5
        waited=$((waited + 5))
    done
}

missing=()
for package in "${packages[@]}"; do
    have "${provides[$package]}" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "mason setup ($job): missing system packages:" >&2
    for package in "${missing[@]}"; do
        echo "  $package: ${why[$package]}" >&2
    done
    if [ "$(id -u)" -ne 0 ]; then
        echo "mason setup: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    wait_for_dpkg_lock
    # the lock timeout covers a second apt that starts between our check and apt-get's own lock
    apt=(apt-get -q -o DPkg::Lock::Timeout=300)
    echo "mason setup: apt-get update and install ${missing[*]}" >&2
    if ! "${apt[@]}" update >&2 || ! "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >&2; then
        echo "mason setup: apt-get failed (above); if another apt held the dpkg lock, run this again" >&2
        exit 1
    fi
fi

# The multi-platform tests build an arm64 base image from Debian's busybox-static:arm64
# (tests/support/busybox.py downloads it with apt-get download, once): apt needs the arm64
# architecture and its package lists. Nothing arm64 is installed.
if [ "$job" = test ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "mason setup: run as root, or: sudo dpkg --add-architecture arm64 && sudo apt-get update" >&2
        exit 1
    fi
    echo "mason setup (test): adding the arm64 architecture to apt (for apt-get download busybox-static:arm64)" >&2
    wait_for_dpkg_lock
    dpkg --add-architecture arm64
    if ! apt-get -q -o DPkg::Lock::Timeout=300 update >&2; then
        echo "mason setup: apt-get update failed (above); run this again" >&2
        exit 1
    fi
fi

up_to_date() {
    [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ]
}

python=${PYTHON:-python3}
stamp=".venv/.mason-installed${extras:+-test}"
# mason[test] includes mason: a venv set up for the tests serves the demo and the benches too
if [ -z "$extras" ] && up_to_date .venv/.mason-installed-test; then
    exit 0
fi
if [ ! -x .venv/bin/python ]; then
    echo "mason setup: creating .venv (mason and its Python dependencies)" >&2
    "$python" -m venv .venv
fi
if ! up_to_date "$stamp"; then
    if [ -n "$extras" ]; then
        echo "mason setup: installing mason$extras into .venv (the test tools: pytest, hypothesis," \
            "ruff, mypy, import-linter, PyJWT, cryptography)" >&2
    else
        echo "mason setup: installing mason into .venv" >&2
    fi
    .venv/bin/pip install -q --disable-pip-version-check -e ".$extras"
    touch "$stamp"
fi
# an editable install compiles nothing: mason's first build would compile the ~110 of its modules
# it imports (~0.3 s); compile them now, as a wheel's install does (up-to-date ones are skipped)
.venv/bin/python -m compileall -q src/mason
