"""Retention of a registry cache (``mason.cache.retention``): last-use stamps, pruning by age
and by size with the links BuildKit walks kept, ``keep-duration=`` on export, and
``prune_registry_cache``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from tests.unit.cache.cache_fakes import REF, FakeBlobStore, FakeRegistry, key

from mason.cache import export_cache
from mason.cache.format import CacheConfig, CacheInput, CacheLayer, CacheRecord, CacheResult
from mason.cache.model import SolvedRecord
from mason.cache.options import CacheOptionsError, parse_cache_to
from mason.cache.registry import load_registry_cache, prune_registry_cache
from mason.cache.retention import parse_duration, prune_config, stamp_last_used
from mason.digest import Digest
from mason.oci.reference import Reference

A, B, BASE = (Digest("sha256:" + c * 64) for c in "abc")
NOW = datetime(2026, 12, 5, tzinfo=UTC)


def _config(last_used: dict[str, str]) -> CacheConfig:
    """base <- a (record ka), base <- b (record kb); kroot is a key-only record both link to."""
    layers = (CacheLayer(BASE, -1), CacheLayer(A, 0), CacheLayer(B, 0))
    records = (
        CacheRecord(key("root")),
        CacheRecord(key("a"), (CacheResult(1, "2026-01-01T00:00:00Z"),), (), ((CacheInput(0),),)),
        CacheRecord(key("b"), (CacheResult(2, "2026-01-01T00:00:00Z"),), (), ((CacheInput(0),),)),
    )
    return CacheConfig(layers, records, {}, last_used)


SIZES = {BASE: 100, A: 10, B: 20}


def test_unused_records_expire_and_their_layers_leave() -> None:
    config = _config({key("a"): "2026-11-01T00:00:00Z", key("b"): "2026-12-04T00:00:00Z"})
    pruned = prune_config(config, SIZES, NOW, keep_duration=parse_duration("7d", "x"))
    assert pruned.dropped == 1 and pruned.freed_bytes == 10 and pruned.kept_bytes == 120
    assert {r.digest for r in pruned.config.records if r.has_result} == {key("b")}
    assert {layer.blob for layer in pruned.config.layers} == {BASE, B}
    # the key-only record b links to stays: BuildKit reaches b through it
    assert key("root") in {r.digest for r in pruned.config.records}
    assert key("a") not in pruned.config.last_used


def test_keep_size_drops_least_recently_used_first() -> None:
    config = _config({key("a"): "2026-12-04T10:00:00Z", key("b"): "2026-12-04T09:00:00Z"})
    pruned = prune_config(config, SIZES, NOW, keep_size=115)
    assert {r.digest for r in pruned.config.records if r.has_result} == {key("a")}
    assert pruned.kept_bytes == 110


def test_nothing_left_drops_the_key_only_records_too() -> None:
    pruned = prune_config(_config({}), SIZES, NOW, keep_duration=60)
    assert pruned.config.records == () and pruned.config.layers == ()


def test_a_stamp_is_renewed_once_a_day() -> None:
    config = _config({})
    earlier = {key("a"): "2026-12-04T12:00:00Z", key("b"): "2026-12-01T00:00:00Z"}
    stamped = stamp_last_used(config, earlier, "2026-12-05T01:02:03.123456789Z")
    assert stamped.last_used == {key("a"): "2026-12-04T12:00:00Z", key("b"): "2026-12-05T01:02:03Z"}


def _export(
    registry: FakeRegistry, store: FakeBlobStore, name: str, when: str, attrs: str = ""
) -> None:
    base = store.add_layer(b"base-tar")
    own = store.add_layer(name.encode())
    records = [
        SolvedRecord(key("from"), (), (base,)),
        SolvedRecord(key(name), (key("from"),), (base, own)),
    ]
    [opts] = parse_cache_to(f"type=registry,ref={REF},mode=max{attrs}")
    export_cache(
        opts, records, blobs=store, image_diff_ids=None, client=registry, clock=lambda: when
    )


def test_keep_duration_on_export_prunes_what_the_ref_holds() -> None:
    registry, store = FakeRegistry(), FakeBlobStore()
    _export(registry, store, "old", "2026-11-01T00:00:00Z")
    _export(registry, store, "new", "2026-12-05T00:00:00Z", ",keep-duration=7d")
    source = load_registry_cache(registry, Reference.parse(REF))
    assert source.lookup(key("new")) is not None
    assert source.lookup(key("old")) is None
    with pytest.raises(CacheOptionsError, match="merge=false replaces"):
        parse_cache_to(f"type=registry,ref={REF},keep-duration=7d,merge=false")
    with pytest.raises(CacheOptionsError, match="duration"):
        parse_cache_to(f"type=registry,ref={REF},keep-duration=a-week")


def test_prune_registry_cache_rewrites_then_deletes_the_tag() -> None:
    registry, store = FakeRegistry(), FakeBlobStore()
    _export(registry, store, "old", "2026-11-01T00:00:00Z")
    _export(registry, store, "new", "2026-12-04T00:00:00Z")
    ref = Reference.parse(REF)
    dry = prune_registry_cache(registry, ref, now=NOW, keep_duration=7 * 86400, dry_run=True)
    assert (dry.dropped, dry.written, dry.deleted) == (1, None, False)
    assert load_registry_cache(registry, ref).lookup(key("old")) is not None
    done = prune_registry_cache(registry, ref, now=NOW, keep_duration=7 * 86400)
    assert done.written is not None
    after = load_registry_cache(registry, ref)
    assert after.lookup(key("old")) is None and after.lookup(key("new")) is not None
    gone = prune_registry_cache(registry, ref, now=NOW, keep_duration=3600)
    assert gone.deleted and registry.ops("delete_manifest")
    assert load_registry_cache(registry, ref).missing
