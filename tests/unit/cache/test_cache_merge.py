"""Merging a registry cache export with what the ref holds (``mason.cache.merge``): builders
add to one ref instead of replacing each other; a concurrent writer seen before or after our
write is merged with; results on blobs that vanished are dropped, never listed."""

from __future__ import annotations

import pytest
from tests.unit.cache.cache_fakes import REF, FakeBlobStore, FakeRegistry, key, make_clock

from mason.cache import export_cache
from mason.cache.model import SolvedRecord
from mason.cache.options import parse_cache_to
from mason.cache.registry import load_registry_cache
from mason.digest import Digest
from mason.oci.reference import Reference
from mason.registry.errors import RegistryError


def _branch(store: FakeBlobStore, name: str) -> list[SolvedRecord]:
    """FROM base + one RUN of its own: what one branch's build exports."""
    base = store.add_layer(b"base-tar")
    own = store.add_layer(f"run-{name}".encode())
    return [
        SolvedRecord(key("from"), (), (base,), step="[1/2] FROM base"),
        SolvedRecord(key(name), (key("from"),), (base, own), step=f"[2/2] RUN {name}"),
    ]


def _export(
    registry: FakeRegistry, store: FakeBlobStore, name: str, attrs: str = "", prior: object = None
) -> None:
    [opts] = parse_cache_to(f"type=registry,ref={REF},mode=max{attrs}")
    export_cache(
        opts,
        _branch(store, name),
        blobs=store,
        image_diff_ids=None,
        client=registry,
        clock=make_clock(),
        prior=prior,  # type: ignore[arg-type]
    )


def _hits(registry: FakeRegistry, *names: str) -> list[bool]:
    source = load_registry_cache(registry, Reference.parse(REF))
    return [source.lookup(key(n)) is not None for n in names]


def test_a_second_builder_adds_to_the_ref() -> None:
    registry, store = FakeRegistry(), FakeBlobStore()
    _export(registry, store, "main")
    _export(registry, store, "feature")
    assert _hits(registry, "from", "main", "feature") == [True, True, True]


def test_merge_false_replaces_as_buildkit_does() -> None:
    registry, store = FakeRegistry(), FakeBlobStore()
    _export(registry, store, "main")
    _export(registry, store, "feature", ",merge=false")
    assert _hits(registry, "main", "feature") == [False, True]


def test_a_writer_between_our_read_and_our_write_is_merged_with() -> None:
    registry, store = FakeRegistry(), FakeBlobStore()
    _export(registry, store, "main")
    stale = load_registry_cache(registry, Reference.parse(REF))  # what we read at build start
    _export(registry, store, "other")  # another builder writes meanwhile
    _export(registry, store, "feature", prior=stale)
    assert _hits(registry, "main", "other", "feature") == [True, True, True]


def test_a_writer_that_replaced_ours_after_our_write_is_merged_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry, store = FakeRegistry(), FakeBlobStore()
    _export(registry, store, "main")
    before = registry.manifests["app-cache"]["latest"]
    put = registry.put_manifest
    calls = {"n": 0}

    def put_then_be_replaced(ref: Reference, raw: bytes, media_type: str) -> Digest:
        digest = put(ref, raw, media_type)
        calls["n"] += 1
        if calls["n"] == 1:  # a writer that read before our write puts back what it read
            registry.manifests["app-cache"]["latest"] = before
        return digest

    monkeypatch.setattr(registry, "put_manifest", put_then_be_replaced)
    _export(registry, store, "feature")
    assert calls["n"] == 2, "the export noticed and wrote the merge again"
    assert _hits(registry, "main", "feature") == [True, True]


def test_results_on_vanished_blobs_are_dropped_from_the_merge() -> None:
    registry, store = FakeRegistry(), FakeBlobStore()
    _export(registry, store, "gone")
    gone = _branch(store, "gone")[1].layers[-1]  # type: ignore[index]
    del registry.blobs["app-cache"][gone.digest]  # a registry GC took it
    _export(registry, store, "feature")
    assert _hits(registry, "from", "gone", "feature") == [True, False, True]
    raw, _ = registry.manifests["app-cache"]["latest"]
    assert gone.digest.encode() not in raw


def test_an_export_nobody_raced_reads_the_ref_back_by_head_alone() -> None:
    # the checks before and after our write only ask for the ref's digest; the cache itself
    # is read once, at the start (issue 14: two whole read-backs were most of the settle)
    registry, store = FakeRegistry(), FakeBlobStore()
    _export(registry, store, "main")
    _export(registry, store, "feature")
    assert len(registry.ops("get_manifest")) == 2
    assert len(registry.ops("head_manifest")) == 4  # per export: before the PUT, one settle
    assert _hits(registry, "main", "feature") == [True, True]


def test_a_refused_head_falls_back_to_reading_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    registry, store = FakeRegistry(), FakeBlobStore()
    _export(registry, store, "main")

    def refuse(ref: Reference) -> None:
        raise RegistryError("method not allowed", status=405, operation=f"check manifest {ref}")

    monkeypatch.setattr(registry, "head_manifest", refuse)
    registry.calls.clear()
    _export(registry, store, "feature")
    assert len(registry.ops("get_manifest")) == 3  # the import, before the PUT, one settle
    assert _hits(registry, "main", "feature") == [True, True]


def test_written_is_called_between_the_put_and_the_read_back() -> None:
    """The builder starts the image push at ``written``: the push then overlaps the wait
    before the read-back, and the read-back still follows the put."""
    registry, store = FakeRegistry(), FakeBlobStore()
    _export(registry, store, "main")
    [opts] = parse_cache_to(f"type=registry,ref={REF},mode=max")
    mark = len(registry.calls)
    export_cache(
        opts,
        _branch(store, "feature"),
        blobs=store,
        image_diff_ids=None,
        client=registry,
        clock=make_clock(),
        written=lambda: registry.calls.append(("written", "", "")),  # type: ignore[arg-type]
    )
    ops = [op for op, *_ in registry.calls[mark:]]
    put = ops.index("put_manifest")
    assert ops[put + 1] == "written"
    assert "head_manifest" in ops[put + 2 :], "the read-back comes after written"
