"""Cache scopes: a branch build reads its own scope, then main's, and writes only its own."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tests.support.cli import mason, mason_build
from tests.support.registry_server import RegistryServer


def _context(tmp_path: Path, base: str, step: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\nRUN echo base > /base\nCOPY a.txt /a.txt\nRUN {step}\n"
    )
    (ctx / "a.txt").write_text("a\n")
    return ctx


def _digest(tmp_path: Path, ref: str) -> str:
    proc = mason(tmp_path / "inspect-root", "imagetools", "inspect", "--raw", ref, text=False)
    assert proc.returncode == 0, proc.stderr
    return hashlib.sha256(proc.stdout).hexdigest()


def test_a_branch_reads_main_and_never_writes_it(
    registry: RegistryServer, busybox_image: str, tmp_path: Path
) -> None:
    cache = f"type=registry,ref={registry.host}/scopes/app-cache,mode=max"
    main_ctx = _context(tmp_path / "main", busybox_image, "echo main > /step")
    main = mason_build(tmp_path / "root-main", "--cache-to", f"{cache},scope=main", str(main_ctx))
    assert main.returncode == 0, main.stderr
    main_digest = _digest(tmp_path, f"{registry.host}/scopes/app-cache:main")

    # a feature branch on a fresh machine: the shared steps come from main's scope
    feature_ctx = _context(tmp_path / "feature", busybox_image, "echo feature > /step")
    feature = mason_build(
        tmp_path / "root-feature-1",
        "--cache-from",
        f"{cache},scope=feature/login",
        "--cache-to",
        f"{cache},scope=feature/login",
        str(feature_ctx),
    )
    assert feature.returncode == 0, feature.stderr
    log = feature.stderr + feature.stdout
    assert "no cache at" in log and "app-cache:feature-login" in log
    hits = re.findall(r"cache hit from registry \S+", log)
    assert hits and all(h.endswith("/scopes/app-cache:main") for h in hits), hits
    assert len(hits) == 3, log  # FROM, RUN echo base and COPY; the changed RUN ran
    assert _digest(tmp_path, f"{registry.host}/scopes/app-cache:main") == main_digest

    # the branch's next build finds its own step in its own scope
    again = mason_build(
        tmp_path / "root-feature-2",
        "--cache-from",
        f"{cache},scope=feature/login",
        str(feature_ctx),
    )
    assert again.returncode == 0, again.stderr
    again_log = again.stderr + again.stdout
    assert "app-cache:feature-login" in " ".join(
        re.findall(r"cache hit from registry \S+", again_log)
    )
    assert again_log.count("CACHED") >= 3, again_log
