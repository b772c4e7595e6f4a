"""``SOURCE_DATE_EPOCH`` and ``rewrite-timestamp=true`` through the CLI, as BuildKit v0.32.2's
image exporter: the epoch dates the image and its history; only ``rewrite-timestamp=true``
clamps file times in the layers the build made (later times become the epoch, earlier ones
stay); the base image's layers are shipped as they are; without an epoch the attribute
changes nothing and says so."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest
from tests.support.cli import mason_build

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (overlayfs, runc)")

EPOCH = 1_700_000_000
OLD = 1_600_000_000  # a context file older than the epoch: clamping keeps its time


def _image(tar: Path) -> tuple[dict[str, object], dict[str, object], list[dict[str, int]]]:
    """The manifest, config and, per layer, name -> mtime of an OCI tarball."""
    with tarfile.open(tar) as tf:
        files = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}  # type: ignore[union-attr]
    index = json.loads(files["index.json"])
    manifest = json.loads(files["blobs/sha256/" + index["manifests"][0]["digest"][7:]])
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"][7:]])
    layers = []
    for desc in manifest["layers"]:
        data = gzip.decompress(files["blobs/sha256/" + desc["digest"][7:]])
        with tarfile.open(fileobj=io.BytesIO(data)) as lt:
            layers.append({m.name.strip("./"): int(m.mtime) for m in lt.getmembers()})
    return manifest, config, layers


def _build(
    tmp_path: Path, base: str, name: str, *args: str, rewrite: bool = False
) -> tuple[Path, str]:
    """Build the context (a COPY of two files, one older than the epoch, and a RUN) to an
    OCI tarball on an empty root; the tarball and the progress."""
    ctx = tmp_path / "ctx"
    if not ctx.exists():
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(
            f"FROM {base}\nCOPY old.txt new.txt /\nRUN echo made > /made\n"
        )
        (ctx / "old.txt").write_text("old\n")
        (ctx / "new.txt").write_text("new\n")
        os.utime(ctx / "old.txt", (OLD, OLD))
    out = tmp_path / f"{name}.tar"
    spec = f"type=oci,dest={out}" + (",rewrite-timestamp=true" if rewrite else "")
    proc = mason_build(tmp_path / f"root-{name}", *args, "-o", spec, str(ctx))
    assert proc.returncode == 0, proc.stderr
    return out, proc.stderr


def test_rewrite_timestamp_clamps_only_the_builds_own_layers(
    busybox_image: str, tmp_path: Path
) -> None:
    sde = ("--build-arg", f"SOURCE_DATE_EPOCH={EPOCH}")
    digests = []
    for name in ("rt1", "rt2"):
        out, log = _build(tmp_path, busybox_image, name, *sde, rewrite=True)
        manifest, config, layers = _image(out)
        digests.append(json.dumps(manifest, sort_keys=True))
        assert "rewriting layers with source-date-epoch" in log
        _, copied, ran = layers
        assert copied == {"old.txt": OLD, "new.txt": EPOCH}, copied  # clamped, never raised
        assert ran["made"] == EPOCH
        assert config["created"] == "2023-11-14T22:13:20Z"
        time.sleep(1.1)
    assert digests[0] == digests[1], "two builds at different times: one image"
    # the base image's layer is shipped as it came, not rewritten
    plain, _ = _build(tmp_path, busybox_image, "plain")
    assert json.loads(digests[0])["layers"][0] == _image(plain)[0]["layers"][0]  # type: ignore[index]


def test_epoch_without_rewrite_timestamp_dates_the_image_not_the_files(
    busybox_image: str, tmp_path: Path
) -> None:
    before = int(time.time())
    out, log = _build(tmp_path, busybox_image, "sde", "--build-arg", f"SOURCE_DATE_EPOCH={EPOCH}")
    _, config, (_, copied, ran) = _image(out)
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert {h["created"] for h in config["history"][-2:]} == {"2023-11-14T22:13:20Z"}  # type: ignore[index]
    assert ran["made"] >= before and copied["new.txt"] > EPOCH, (ran, copied)
    assert "rewriting layers" not in log


def test_rewrite_timestamp_without_an_epoch_changes_nothing_and_says_so(
    busybox_image: str, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo made > /made\n")
    out = tmp_path / "o.tar"
    proc = mason_build(
        tmp_path / "root", "-o", f"type=oci,dest={out},rewrite-timestamp=true", str(ctx)
    )
    assert proc.returncode == 0, proc.stderr
    assert "rewrite-timestamp is specified, but no source-date-epoch was found" in proc.stderr
    assert _image(out)[2][1]["made"] > EPOCH


def test_local_and_tar_outputs_date_every_file_the_epoch(
    busybox_image: str, tmp_path: Path
) -> None:
    # BuildKit's local and tar exporters set each entry's time to SOURCE_DATE_EPOCH
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN mkdir /d && echo x > /d/made\n")
    local, tar = tmp_path / "local", tmp_path / "fs.tar"
    local.mkdir()
    (local / "mine.txt").write_text("the user's own file\n")
    os.utime(local / "mine.txt", (OLD, OLD))
    proc = mason_build(
        tmp_path / "root",
        "--build-arg",
        f"SOURCE_DATE_EPOCH={EPOCH}",
        "-o",
        f"type=local,dest={local}",
        "-o",
        f"type=tar,dest={tar}",
        str(ctx),
    )
    assert proc.returncode == 0, proc.stderr
    for rel in ("d", "d/made", "bin/busybox", "bin/sh"):
        assert os.lstat(local / rel).st_mtime == EPOCH, rel
    assert os.lstat(local / "mine.txt").st_mtime == OLD, "what the image did not write is kept"
    with tarfile.open(tar) as tf:
        times = {m.name.strip("./"): int(m.mtime) for m in tf.getmembers()}
    assert times["d/made"] == EPOCH and times["bin/busybox"] == EPOCH
    assert set(times.values()) == {EPOCH}, {k: v for k, v in times.items() if v != EPOCH}
