"""mason build --explain-cache against the real registry and runc: the miss lines name the
changed context file and the changed build arg; without the flag there are none."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from tests.support.cli import mason_build

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (overlayfs, runc)")

DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY app/ /app/
ARG VERSION
RUN echo "$VERSION" > /version
"""


def _build(root: Path, ctx: Path, base: str, version: str, *extra: str) -> str:
    """The progress output of a build that must succeed."""
    proc = mason_build(
        root, "--build-arg", f"BASE={base}", "--build-arg", f"VERSION={version}", *extra, str(ctx)
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_explain_cache_names_file_and_arg(tmp_path: Path, busybox_image: str) -> None:
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    ctx = tmp_path / "ctx"
    (ctx / "app").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "app" / "greeting.txt").write_text("hello\n")
    (ctx / "app" / "other.txt").write_text("same\n")
    root = tmp_path / "root"

    first = _build(root, ctx, busybox_image, "1")
    assert "cache miss:" not in first

    (ctx / "app" / "greeting.txt").write_text("bonjour\n")
    second = _build(root, ctx, busybox_image, "1", "--explain-cache")
    misses = [ln for ln in second.splitlines() if "cache miss:" in ln]
    assert any(
        ln.endswith("cache miss: COPY source app/greeting.txt changed (content)") for ln in misses
    ), second
    assert any("cache miss: input step" in ln and "COPY app/ /app/" in ln for ln in misses), second
    assert all(ln.startswith("#") for ln in misses)

    third = _build(root, ctx, busybox_image, "2", "--explain-cache")
    misses = [ln for ln in third.splitlines() if "cache miss:" in ln]
    assert len(misses) == 1 and misses[0].endswith("cache miss: build arg VERSION changed"), third

    (ctx / "app" / "other.txt").write_text("changed\n")
    fourth = _build(root, ctx, busybox_image, "3")
    assert "cache miss" not in fourth
