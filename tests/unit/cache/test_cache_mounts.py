"""Cache mounts in a registry cache (``mason.cache.mounts``): stored with ``cache-mounts=true``,
kept by a merging export that has none of its own, dropped by ``merge=false``."""

from __future__ import annotations

import json

import pytest
from tests.unit.cache.cache_fakes import REF, FakeBlobStore, FakeRegistry, key

from mason.cache import export_cache
from mason.cache.format import CacheFormatError
from mason.cache.model import SolvedRecord
from mason.cache.mounts import mounts_index, parse_mounts_index
from mason.cache.options import parse_cache_to
from mason.cache.registry import load_registry_cache
from mason.oci.reference import Reference


def _export(
    registry: FakeRegistry, store: FakeBlobStore, attrs: str, mounts: dict[str, bytes]
) -> None:
    base = store.add_layer(b"base-tar")
    records = [SolvedRecord(key("from"), (), (base,))]
    [opts] = parse_cache_to(f"type=registry,ref={REF},mode=max{attrs}")
    export_cache(
        opts,
        records,
        blobs=store,
        image_diff_ids=None,
        client=registry,
        cache_mounts={i: store.add_layer(data) for i, data in mounts.items()},
    )


def _mounts(registry: FakeRegistry) -> set[str]:
    return set(load_registry_cache(registry, Reference.parse(REF)).mounts)


def test_mounts_are_stored_and_kept_by_merging_exports() -> None:
    registry, store = FakeRegistry(), FakeBlobStore()
    _export(registry, store, ",cache-mounts=true", {"apt": b"apt-tar", "pip": b"pip-tar"})
    assert _mounts(registry) == {"apt", "pip"}
    _export(registry, store, "", {"npm": b"npm-tar"})  # cache-mounts not asked: stores none
    assert _mounts(registry) == {"apt", "pip"}
    _export(registry, store, ",cache-mounts=true", {"pip": b"pip-tar-2"})
    source = load_registry_cache(registry, Reference.parse(REF))
    assert set(source.mounts) == {"apt", "pip"}
    newer = store.add_layer(b"pip-tar-2")
    assert source.mounts["pip"].digest == newer.digest  # ours replace the ref's for the same id
    with source.provider.open_blob(source.mounts["pip"]) as blob:
        assert blob.read() == store.blobs[newer.digest]
    _export(registry, store, ",merge=false", {})
    assert _mounts(registry) == set()


def test_the_index_round_trips_and_rejects_garbage() -> None:
    store = FakeBlobStore()
    layer = store.add_layer(b"x")
    raw = mounts_index({"b": layer, "a": layer})
    assert list(json.loads(raw)["mounts"]) == ["a", "b"]
    assert parse_mounts_index(raw, "t") == {"a": layer, "b": layer}
    with pytest.raises(CacheFormatError, match="cache-mounts index"):
        parse_mounts_index(b'{"mounts": [1]}', "t")
