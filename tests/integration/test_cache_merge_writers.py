"""Eight builders of eight branches export to one registry cache ref at once; afterwards each
rebuilds on a fresh root with every step from that ref (issue 15: merge instead of overwrite)."""

from __future__ import annotations

import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.cli import mason_build
from tests.support.registry_server import RegistryServer

BRANCHES = [f"branch-{i}" for i in range(8)]


def _context(tmp_path: Path, base: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\nARG BRANCH\nRUN echo shared > /shared\nRUN echo $BRANCH > /branch\n"
    )
    return ctx


def _build(tmp_path: Path, ctx: Path, branch: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return mason_build(
        tmp_path / "roots" / branch,
        "--build-arg",
        f"BRANCH={branch}",
        *flags,
        str(ctx),
        timeout=300,
    )


def test_eight_writers_at_once_keep_every_branch(
    registry: RegistryServer, busybox_image: str, tmp_path: Path
) -> None:
    ref = f"{registry.host}/fleet/cache"
    ctx = _context(tmp_path, busybox_image)
    with ThreadPoolExecutor(max_workers=len(BRANCHES)) as pool:
        cold = list(
            pool.map(
                lambda b: _build(
                    tmp_path / "cold", ctx, b, "--cache-to", f"type=registry,ref={ref},mode=max"
                ),
                BRANCHES,
            )
        )
    for branch, proc in zip(BRANCHES, cold, strict=True):
        assert proc.returncode == 0, (branch, proc.stderr[-3000:])

    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}:latest"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    manifest = json.loads(raw)
    assert manifest["config"]["mediaType"] == "application/vnd.buildkit.cacheconfig.v0"

    for branch in BRANCHES:
        warm = _build(tmp_path / "warm", ctx, branch, "--cache-from", f"type=registry,ref={ref}")
        assert warm.returncode == 0, warm.stderr[-3000:]
        log = warm.stderr + warm.stdout
        runs = re.findall(r"^#(\d+) \[\d+/\d+\] RUN ", log, re.M)
        assert len(runs) == 2, log
        for vertex in runs:
            assert f"#{vertex} CACHED" in log, (branch, log[-3000:])
