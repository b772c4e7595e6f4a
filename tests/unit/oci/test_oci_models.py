from __future__ import annotations

import json
import pathlib

import pytest
from tests.support.testdata import TESTDATA

from mason.digest import sha256_bytes
from mason.oci import mediatypes as mt
from mason.oci.config import HistoryEntry, build_image_config, parse_image_config
from mason.oci.descriptor import Descriptor
from mason.oci.errors import ConfigError, ManifestError
from mason.oci.manifest import (
    ImageIndex,
    ImageManifest,
    build_index,
    build_manifest,
    parse_manifest,
)
from mason.oci.platform import Platform, host_platform

DOCS = TESTDATA / "registry-documents"
COMPRESSION = TESTDATA / "compression"


def _desc(data: bytes, media_type: str, **kw: object) -> Descriptor:
    return Descriptor(media_type, sha256_bytes(data), len(data), **kw)  # type: ignore[arg-type]


def test_media_type_helpers() -> None:
    assert mt.layer_media_type("gzip", True) == mt.OCI_LAYER_GZIP
    assert mt.layer_media_type("estargz", False) == mt.DOCKER_LAYER_GZIP
    assert mt.layer_media_type("zstd", False) == mt.DOCKER_LAYER_ZSTD
    assert mt.layer_media_type("uncompressed", True) == mt.OCI_LAYER
    for m in (mt.OCI_LAYER_GZIP, mt.DOCKER_LAYER_GZIP, mt.DOCKER_FOREIGN_LAYER_GZIP):
        assert mt.compression_of(m) == "gzip"
    assert mt.compression_of(mt.OCI_LAYER_ZSTD) == "zstd"
    assert mt.compression_of(mt.DOCKER_LAYER) == "uncompressed"
    assert mt.compression_of("application/vnd.example.thing+zstd") == "zstd"
    with pytest.raises(ValueError):
        mt.compression_of(mt.OCI_CONFIG)
    with pytest.raises(ValueError):
        mt.layer_media_type("brotli", True)
    assert set(mt.MANIFEST_MEDIA_TYPES) >= {
        mt.OCI_MANIFEST,
        mt.OCI_INDEX,
        mt.DOCKER_MANIFEST,
        mt.DOCKER_MANIFEST_LIST,
    }


def test_platform_parse_and_json() -> None:
    p = Platform.parse("linux/arm/v7")
    assert (p.os, p.architecture, p.variant) == ("linux", "arm", "v7")
    assert str(p) == "linux/arm/v7"
    assert Platform.parse("linux/arm64/v8") == Platform("linux", "arm64")
    assert Platform.parse("linux/x86_64") == Platform("linux", "amd64")
    assert Platform.from_json(p.to_json()) == p
    full = Platform("windows", "amd64", None, "10.0.1", ("win32k",))
    assert full.to_json() == {
        "architecture": "amd64",
        "os": "windows",
        "os.version": "10.0.1",
        "os.features": ["win32k"],
    }
    assert Platform.from_json(full.to_json()) == full
    assert host_platform().os == "linux"
    for bad in ("linux", "linux//", "a/b/c/d"):
        with pytest.raises(Exception, match="invalid platform"):
            Platform.parse(bad)


def test_descriptor_round_trip_and_validation() -> None:
    d = _desc(
        b"x",
        mt.OCI_LAYER_GZIP,
        annotations={"b": "2", "a": "1"},
        platform=Platform("linux", "amd64"),
    )
    j = d.to_json()
    assert list(j) == ["mediaType", "digest", "size", "annotations", "platform"]
    assert list(j["annotations"]) == ["a", "b"]
    assert Descriptor.from_json(j) == d
    with pytest.raises(ManifestError, match="size"):
        Descriptor.from_json({"mediaType": "x", "digest": d.digest, "size": -1})
    with pytest.raises(ManifestError, match="digest"):
        Descriptor.from_json({"mediaType": "x", "digest": "md5:00", "size": 1})
    with pytest.raises(ManifestError, match="annotations"):
        Descriptor.from_json(
            {"mediaType": "x", "digest": d.digest, "size": 1, "annotations": {"a": 1}}
        )
    assert hash(d) == hash(_desc(b"x", mt.OCI_LAYER_GZIP))


@pytest.mark.parametrize("media_type", [mt.OCI_MANIFEST, mt.DOCKER_MANIFEST])
def test_build_manifest_is_deterministic_and_round_trips(media_type: str) -> None:
    config = _desc(b"{}", mt.OCI_CONFIG)
    layers = [
        _desc(
            b"l1", mt.OCI_LAYER_GZIP, annotations={"containerd.io/uncompressed": sha256_bytes(b"t")}
        )
    ]
    a = build_manifest(config, layers, media_type, {"z": "1", "a": "2"})
    b = build_manifest(config, layers, media_type, {"a": "2", "z": "1"})
    assert a.raw == b.raw
    assert a.digest == sha256_bytes(a.raw)
    parsed = parse_manifest(a.raw)
    assert isinstance(parsed, ImageManifest)
    assert parsed == a
    assert parsed.raw is a.raw or parsed.raw == a.raw
    assert parsed.descriptor().size == len(a.raw)
    assert json.loads(a.raw)["mediaType"] == media_type


@pytest.mark.parametrize("media_type", [mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST])
def test_build_index_round_trips(media_type: str) -> None:
    m = _desc(b"m", mt.OCI_MANIFEST, platform=Platform("linux", "arm64"))
    n = _desc(b"n", mt.OCI_MANIFEST, platform=Platform("linux", "amd64"))
    idx = build_index([m, n], media_type)
    parsed = parse_manifest(idx.raw)
    assert isinstance(parsed, ImageIndex)
    assert parsed.manifests == (m, n)
    assert parsed.media_type == media_type
    assert parsed.for_platform(Platform("linux", "amd64")) == n
    assert parsed.for_platform(Platform("linux", "s390x")) is None


def test_parse_keeps_raw_bytes_of_foreign_documents() -> None:
    # Whitespace and key order of a document from elsewhere must survive: digests are of raw bytes.
    raw = (
        b'{\n  "schemaVersion": 2,\n  "layers": [],\n  "config": {"size": 2, "digest": "%s", "mediaType": "%s"}\n}'
        % (
            sha256_bytes(b"{}").encode(),
            mt.OCI_CONFIG.encode(),
        )
    )
    parsed = parse_manifest(raw)
    assert parsed.raw == raw
    assert parsed.digest == sha256_bytes(raw)
    assert parsed.media_type == mt.OCI_MANIFEST  # inferred: no mediaType field


@pytest.mark.parametrize(
    "path",
    sorted(p for p in DOCS.glob("*.json") if "manifest" in p.name or "index" in p.name),
    ids=lambda p: p.name,
)
def test_parses_real_registry_documents(path: pathlib.Path) -> None:
    raw = path.read_bytes()
    parsed = parse_manifest(raw)
    assert parsed.raw == raw
    doc = json.loads(raw)
    if isinstance(parsed, ImageIndex):
        assert len(parsed.manifests) == len(doc["manifests"])
    else:
        assert len(parsed.layers) == len(doc["layers"])
        assert parsed.config.digest == doc["config"]["digest"]


def test_parses_buildkit_local_index_json_without_media_type() -> None:
    raw = (COMPRESSION / "estargz" / "index.json").read_bytes()
    idx = parse_manifest(raw)
    assert isinstance(idx, ImageIndex)
    assert idx.manifests[0].ref_name == "latest"


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"schemaVersion": 1, "fsLayers": []}', "schema 1"),
        (b'{"schemaVersion": 2, "mediaType": "application/x-nope"}', "unknown manifest media type"),
        (b'{"schemaVersion": 3, "manifests": []}', "schemaVersion"),
        (
            b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": []}',
            "no config",
        ),
        (
            b'{"schemaVersion": 2, "manifests": [{"digest": "sha256:00", "size": 1}]}',
            r"manifests\[0\]",
        ),
        (b'{"schemaVersion": 2}', "neither a manifest nor an index"),
    ],
)
def test_parse_rejects_bad_documents(raw: bytes, match: str) -> None:
    with pytest.raises(ManifestError, match=match):
        parse_manifest(raw)


def test_content_type_header_used_when_media_type_missing() -> None:
    raw = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    assert parse_manifest(raw, mt.DOCKER_MANIFEST_LIST).media_type == mt.DOCKER_MANIFEST_LIST


def test_image_config_accessors_on_real_config() -> None:
    raw = (DOCS / "buildkit-v0.11.6-image-config.json").read_bytes()
    cfg = parse_image_config(raw)
    doc = json.loads(raw)
    assert cfg.raw == raw
    assert cfg.architecture == doc["architecture"]
    assert cfg.os == doc["os"]
    assert list(cfg.diff_ids) == doc["rootfs"]["diff_ids"]
    assert len(cfg.history) == len(doc.get("history", []))
    assert cfg.env == tuple(doc["config"].get("Env") or ())


def test_build_image_config_is_deterministic() -> None:
    diff = sha256_bytes(b"layer")
    kwargs = {
        "platform": Platform("linux", "arm", "v7"),
        "diff_ids": [diff],
        "history": [
            HistoryEntry(created_by="RUN x"),
            HistoryEntry(created_by="ENV a=b", empty_layer=True),
        ],
        "config": {
            "Env": ["A=1", "B=x=y"],
            "Cmd": ["sh"],
            "WorkingDir": "/w",
            "User": "1:2",
            "Labels": {"k": "v"},
        },
        "created": "1970-01-01T00:00:00Z",
    }
    a = build_image_config(**kwargs)  # type: ignore[arg-type]
    b = build_image_config(**kwargs)  # type: ignore[arg-type]
    assert a.raw == b.raw
    assert a.platform == Platform("linux", "arm", "v7")
    assert a.env_dict == {"A": "1", "B": "x=y"}
    assert a.cmd == ("sh",)
    assert a.working_dir == "/w"
    assert a.user == "1:2"
    assert a.labels == {"k": "v"}
    assert a.diff_ids == (diff,)
    assert a.history[1].empty_layer
    derived = build_image_config(a.to_dict(), diff_ids=[diff, diff])
    assert derived.diff_ids == (diff, diff)
    assert a.diff_ids == (diff,)  # the original is untouched


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"{", "not valid JSON"),
        (b'{"architecture": 5}', "architecture"),
        (b'{"rootfs": {"diff_ids": ["nope"]}}', r"diff_ids\[0\]"),
        (b'{"config": []}', "config must be an object"),
    ],
)
def test_bad_configs(raw: bytes, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_image_config(raw)
