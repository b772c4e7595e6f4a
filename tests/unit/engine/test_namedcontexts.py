"""``--build-context`` and ``--no-cache-filter`` parsing (mason.engine.namedcontexts)."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from mason.engine.context import DockerIgnore
from mason.engine.namedcontexts import (
    NamedContext,
    context_name,
    layout_blob_opener,
    layout_image,
    lookup,
    overrides,
    parse_build_context,
    parse_no_cache_filter,
    parse_oci_layout_path,
)
from mason.errors import BuildError, UsageError
from mason.oci.platform import Platform


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("alpine", "alpine"),
        ("alpine:latest", "alpine"),
        ("docker.io/library/alpine:latest", "alpine"),
        ("alpine:3.18", "alpine:3.18"),
        ("docker.io/me/app", "me/app"),
        ("localhost:5000/x:1", "localhost:5000/x:1"),
        ("build", "build"),
    ],
)
def test_names_are_compared_as_familiar_references(name: str, key: str) -> None:
    assert context_name(name) == key


def test_docker_image_value() -> None:
    c = parse_build_context("docker.io/library/alpine:3.18=docker-image://reg:5000/bb:1")
    assert c == NamedContext("alpine:3.18", "image", "reg:5000/bb:1")
    d = NamedContext("x", "dir", "/tmp")
    assert overrides([c, d]) == {"alpine:3.18": c, "x": d}


def test_the_last_of_one_name_wins() -> None:
    cs = [parse_build_context("a=docker-image://one"), parse_build_context("a=docker-image://two")]
    assert overrides(cs) == {"a": cs[1]}


def test_lookup_normalises_the_name_and_ignores_non_references() -> None:
    bb = NamedContext("alpine", "image", "reg/bb")
    over = {"alpine": bb}
    assert lookup(over, "alpine:latest") == bb
    assert lookup(over, "docker.io/library/alpine") == bb
    assert lookup(over, "alpine:3") is None
    assert lookup(over, "0") is None
    assert lookup(over, "Not A Ref") is None
    assert lookup({}, "alpine") is None


def test_directory_value_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "d").mkdir()
    monkeypatch.chdir(tmp_path)
    assert parse_build_context("src=d") == NamedContext("src", "dir", str(tmp_path / "d"))


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("/l", ("/l", "", "latest")),
        ("/l:v1", ("/l", "", "v1")),
        ("/l@sha256:" + "a" * 64, ("/l", "sha256:" + "a" * 64, "latest")),
        ("/l:v1@sha256:" + "a" * 64, ("/l", "sha256:" + "a" * 64, "v1")),
        ("/a@b/l", ("/a@b/l", "", "latest")),  # an @ that is no digest is part of the path
        ("/a:b/l", ("/a:b/l", "", "latest")),  # a : whose tail is no tag is part of the path
    ],
)
def test_oci_layout_path_as_buildx_parses_it(text: str, parsed: tuple[str, str, str]) -> None:
    assert parse_oci_layout_path(text) == parsed


def _blob(layout: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    return digest


def _image(layout: Path, arch: str) -> dict[str, object]:
    """A one-layer image for linux/ARCH; its manifest descriptor."""
    layer = gzip.compress(b"layer of " + arch.encode())
    diff_id = "sha256:" + hashlib.sha256(b"layer of " + arch.encode()).hexdigest()
    config = json.dumps(
        {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    ).encode()
    layer_desc = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": _blob(layout, layer),
        "size": len(layer),
    }
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _blob(layout, config),
                "size": len(config),
            },
            "layers": [layer_desc],
        }
    ).encode()
    return {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": _blob(layout, manifest),
        "size": len(manifest),
        "platform": {"architecture": arch, "os": "linux"},
    }


def _layout(tmp_path: Path, entries: list[dict[str, object]]) -> Path:
    layout = tmp_path / "layout"
    layout.mkdir(exist_ok=True)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    return layout


def test_oci_layout_tag_resolves_by_image_name_then_ref_name_then_the_only_entry(
    tmp_path: Path,
) -> None:
    layout = tmp_path / "layout"
    layout.mkdir()
    amd, arm = _image(layout, "amd64"), _image(layout, "arm64")
    _layout(
        tmp_path,
        [
            dict(amd, annotations={"org.opencontainers.image.ref.name": "v1"}),
            dict(arm, annotations={"io.containerd.image.name": "v1"}),
        ],
    )
    # io.containerd.image.name is looked at first (BuildKit's ociindex.Get)
    assert parse_build_context(f"b=oci-layout://{layout}:v1").digest == arm["digest"]
    with pytest.raises(UsageError, match="could not be resolved") as info:
        parse_build_context(f"b=oci-layout://{layout}")  # latest: not there, two entries
    assert info.value.exit_code == 2 and "v1" in (info.value.hint or "")
    _layout(tmp_path, [amd])
    assert parse_build_context(f"b=oci-layout://{layout}:nope").digest == amd["digest"]
    given = "sha256:" + "b" * 64  # a digest is taken as given, as buildx does
    assert parse_build_context(f"b=oci-layout://{layout}@{given}").digest == given


def test_oci_layout_image_for_the_build_platform(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    layout.mkdir()
    entries = [_image(layout, "amd64"), _image(layout, "arm64")]
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }
    ).encode()
    idx = _blob(layout, index)
    nc = NamedContext("base", "oci-layout", str(layout), idx)
    img = layout_image(nc, Platform.parse("linux/arm64"))
    assert img.manifest_digest == entries[1]["digest"]
    assert img.config["architecture"] == "arm64"
    ((desc, diff_id),) = img.layers
    with layout_blob_opener(layout, desc.digest, desc.size)() as f:
        assert hashlib.sha256(gzip.decompress(f.read())).hexdigest() == diff_id[7:]
    with pytest.raises(BuildError, match="no image for platform linux/s390x"):
        layout_image(nc, Platform.parse("linux/s390x"))


def test_oci_layout_blobs_stay_inside_the_layout(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    layout.mkdir()
    entry = _image(layout, "amd64")
    target = layout / "blobs" / "sha256" / str(entry["digest"])[7:]
    outside = tmp_path / "outside-manifest"
    outside.write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(outside)  # an absolute link: resolved inside the layout, so missing
    nc = NamedContext("base", "oci-layout", str(layout), str(entry["digest"]))
    with pytest.raises(BuildError, match="oci-layout context base"):
        layout_image(nc, Platform.parse("linux/amd64"))
    target.unlink()
    target.write_bytes(b"{}")  # bytes that are not the digest's
    with pytest.raises(BuildError, match="does not match its digest"):
        layout_image(nc, Platform.parse("linux/amd64"))


def test_named_directory_reads_only_its_own_dockerignore(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("a\n")
    (tmp_path / "Dockerfile.dockerignore").write_text("b\n")
    ignore = DockerIgnore.load_named(tmp_path)
    assert ignore.ignored("a") and not ignore.ignored("b")
    (tmp_path / ".dockerignore").unlink()
    (tmp_path / ".dockerignore").symlink_to("Dockerfile.dockerignore")
    assert DockerIgnore.load_named(tmp_path).ignored("b")  # a link inside the root is followed
    (tmp_path / ".dockerignore").unlink()
    (tmp_path / ".dockerignore").symlink_to("/etc/hostname")  # resolved inside: no file
    assert DockerIgnore.load_named(tmp_path).empty


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("noequals", "expected NAME=VALUE"),
        ("=docker-image://x", "expected NAME=VALUE"),
        ("a=", "expected NAME=VALUE"),
        ("Bad=docker-image://x", "invalid --build-context name 'Bad'"),
        ("a=docker-image://x y", "invalid --build-context"),
        ("a=s3://bucket/x", "unsupported scheme 's3'"),
        ("a=target:base", "buildx bake only"),
        ("a=/no/such/dir", "is not a directory"),
        ("a=oci-layout:///no/such/dir:v1", "OCI layout /no/such/dir is not a directory"),
        ("a=oci-layout://", "is not a directory"),
    ],
)
def test_bad_values_are_usage_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        parse_build_context(text)
    assert info.value.exit_code == 2


def test_no_cache_filter_values() -> None:
    assert parse_no_cache_filter(["a", "B,c", " d , ,e"]) == ("a", "b", "c", "d", "e")
    assert parse_no_cache_filter([]) == ()
