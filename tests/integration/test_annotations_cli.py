"""``--annotation`` and ``annotation*.KEY=V`` output attributes through the CLI: manifest
annotations in the manifest the real registry serves (``skopeo inspect --raw``), and
manifest-descriptor annotations on an OCI layout's ``index.json`` entry (``type=oci``).
One platform makes no index, so index annotations are usage errors, as BuildKit's
single-platform export."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
from tests.support.cachebuild import Builder, skopeo_raw
from tests.support.cli import mason_build

from mason.oci.platform import host_platform

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (overlayfs, runc)")


def _context(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    return path


def test_manifest_annotations_reach_the_registry(build: Builder, reg: str, tmp_path: Path) -> None:
    ref = f"{reg}/app:1"
    plat = host_platform()
    build(
        _context(tmp_path / "ctx"),
        "--annotation",
        "org.example.plain=1",
        "--annotation",
        f"manifest[{plat}]:org.example.typed=2",
        "--annotation",
        "org.example.later=old",
        "--annotation",
        "org.example.later=new",  # the last of one key wins
        "-o",
        f"type=image,name={ref},push=true,annotation.org.example.attr=3",
    ).check()
    manifest, _ = skopeo_raw(ref)
    got = manifest.get("annotations")
    assert got == {
        "org.example.plain": "1",
        "org.example.typed": "2",
        "org.example.later": "new",
        "org.example.attr": "3",
    }, manifest


def test_manifest_descriptor_annotations_go_on_the_index_json_entry(
    build: Builder, tmp_path: Path
) -> None:
    oci = tmp_path / "image.tar"
    build(
        _context(tmp_path / "ctx"),
        "--annotation",
        "manifest-descriptor:org.example.desc=d",
        "--annotation",
        "org.example.inside=m",
        "-o",
        f"type=oci,dest={oci},annotation-manifest-descriptor.org.example.attr=a",
    ).check()
    with tarfile.open(oci) as tf:
        index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
        (entry,) = index["manifests"]
        blob = tf.extractfile("blobs/sha256/" + entry["digest"].split(":")[1])
        manifest = json.load(blob)  # type: ignore[arg-type]
    assert entry["annotations"]["org.example.desc"] == "d"
    assert entry["annotations"]["org.example.attr"] == "a"
    assert "org.example.inside" not in entry["annotations"]
    assert manifest["annotations"] == {"org.example.inside": "m"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--annotation", "index:org.example.i=1"), "index annotations not supported"),
        (("--annotation", "index-descriptor:k=v"), "index annotations not supported"),
        (("--annotation", "manifest[linux/s390x]:k=v"), "no platform linux/s390x"),
        (("--annotation", "nokeyvalue"), "expected key=value"),
    ],
)
def test_annotations_one_platform_cannot_take_are_usage_errors(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    if host_platform().architecture == "s390x":
        pytest.skip("the test names s390x as the platform not built")
    oci = tmp_path / "image.tar"
    proc = mason_build(
        tmp_path / "root", *args, "-o", f"type=oci,dest={oci}", str(_context(tmp_path / "ctx"))
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert not oci.exists(), "checked before the build: nothing written"
