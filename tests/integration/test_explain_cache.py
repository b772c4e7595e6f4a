"""mason build --explain-cache against the real registry and runc: the miss lines name the
changed context file and the changed build arg; without the flag there are none."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
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


def test_a_fresh_root_explains_against_the_registry_cache(
    tmp_path: Path, busybox_image: str
) -> None:
    """CI's case: every build on a new machine, with a registry cache. The cache carries each
    step's readable inputs (``mason.explain``), so the miss names the file and the arg; the
    build arg's value is never in the cache."""
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    registry = busybox_image.split("/", 1)[0]
    cache = f"{registry}/explain-fresh/cache"
    to_from = (
        "--cache-to",
        f"type=registry,ref={cache},mode=max",
        "--cache-from",
        f"type=registry,ref={cache}",
    )
    ctx = tmp_path / "ctx"
    (ctx / "app").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "app" / "greeting.txt").write_text("hello\n")
    (ctx / "app" / "other.txt").write_text("same\n")

    _build(tmp_path / "root-1", ctx, busybox_image, "s3cr3t-v1", *to_from)
    proc = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{cache}:latest"],
        capture_output=True,
        check=True,
    )
    config_digest = json.loads(proc.stdout)["config"]["digest"]
    with urllib.request.urlopen(
        f"http://{registry}/v2/explain-fresh/cache/blobs/{config_digest}", timeout=30
    ) as resp:
        config = resp.read()
    assert b"mason.explain" in config and b"app/greeting.txt" in config
    assert b"s3cr3t-v1" not in config

    (ctx / "app" / "greeting.txt").write_text("bonjour\n")
    second = _build(
        tmp_path / "root-2", ctx, busybox_image, "s3cr3t-v1", "--explain-cache", *to_from
    )
    misses = [ln for ln in second.splitlines() if "cache miss:" in ln]
    assert any(
        ln.endswith("cache miss: COPY source app/greeting.txt changed (content)") for ln in misses
    ), second

    third = _build(
        tmp_path / "root-3", ctx, busybox_image, "s3cr3t-v2", "--explain-cache", *to_from
    )
    misses = [ln for ln in third.splitlines() if "cache miss:" in ln]
    assert len(misses) == 1 and misses[0].endswith("cache miss: build arg VERSION changed"), third
    assert "s3cr3t" not in third
