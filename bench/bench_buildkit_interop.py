"""One registry cache for mason and BuildKit (issue 12): how many steps each hits on the other's.

Run: BUILDKITD=/opt/buildkit/bin/buildkitd BUILDCTL=/opt/buildkit/bin/buildctl \\
     .venv/bin/python bench/bench_buildkit_interop.py [--start /opt/buildkit/start.sh]

A CNCF registry is started (``tests.support``) with the golden busybox base pushed with its
digests (``tests/data/buildkit-keys/base-busybox``), and a buildkitd (``--start``, BuildKit's
own start script, on a temporary root). For each scenario below (none of them a golden case):

1. ``mason -> buildkit``: mason builds on a fresh ``$MASON_ROOT`` and exports
   ``--cache-to type=registry,mode=max``; buildkitd's cache is pruned, then BuildKit builds
   with ``--import-cache`` of that ref: steps CACHED / steps.
2. ``buildkit -> mason``: buildkitd (pruned) builds and exports ``--export-cache
   type=registry,mode=max``; mason builds on a fresh root with ``--cache-from``: steps CACHED /
   steps.

A step is a ``[stage n/m]`` vertex other than FROM (BuildKit shows a FROM as resolved, never
CACHED). Not a test: it needs BuildKit, which the repository does not ship.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from tests.support.cli import mason_build  # noqa: E402
from tests.support.registry_server import start_registry  # noqa: E402

BASE = _REPO / "tests" / "data" / "buildkit-keys" / "base-busybox"
_STEP = re.compile(r"^#(\d+) \[(?!internal\])[^\]]+\] (?!FROM )")
_CACHED = re.compile(r"^#(\d+) CACHED$")

SCENARIOS: dict[str, tuple[str, dict[str, str]]] = {
    "multistage-app": (
        """FROM {base} AS build
WORKDIR /src
COPY go.mod main.txt ./
RUN cat go.mod main.txt > /src/app && echo built >> /src/app
COPY lib/ /src/lib/
RUN ls -R /src/lib > /src/lib.list

FROM {base}
ARG VERSION=1.0
ENV APP_VERSION=$VERSION
COPY --from=build /src/app /usr/local/bin/app
COPY --from=build /src/lib.list /etc/lib.list
RUN echo "$APP_VERSION" > /etc/version
USER 1000
WORKDIR /home/app
""",
        {"go.mod": "module x\n", "main.txt": "main\n", "lib/a.txt": "a\n", "lib/sub/b.txt": "b\n"},
    ),
    "mounts-heredoc-link": (
        """FROM {base} AS deps
RUN mkdir -p /deps && echo dep1 > /deps/one
FROM {base}
RUN --mount=type=cache,target=/var/cache/x echo cached > /var/cache/x/f && echo ok > /ok
RUN --mount=type=bind,from=deps,source=/deps,target=/mnt cat /mnt/one > /one.txt
RUN --mount=type=bind,source=conf,target=/conf cat /conf/app.conf > /app.conf
COPY --link conf/app.conf /etc/app.conf
COPY <<EOF /etc/motd
hello from a heredoc
EOF
RUN <<EOT
set -e
echo line1 > /heredoc.txt
echo line2 >> /heredoc.txt
EOT
""",
        {"conf/app.conf": "key=value\n", "conf/other.conf": "x\n"},
    ),
    "args-env-chown": (
        """ARG BASE={base}
FROM $BASE
ARG USERID=1234
ENV PATH=/opt/bin:$PATH HOME=/root
SHELL ["/bin/sh", "-c"]
COPY --chown=1234:1234 --chmod=0755 scripts/ /opt/bin/
RUN mkdir -p /data && chown $USERID /data
WORKDIR /data
COPY *.txt ./
ADD archive.tar /data/unpacked/
RUN ls -l /data > /data/listing
""",
        {"scripts/run.sh": "#!/bin/sh\necho run\n", "a.txt": "a\n", "b.txt": "bb\n"},
    ),
    "dockerignore-parents": (
        """FROM {base}
COPY . /ctx/
COPY --parents src/*/keep.txt /parents/
COPY --exclude=*.log logs/ /logs/
RUN find /ctx /parents /logs -type f | sort > /files.txt
""",
        {
            ".dockerignore": "secret.txt\n*.tmp\n",
            "secret.txt": "no\n",
            "x.tmp": "no\n",
            "src/a/keep.txt": "1\n",
            "src/b/keep.txt": "2\n",
            "logs/app.log": "log\n",
            "logs/app.txt": "txt\n",
            "readme.md": "hi\n",
        },
    ),
    "run-options": (
        """FROM {base}
RUN cat /etc/hosts > /hosts.txt
RUN --network=none echo isolated > /none.txt
RUN ulimit -n > /nofile.txt
RUN df /dev/shm > /shm.txt
""",
        {"readme.md": "built with --add-host, --ulimit, --shm-size and --network host\n"},
    ),
}

#: the command line a scenario is built with: mason's flags, and BuildKit's frontend options
#: for the same (what ``docker buildx build`` sends for those flags)
FLAGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "run-options": (
        (
            "--add-host=Db.Local:10.0.0.5",
            "--ulimit=nofile=1024:2048",
            "--shm-size=64m",
            "--network=host",
            "--allow=network.host",
        ),
        (
            "--opt=add-hosts=db.local=10.0.0.5",
            "--opt=ulimit=nofile=1024:2048",
            f"--opt=shm-size={64 << 20}",
            "--opt=force-network-mode=host",
            "--allow=network.host",
        ),
    ),
}


def _context(root: Path, name: str, base: str) -> Path:
    text, files = SCENARIOS[name]
    ctx = root / name
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(text.replace("{base}", base))
    for rel, body in files.items():
        path = ctx / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    if name == "args-env-chown":
        src = ctx / "tarsrc"
        src.mkdir()
        (src / "in-tar.txt").write_text("from the tar\n")
        subprocess.run(["tar", "-cf", str(ctx / "archive.tar"), "-C", str(src), "."], check=True)
        shutil.rmtree(src)
    return ctx


def _ratio(output: str) -> tuple[int, int]:
    steps = {m[1] for m in map(_STEP.match, output.splitlines()) if m}
    cached = {m[1] for m in map(_CACHED.match, output.splitlines()) if m}
    return len(steps & cached), len(steps)


class BuildKit:
    def __init__(self, start: str, work: Path, registry: str) -> None:
        self.buildctl = os.environ.get("BUILDCTL", "/opt/buildkit/bin/buildctl")
        self.sock = work / "bk.sock"
        out = subprocess.run(
            [start, str(work / "bk-root"), str(self.sock), registry],
            check=True,
            capture_output=True,
            text=True,
        )
        self.pid = int(out.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        os.kill(self.pid, 15)

    def _ctl(self, *args: str) -> str:
        proc = subprocess.run(
            [self.buildctl, "--addr", f"unix://{self.sock}", *args],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"buildctl {args[0]} failed:\n{proc.stderr[-3000:]}")
        return proc.stderr + proc.stdout

    def build(self, ctx: Path, *args: str) -> str:
        self._ctl("prune", "--all")
        return self._ctl(
            "build",
            "--progress=plain",
            "--frontend",
            "dockerfile.v0",
            "--local",
            f"context={ctx}",
            "--local",
            f"dockerfile={ctx}",
            *args,
        )


def _mason(ctx: Path, root: Path, *args: str) -> str:
    proc = mason_build(root, *args, str(ctx))
    if proc.returncode != 0:
        raise RuntimeError(f"mason build failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout + proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", default="/opt/buildkit/start.sh", help="BuildKit's start script")
    ap.add_argument("--scenario", action="append", choices=list(SCENARIOS), help="only these")
    opts = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mason-interop-"))
    registry = start_registry(work / "registry")
    bk = None
    try:
        base = f"{registry.host}/base/busybox:latest"
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--preserve-digests",
                "--dest-tls-verify=false",
                f"oci:{BASE}:latest",
                f"docker://{base}",
            ],
            check=True,
            capture_output=True,
        )
        bk = BuildKit(opts.start, work, registry.host)
        totals = {"mason -> buildkit": [0, 0], "buildkit -> mason": [0, 0]}
        print(f"{'scenario':24} {'mason -> buildkit':>18} {'buildkit -> mason':>18}")
        for n, name in enumerate(opts.scenario or SCENARIOS):
            ctx = _context(work / "ctx", name, base)
            mason_flags, bk_flags = FLAGS.get(name, ((), ()))
            ref_m, ref_b = (
                f"{registry.host}/interop/{name}-mason",
                f"{registry.host}/interop/{name}-bk",
            )
            cache_to = ("--cache-to", f"type=registry,ref={ref_m},mode=max")
            _mason(ctx, work / f"root-{n}-cold", *mason_flags, *cache_to)
            m2b = _ratio(bk.build(ctx, *bk_flags, "--import-cache", f"type=registry,ref={ref_m}"))
            bk.build(ctx, *bk_flags, "--export-cache", f"type=registry,ref={ref_b},mode=max")
            cache_from = ("--cache-from", f"type=registry,ref={ref_b}")
            b2m = _ratio(_mason(ctx, work / f"root-{n}-warm", *mason_flags, *cache_from))
            for key, (hit, total) in (("mason -> buildkit", m2b), ("buildkit -> mason", b2m)):
                totals[key][0] += hit
                totals[key][1] += total
            print(f"{name:24} {m2b[0]:>10}/{m2b[1]:<7} {b2m[0]:>10}/{b2m[1]:<7}")
        for key, (hit, total) in totals.items():
            print(f"{key}: {hit}/{total} steps CACHED ({100 * hit / max(total, 1):.0f}%)")
    finally:
        if bk is not None:
            bk.stop()
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
