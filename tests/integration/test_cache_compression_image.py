"""Issue 13, defect 4: a cache's compression never leaks into the image. A cold build that
exports a zstd (or eStargz) registry cache and a warm build on a fresh root that imports it
push the same gzip image, byte for byte, as BuildKit v0.32.2 does with the same flags."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from tests.support.cli import expect_ok, mason_build
from tests.support.registry_server import RegistryServer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (overlayfs, runc)")


def _manifest(ref: str) -> tuple[dict[str, object], bytes]:
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return json.loads(raw), raw


@pytest.mark.parametrize("compression", ["zstd", "estargz"])
def test_a_cache_compression_never_changes_the_image(
    busybox_image: str, registry: RegistryServer, tmp_path: Path, compression: str
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\nCOPY a.txt /a.txt\nRUN echo built > /b.txt\n"
    )
    (ctx / "a.txt").write_text("a\n")
    reg = registry.host
    cache = f"type=registry,ref={reg}/leak/{compression}-cache,mode=max,compression={compression}"
    expect_ok(
        mason_build(
            tmp_path / "cold",
            "--push",
            "-t",
            f"{reg}/leak/{compression}:cold",
            "--cache-to",
            cache,
            str(ctx),
        )
    )
    expect_ok(
        mason_build(
            tmp_path / "warm",
            "--push",
            "-t",
            f"{reg}/leak/{compression}:warm",
            "--cache-from",
            cache,
            str(ctx),
        )
    )
    cold, cold_raw = _manifest(f"{reg}/leak/{compression}:cold")
    _warm, warm_raw = _manifest(f"{reg}/leak/{compression}:warm")
    assert warm_raw == cold_raw
    assert {d["mediaType"] for d in cold["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    }  # type: ignore[attr-defined]
