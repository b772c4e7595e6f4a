"""Image push and registry cache export share where blobs live: whichever runs first, the
other mounts the layers it stored instead of uploading them again; and both follow one
compression rule (a base image's layers keep their compression unless force-compression)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.engine_parts import one_file_tar, stored_layer
from tests.unit.cache.cache_fakes import FakeRegistry

from mason.cache import export_cache
from mason.cache.model import SolvedRecord
from mason.cache.options import parse_cache_to
from mason.digest import Digest, sha256_bytes
from mason.engine.blobs import Blobs, RemoteLocation
from mason.engine.exporters import ImageResult, assemble_manifest, push_image
from mason.engine.remotecache import CacheBlobStore
from mason.engine.state import LayerRef, StateRoot
from mason.oci import mediatypes as mt
from mason.oci.platform import Platform
from mason.oci.reference import Reference

REG = "reg.example"


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateRoot]:
    with StateRoot.open(tmp_path / "root") as st:
        yield st


def _image(*layers: LayerRef) -> ImageResult:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [lr.diff_id for lr in layers]},
    }
    return ImageResult(tuple(layers), config, Platform("linux", "amd64"))


def _push(blobs: Blobs, registry: FakeRegistry, image: ImageResult, repo: str) -> None:
    exported = assemble_manifest(blobs, image)
    push_image(
        blobs, registry, exported, [Reference.parse(f"{REG}/{repo}:latest")], lambda _line: None
    )


def _export_cache(
    blobs: Blobs, registry: FakeRegistry, layers: tuple[LayerRef, ...], repo: str
) -> Any:
    from mason.engine import remotecache

    records = [
        SolvedRecord(
            key=sha256_bytes(b"step"),
            layers=tuple(remotecache._annotated(blobs, lr) for lr in layers),
            step="RUN x",
            created_at="2024-01-01T00:00:00Z",
        )
    ]
    store = CacheBlobStore(blobs)
    opts = parse_cache_to(f"type=registry,ref={REG}/{repo},mode=max")[0]
    result = export_cache(
        opts, records, blobs=store, image_diff_ids=[lr.diff_id for lr in layers], client=registry
    )
    assert opts.ref is not None
    store.note_stored(opts.ref, [*result.uploaded, *result.mounted, *result.existing])
    return result


def _uploads(registry: FakeRegistry, digest: str) -> list[str]:
    return [repo for op, repo, what in registry.calls if op == "push_blob" and what == digest]


def test_cache_export_mounts_layers_the_image_push_uploaded(state: StateRoot) -> None:
    blobs, registry = Blobs(state), FakeRegistry()
    lr = stored_layer(blobs, "a")
    _push(blobs, registry, _image(lr), "app")
    result = _export_cache(blobs, registry, (lr,), "app-cache")
    assert result.mounted == (lr.blob,) and lr.blob not in result.uploaded
    assert _uploads(registry, str(lr.blob)) == ["app"]


def test_image_push_mounts_layers_a_cache_export_stored_even_in_a_later_build(
    state: StateRoot,
) -> None:
    registry = FakeRegistry()
    first = Blobs(state)
    lr = stored_layer(first, "a")
    _export_cache(first, registry, (lr,), "app-cache")
    later = Blobs(state)  # another build on the same root: the location was kept
    assert later.mount_hints(Digest(str(lr.blob))) == {
        f"containerd.io/distribution.source.{REG}": "app-cache"
    }
    _push(later, registry, _image(lr), "app")
    assert _uploads(registry, str(lr.blob)) == ["app-cache"]
    assert lr.blob in registry.blobs["app"]
    assert not later.pulled(Digest(str(lr.blob))), (
        "a layer mason made and pushed does not count as pulled"
    )


def test_a_stale_location_falls_back_to_an_upload(state: StateRoot) -> None:
    blobs, registry = Blobs(state), FakeRegistry()
    lr = stored_layer(blobs, "a")
    assert lr.blob is not None
    blobs.note_stored(lr.blob, Reference.parse(f"{REG}/gone"), lr.media_type, lr.blob_size)
    _push(blobs, registry, _image(lr), "app")
    assert [c[0] for c in registry.calls if c[2] == lr.blob] == [
        "head_blob",
        "mount_post",
        "push_blob",
    ]


def test_pulled_layers_keep_their_compression_unless_forced(state: StateRoot) -> None:
    """One rule for image outputs and caches: a pulled gzip base layer stays gzip in a zstd
    image (and cache) unless force-compression; the layers mason made are converted."""
    blobs = Blobs(state)
    made = stored_layer(blobs, "made")
    base_tar = one_file_tar("base")
    import gzip

    base_blob = gzip.compress(base_tar, mtime=0)
    base = LayerRef(
        sha256_bytes(base_tar), sha256_bytes(base_blob), len(base_blob), mt.OCI_LAYER_GZIP
    )
    state.store.put_bytes(base_blob)
    assert base.blob is not None
    blobs.add_remote(
        base.blob,
        base.diff_id,
        RemoteLocation(Reference.parse(f"{REG}/base"), base.media_type, base.blob_size, image=True),
    )
    image = _image(base, made)
    kept = assemble_manifest(blobs, image, compression="zstd")
    assert [d.media_type for d in kept.manifest.layers] == [mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD]
    assert kept.manifest.layers[0].digest == base.blob
    forced = assemble_manifest(blobs, image, compression="zstd", force=True)
    assert [d.media_type for d in forced.manifest.layers] == [mt.OCI_LAYER_ZSTD, mt.OCI_LAYER_ZSTD]
    store = CacheBlobStore(blobs)
    for force, media_types in ((False, kept), (True, forced)):
        descs = [
            store.cache_blob(blobs.descriptor(lr, oci=True, annotate=True), "zstd", None, force)
            for lr in (base, made)
        ]
        assert [d.digest for d in descs] == [d.digest for d in media_types.manifest.layers]


def test_a_push_the_registry_already_holds_sends_nothing(state: StateRoot) -> None:
    """As containerd's pusher: when every layer is known in a registry and every name already
    holds the manifest, one HEAD per name is all; when a name holds something else, or a
    layer is new, the image is pushed."""
    blobs, registry = Blobs(state), FakeRegistry()
    lr = stored_layer(blobs, "a")
    _push(blobs, registry, _image(lr), "app")  # a new layer: no HEAD of the manifest first
    assert [c[0] for c in registry.calls].count("head_manifest") == 0
    registry.calls.clear()
    _push(blobs, registry, _image(lr), "app")
    assert [c[0] for c in registry.calls] == ["head_manifest"]

    other = stored_layer(blobs, "b")
    _push(blobs, registry, _image(other), "app")  # the tag now names another image
    registry.calls.clear()
    _push(blobs, registry, _image(lr), "app")
    ops = [c[0] for c in registry.calls]
    assert ops[0] == "head_manifest" and "put_manifest" in ops
    held = registry.head_manifest(Reference.parse(f"{REG}/app:latest"))
    assert held is not None and held.digest == assemble_manifest(blobs, _image(lr)).digest
