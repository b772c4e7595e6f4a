"""Issue 9 items 6 to 9 at the unit level: a cache's claims about its blobs are checked where
that is cheap (existence and magic bytes before a hit is used, the media type of a download,
the diff ID of a layer that is decompressed anyway, the blobs a re-export skips)."""

from __future__ import annotations

import gzip
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from tests.unit.cache.cache_fakes import (
    REF,
    FakeBlobStore,
    FakeRegistry,
    key,
    make_clock,
    two_stage_build,
)

from mason.cache import export_cache
from mason.cache.blobcheck import MAGIC_BYTES, compression_mismatch, sniff_compression
from mason.cache.options import parse_cache_to
from mason.cache.registry import load_registry_cache
from mason.digest import Digest, DigestMismatchError, sha256_bytes
from mason.engine.blobs import Blobs, RemoteLocation
from mason.engine.remotecache import HitLookup
from mason.engine.state import LayerRef, StateError, StateRoot
from mason.errors import MasonError
from mason.oci import mediatypes as mt
from mason.oci.reference import Reference
from mason.registry.errors import RegistryError


def _tar(text: bytes = b"hello\n") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(text)
        tf.addfile(info, io.BytesIO(text))
    return buf.getvalue()


# -- magic bytes ------------------------------------------------------------------------------


def test_sniff_tells_gzip_zstd_and_tar_apart() -> None:
    tar = _tar()
    assert sniff_compression(gzip.compress(tar)) == "gzip"
    assert sniff_compression(zstandard.ZstdCompressor().compress(tar)) == "zstd"
    assert sniff_compression(tar[:MAGIC_BYTES]) == "uncompressed"
    assert sniff_compression(bytes(MAGIC_BYTES)) == "uncompressed"  # an empty layer: end-of-archive
    assert sniff_compression(b"\x89PNG" + bytes(MAGIC_BYTES)) is None
    assert compression_mismatch(mt.OCI_LAYER_GZIP, gzip.compress(tar)) is None
    assert compression_mismatch(mt.DOCKER_LAYER, tar) is None
    said = compression_mismatch(mt.OCI_LAYER_ZSTD, gzip.compress(tar))
    assert said is not None and "zstd" in said and "gzip data" in said
    said = compression_mismatch(mt.OCI_LAYER, gzip.compress(tar))
    assert said is not None and "gzip data" in said
    said = compression_mismatch("application/x-unknown", tar)
    assert said is not None and "application/x-unknown" in said


# -- items 6, 7, 8: checks before a hit is used ----------------------------------------------


def _exported_cache(blob_store: FakeBlobStore, fake_registry: FakeRegistry) -> list[Digest]:
    records, image = two_stage_build(blob_store)
    [opts] = parse_cache_to(f"type=registry,ref={REF},mode=max")
    export_cache(
        opts,
        records,
        blobs=blob_store,
        image_diff_ids=image,
        client=fake_registry,  # type: ignore[arg-type]
        clock=make_clock(),
    )
    return [d.digest for d in records[-1].layers or ()]


@pytest.fixture
def blobs(tmp_path: Path) -> Iterator[Blobs]:
    with StateRoot.open(tmp_path / "root") as state:
        yield Blobs(state)


def _lookup(blobs: Blobs, fake_registry: FakeRegistry, name: str) -> tuple[object, list[str]]:
    source = load_registry_cache(fake_registry, Reference.parse(REF))  # type: ignore[arg-type]
    warnings: list[str] = []
    result = HitLookup(source, blobs, warnings.append).lookup(_Key(key(name)))  # type: ignore[arg-type]
    return result, warnings


class _Key:
    def __init__(self, digest: Digest) -> None:
        self.digest = digest
        self.lookup_digests = (digest,)


def test_a_hit_whose_blob_is_gone_is_a_miss_with_a_warning(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry, blobs: Blobs
) -> None:
    chain = _exported_cache(blob_store, fake_registry)
    del fake_registry.blobs["app-cache"][chain[-1]]
    result, warnings = _lookup(blobs, fake_registry, "f2")
    assert result is None
    [warning] = warnings
    assert "[stage-1 3/3] RUN three" in warning and chain[-1] in warning and "missing" in warning
    # a hit that does not need that blob is still a hit, and nothing was downloaded
    result, warnings = _lookup(blobs, fake_registry, "f1")
    assert result is not None and warnings == []
    assert not {c[2] for c in fake_registry.ops("get_blob")} & set(
        chain
    )  # only the config was read


def test_each_blob_is_peeked_once_per_source(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry, blobs: Blobs
) -> None:
    _exported_cache(blob_store, fake_registry)
    source = load_registry_cache(fake_registry, Reference.parse(REF))  # type: ignore[arg-type]
    lookup = HitLookup(source, blobs)
    for name in ("from", "b1", "b2", "f1", "f2"):
        assert lookup.lookup(_Key(key(name))) is not None  # type: ignore[arg-type]
    peeked = [c[2] for c in fake_registry.ops("peek_blob")]
    assert sorted(peeked) == sorted(set(peeked)) and len(peeked) == 5  # 5 distinct layers


def test_a_relabelled_media_type_is_a_miss(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry, blobs: Blobs
) -> None:
    chain = _exported_cache(blob_store, fake_registry)
    source = load_registry_cache(fake_registry, Reference.parse(REF))  # type: ignore[arg-type]
    desc = source.descriptors[chain[-1]]
    source.descriptors[chain[-1]] = type(desc)(
        mt.OCI_LAYER_ZSTD, desc.digest, desc.size, desc.annotations
    )
    warnings: list[str] = []
    assert HitLookup(source, blobs, warnings.append).lookup(_Key(key("f2"))) is None  # type: ignore[arg-type]
    [warning] = warnings
    assert "zstd" in warning and "gzip data" in warning


def test_a_diff_id_that_contradicts_the_base_image_is_a_miss(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry, blobs: Blobs
) -> None:
    chain = _exported_cache(blob_store, fake_registry)
    base = chain[0]
    truth = Digest("sha256:" + "1" * 64)  # what the base image's config says (made up here)
    blobs.add_remote(
        base, truth, RemoteLocation(Reference.parse("127.0.0.1:5000/base"), mt.OCI_LAYER_GZIP, 1)
    )
    result, warnings = _lookup(blobs, fake_registry, "from")
    assert result is None
    [warning] = warnings
    assert truth in warning and base in warning


def test_an_unknown_media_type_makes_only_its_records_unusable_with_one_notice(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry
) -> None:
    chain = _exported_cache(blob_store, fake_registry)
    source = load_registry_cache(fake_registry, Reference.parse(REF))  # type: ignore[arg-type]
    odd = "application/vnd.example.layer"
    desc = source.descriptors[chain[-1]]
    relabelled = type(source)(
        source.name,
        source.config,
        {
            **source.descriptors,
            desc.digest: type(desc)(odd, desc.digest, desc.size, desc.annotations),
        },
        source.provider,
        manifest=source.manifest,
        origin=source.origin,
    )
    [notice] = relabelled.notices
    assert odd in notice and chain[-1] in notice
    assert relabelled.lookup(key("f2")) is None  # its chain holds the layer
    assert relabelled.lookup(key("f1")) is not None  # the rest of the cache works


# -- item 8: a download's media type, a decompressed layer's diff ID ---------------------------


def test_a_download_whose_bytes_contradict_its_media_type_is_refused(blobs: Blobs) -> None:
    data = gzip.compress(_tar())
    blob = sha256_bytes(data)

    def opener() -> io.BytesIO:
        return io.BytesIO(data)

    import contextlib

    blobs.add_remote(
        blob,
        sha256_bytes(_tar()),
        RemoteLocation(
            None, mt.OCI_LAYER_ZSTD, len(data), lambda: contextlib.nullcontext(opener())
        ),
    )  # type: ignore[arg-type, return-value]
    with pytest.raises(StateError, match="gzip data") as err:
        blobs.ensure_local(LayerRef(sha256_bytes(_tar()), blob, len(data), mt.OCI_LAYER_ZSTD))
    assert err.value.reference == "blob-media-type-mismatch"
    assert not blobs.has_local(blob)  # removed again


def test_a_wrong_diff_id_fails_the_conversion_that_decompresses_the_layer(blobs: Blobs) -> None:
    tar = _tar()
    data = gzip.compress(tar)
    blob = blobs.state.store.put_bytes(data)
    wrong = Digest("sha256:" + "2" * 64)
    with pytest.raises(DigestMismatchError, match="diff ID"):
        blobs.variant(LayerRef(wrong, blob, len(data), mt.OCI_LAYER_GZIP), "zstd", None, True)


# -- item 9: a re-export checks what it skips -------------------------------------------------


def test_a_deleted_blob_is_stored_again_even_when_the_manifest_is_unchanged(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry
) -> None:
    records, image = two_stage_build(blob_store)
    [opts] = parse_cache_to(f"type=registry,ref={REF},mode=max")
    clock = lambda: "2026-01-01T00:00:00Z"  # noqa: E731 - same times: the same manifest
    export_cache(
        opts, records, blobs=blob_store, image_diff_ids=image, client=fake_registry, clock=clock
    )  # type: ignore[arg-type]
    gone = records[0].layers[0].digest  # type: ignore[index]
    del fake_registry.blobs["app-cache"][gone]
    prior = load_registry_cache(fake_registry, Reference.parse(REF))  # type: ignore[arg-type]
    again = export_cache(
        opts,
        records,
        blobs=blob_store,
        image_diff_ids=image,
        client=fake_registry,  # type: ignore[arg-type]
        prior=prior,
        clock=clock,
    )
    assert gone in again.uploaded and not again.unchanged
    assert gone in fake_registry.blobs["app-cache"]
    # and a changed cache stores it too, build after build
    del fake_registry.blobs["app-cache"][gone]
    extra = blob_store.add_layer(b"one more")
    more = [
        *records,
        records[-1].__class__(key("f3"), (key("f2"),), (*(records[-1].layers or ()), extra)),
    ]
    third = export_cache(
        opts,
        more,
        blobs=blob_store,
        image_diff_ids=image,
        client=fake_registry,  # type: ignore[arg-type]
        prior=load_registry_cache(fake_registry, Reference.parse(REF)),
    )  # type: ignore[arg-type]
    assert gone in third.uploaded


def test_a_missing_blob_on_the_manifest_put_gets_no_media_type_hint(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    records, image = two_stage_build(blob_store)
    [opts] = parse_cache_to(f"type=registry,ref={REF},mode=max")

    def refuse(ref: Reference, raw: bytes, media_type: str) -> Digest:
        raise RegistryError(
            f"push manifest {ref}: registry refused the manifest of media type {media_type}",
            status=400,
            operation="push manifest",
            errors=[{"code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown to registry"}],
            hint=f"this registry may not accept {media_type} manifests",
        )

    monkeypatch.setattr(fake_registry, "put_manifest", refuse)
    with pytest.raises(MasonError) as err:
        export_cache(opts, records, blobs=blob_store, image_diff_ids=image, client=fake_registry)  # type: ignore[arg-type]
    assert "may not accept" not in (err.value.hint or "")
    assert "kept losing a blob" in (err.value.hint or "")


def test_a_blob_missing_at_the_manifest_put_once_is_checked_and_put_again(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry that answers the PUT with "blob unknown" once (another writer's upload of
    the same blob being linked again): the export checks its blobs again, stores what is
    missing and puts the manifest again, instead of failing the build."""
    records, image = two_stage_build(blob_store)
    [opts] = parse_cache_to(f"type=registry,ref={REF},mode=max")
    real_put = fake_registry.put_manifest
    puts: list[str] = []

    def once_unknown(ref: Reference, raw: bytes, media_type: str) -> Digest:
        puts.append(media_type)
        if len(puts) == 1:
            raise RegistryError(
                "push manifest: blob unknown to registry",
                status=400,
                operation="push manifest",
                errors=[{"code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown to registry"}],
            )
        return real_put(ref, raw, media_type)

    monkeypatch.setattr(fake_registry, "put_manifest", once_unknown)
    result = export_cache(
        opts, records, blobs=blob_store, image_diff_ids=image, client=fake_registry
    )  # type: ignore[arg-type]
    assert len(puts) == 2 and result.manifest is not None
    assert load_registry_cache(fake_registry, Reference.parse(REF)).manifest is not None


# -- checks asked at once (the solver looks every step up together, issue 14) --------------


class _SlowFirstRead:
    """A blob provider whose first ranged read waits for ``release``, then fails (``fail``)
    or answers."""

    def __init__(self, inner: Any, fail: bool) -> None:
        self.inner = inner
        self.fail = fail
        self.reads = 0
        self.started = threading.Event()
        self.release = threading.Event()

    def open_blob(self, desc: Any) -> Any:
        return self.inner.open_blob(desc)

    def peek_blob(self, desc: Any, n: int) -> bytes | None:
        self.reads += 1
        if self.reads == 1:
            self.started.set()
            self.release.wait(30)
            if self.fail:
                raise RegistryError("connection reset", operation="peek blob")
        data: bytes | None = self.inner.peek_blob(desc, n)
        return data


@pytest.mark.parametrize("fail", [False, True])
def test_a_check_asked_while_another_reads_waits_for_it(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry, fail: bool
) -> None:
    chain = _exported_cache(blob_store, fake_registry)
    source = load_registry_cache(fake_registry, Reference.parse(REF))  # type: ignore[arg-type]
    provider = source.provider = _SlowFirstRead(source.provider, fail)
    desc = source.descriptors[chain[-1]]
    outcomes: dict[str, object] = {}

    def ask(name: str) -> None:
        try:
            outcomes[name] = source.check_blob(desc)
        except RegistryError as exc:
            outcomes[name] = exc

    first = threading.Thread(target=ask, args=("first",))
    first.start()
    assert provider.started.wait(30)  # the first read is under way
    second = threading.Thread(target=ask, args=("second",))
    second.start()
    provider.release.set()
    first.join(30)
    second.join(30)
    if not fail:  # one read for both callers
        assert outcomes == {"first": None, "second": None} and provider.reads == 1
    else:  # the first caller gets its error; the second reads again, and gets the answer
        assert isinstance(outcomes["first"], RegistryError) and outcomes["second"] is None
        assert provider.reads == 2
    reads = provider.reads
    assert source.check_blob(desc) is None and provider.reads == reads  # remembered
