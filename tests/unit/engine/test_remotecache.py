"""The builder's adapters to mason.cache: imported hits as remote blobs (lazily, with their
annotations), their verification on download (once), and which compression an exported
layer gets without force-compression."""

from __future__ import annotations

import contextlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO

import pytest

import mason.compression.estargz as estargz_module
from mason.cache.format import CacheConfig, CacheLayer, CacheRecord, CacheResult
from mason.cache.model import CacheSource, SolvedRecord, plan_export
from mason.compression import EStargzError
from mason.compression.estargz import write_estargz
from mason.digest import Digest, sha256_bytes
from mason.engine.blobs import Blobs, RemoteLocation
from mason.engine.remotecache import CacheBlobStore, HitLookup
from mason.engine.state import LayerRef, StateRoot
from mason.oci import mediatypes as mt
from mason.oci.descriptor import ANNOTATION_UNCOMPRESSED, Descriptor

TOC = "containerd.io/snapshot/stargz/toc.digest"
USIZE = "io.containers.estargz.uncompressed-size"
KEY = Digest("sha256:" + "ab" * 32)


def _tar(text: bytes = b"hello\n") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("etc/hello.txt")
        ti.size = len(text)
        tf.addfile(ti, io.BytesIO(text))
    return buf.getvalue()


def _estargz() -> tuple[bytes, dict[str, str]]:
    out = io.BytesIO()
    res = write_estargz(io.BytesIO(_tar()), out, 0)
    return out.getvalue(), res.annotations()


class _Provider:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.opened = 0

    @contextlib.contextmanager
    def open_blob(self, desc: Descriptor) -> Iterator[BinaryIO]:
        self.opened += 1
        yield io.BytesIO(self.data)

    def peek_blob(self, desc: Descriptor, n: int) -> bytes | None:
        return self.data[:n]  # a ranged read, not a download (``opened`` counts those)


def _source(data: bytes, annotations: dict[str, str]) -> tuple[CacheSource, _Provider]:
    """An imported cache with one record whose result is one eStargz layer."""
    digest = sha256_bytes(data)
    config = CacheConfig(
        (CacheLayer(digest),), (CacheRecord(KEY, (CacheResult(0, "2024-01-01T00:00:00Z"),)),)
    )
    provider = _Provider(data)
    desc = Descriptor(mt.OCI_LAYER_GZIP, digest, len(data), annotations)
    source = CacheSource(
        "registry cache.example/c",
        config,
        {digest: desc},
        provider,
        manifest=Descriptor(mt.OCI_MANIFEST, Digest("sha256:" + "cd" * 32), 1),
    )
    return source, provider


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateRoot]:
    with StateRoot.open(tmp_path / "root") as st:
        yield st


def _hit_layer(blobs: Blobs, source: CacheSource) -> LayerRef:
    result = HitLookup(source, blobs).lookup(SimpleNamespace(digest=KEY, lookup_digests=(KEY,)))  # type: ignore[arg-type]
    assert result is not None
    [layer] = result.layers
    return layer


def test_estargz_hit_keeps_its_annotations_without_a_download(state: StateRoot) -> None:
    """An eStargz cache hit counts as eStargz before any download, and an export to another
    cache (no prior import of that ref) keeps its TOC annotations."""
    data, ann = _estargz()
    source, provider = _source(data, ann)
    blobs = Blobs(state)
    layer = _hit_layer(blobs, source)
    assert blobs.compression_of(layer) == "estargz"
    desc = blobs.descriptor(layer, oci=True, annotate=True)
    record = SolvedRecord(KEY, layers=(desc,), created_at="2024-01-01T00:00:00Z")
    plan = plan_export(
        [record],
        mode="max",
        image_diff_ids=None,
        blobs=CacheBlobStore(blobs),
        compression="estargz",
        prior=None,
    )
    [exported] = plan.layers
    assert exported.digest == layer.blob
    assert {k: exported.annotations[k] for k in (TOC, USIZE, ANNOTATION_UNCOMPRESSED)} == ann
    assert provider.opened == 0 and blobs.downloaded == []


def test_estargz_hit_is_verified_once_on_download(
    state: StateRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, ann = _estargz()
    source, provider = _source(data, ann)
    calls: list[dict[str, Any]] = []
    real = estargz_module.verify_estargz

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(*args, **kwargs)

    # Blobs imports the eStargz reader when it checks a blob: patch it where it lives
    monkeypatch.setattr(estargz_module, "verify_estargz", counting)
    blobs = Blobs(state)
    layer = _hit_layer(blobs, source)
    with blobs.open_uncompressed(layer) as stream:
        assert sha256_bytes(stream.read()) == layer.diff_id
    assert provider.opened == 1 and blobs.downloaded == [layer.blob]
    # one full check, against the claims of the cache's descriptor
    assert len(calls) == 1 and calls[0]["expected_toc_digest"] == ann[TOC]


def test_estargz_hit_with_a_wrong_toc_annotation_is_rejected(state: StateRoot) -> None:
    data, ann = _estargz()
    source, _ = _source(data, {**ann, TOC: "sha256:" + "0" * 64})
    blobs = Blobs(state)
    layer = _hit_layer(blobs, source)
    with pytest.raises(EStargzError, match="TOC digest mismatch"):
        blobs.ensure_local(layer)
    assert layer.blob is not None and not state.store.has(layer.blob)


def test_hit_names_every_repository_of_its_distribution_source(state: StateRoot) -> None:
    data, ann = _estargz()
    source, _ = _source(
        data, {**ann, "containerd.io/distribution.source.reg.example": "a/cache,b/other"}
    )
    blobs = Blobs(state)
    layer = _hit_layer(blobs, source)
    assert layer.blob is not None
    refs = [
        f"{loc.ref.registry}/{loc.ref.repository}"
        for loc in blobs.remote_locations(layer.blob)
        if loc.ref
    ]
    assert refs == ["reg.example/a/cache", "reg.example/b/other"]


def _remote_gzip_layer(blobs: Blobs, text: bytes) -> LayerRef:
    """A layer known from a registry (a base image's), as the resolver registers it."""
    import gzip

    tar = _tar(text)
    data = gzip.compress(tar, mtime=0)
    digest = sha256_bytes(data)

    @contextlib.contextmanager
    def opener() -> Iterator[BinaryIO]:
        yield io.BytesIO(data)

    blobs.add_remote(
        digest,
        sha256_bytes(tar),
        RemoteLocation(None, mt.OCI_LAYER_GZIP, len(data), opener, image=True),
    )
    return LayerRef(sha256_bytes(tar), digest, len(data), mt.OCI_LAYER_GZIP)


def _cache_desc(blobs: Blobs, layer: LayerRef) -> Descriptor:
    return blobs.descriptor(layer, oci=True, annotate=True)


def test_without_force_a_pulled_base_layer_keeps_its_compression(state: StateRoot) -> None:
    """A base image's gzip layer, downloaded because a RUN needed it, stays gzip in an eStargz
    cache; force-compression converts it."""
    blobs = Blobs(state)
    base = _remote_gzip_layer(blobs, b"base\n")
    blobs.ensure_local(base)
    store = CacheBlobStore(blobs)
    assert store.cache_blob(_cache_desc(blobs, base), "estargz", None, False).digest == base.blob
    # the next build knows it was pulled even before the resolver registers the base again
    again = CacheBlobStore(Blobs(state))
    assert again.cache_blob(_cache_desc(again.blobs, base), "zstd", None, False).digest == base.blob
    forced = store.cache_blob(_cache_desc(blobs, base), "estargz", None, True)
    assert forced.digest != base.blob and TOC in forced.annotations


def test_a_layer_from_an_imported_cache_gets_the_exports_compression(state: StateRoot) -> None:
    """A layer an imported cache holds is one of the build's own steps: an image output in
    another compression converts it (a zstd cache never makes a gzip image's layers zstd); a
    cache export keeps it unless forced."""
    import zstandard

    blobs = Blobs(state)
    tar = _tar(b"step\n")
    data = zstandard.ZstdCompressor().compress(tar)
    digest = sha256_bytes(data)

    @contextlib.contextmanager
    def opener() -> Iterator[BinaryIO]:
        yield io.BytesIO(data)

    blobs.add_remote(
        digest, sha256_bytes(tar), RemoteLocation(None, mt.OCI_LAYER_ZSTD, len(data), opener)
    )
    step = LayerRef(sha256_bytes(tar), digest, len(data), mt.OCI_LAYER_ZSTD)
    out = blobs.export_variant(step, "gzip", None, False, for_image=True)
    assert (
        out.media_type == mt.OCI_LAYER_GZIP and out.diff_id == step.diff_id and out.blob != digest
    )
    assert blobs.export_variant(step, "zstd", None, False, for_image=True) == step
    assert blobs.export_variant(step, "gzip", None, False) == step


def test_without_force_a_layer_the_build_made_is_compressed_as_asked(state: StateRoot) -> None:
    blobs = Blobs(state)
    tar = _tar(b"made here\n")

    def write(stream: BinaryIO) -> Digest:
        stream.write(tar)
        return sha256_bytes(tar)

    made = blobs.store_layer(write)
    out = CacheBlobStore(blobs).cache_blob(_cache_desc(blobs, made), "estargz", None, False)
    assert out.digest != made.blob and TOC in out.annotations
    assert (
        blobs.compression_of(
            LayerRef(
                Digest(out.annotations[ANNOTATION_UNCOMPRESSED]),
                out.digest,
                out.size,
                out.media_type,
            )
        )
        == "estargz"
    )
