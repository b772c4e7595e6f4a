"""Export: min/max selection, determinism, createdAt carry-over, the registry backend against an
in-memory registry (both forms, media types, skipped blobs, manifest last), local and inline."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Literal

import pytest
from tests.unit.cache.cache_fakes import (
    REF,
    FakeBlobStore,
    FakeRegistry,
    key,
    make_clock,
    two_stage_build,
)

from mason.cache import export_cache, load_cache_source
from mason.cache.format import parse_cache_config
from mason.cache.inline import INLINE_CACHE_KEY, inline_cache_value, inline_config_from_image
from mason.cache.model import (
    DISTRIBUTION_SOURCE_PREFIX,
    CacheSource,
    SolvedRecord,
    first_hit,
    plan_export,
)
from mason.cache.options import parse_cache_from, parse_cache_to
from mason.cache.registry import load_registry_cache
from mason.digest import Digest
from mason.errors import MasonError
from mason.oci import mediatypes as mt
from mason.oci.config import build_image_config
from mason.oci.descriptor import ANNOTATION_UNCOMPRESSED, Descriptor
from mason.oci.manifest import build_manifest, parse_manifest
from mason.oci.reference import Reference


def test_min_keeps_results_of_image_chain_only(blob_store: FakeBlobStore) -> None:
    records, image = two_stage_build(blob_store)
    plan_min = plan_export(
        records, mode="min", image_diff_ids=image, blobs=blob_store, clock=make_clock()
    )  # type: ignore[arg-type]
    plan_max = plan_export(
        records, mode="max", image_diff_ids=image, blobs=blob_store, clock=make_clock()
    )  # type: ignore[arg-type]
    with_result = {r.digest for r in plan_min.config.records if r.has_result}
    assert with_result == {key("from"), key("f1"), key("f2")}
    assert {r.digest for r in plan_max.config.records if r.has_result} == {r.key for r in records}
    # the build stage is key-only in min, but its records stay so links resolve
    assert {r.digest for r in plan_min.config.records} == {r.key for r in records}
    assert len(plan_min.layers) == 3 and len(plan_max.layers) == 5
    assert len(plan_min.config_raw) < len(plan_max.config_raw)
    # inputs link to the input records
    by_digest = {r.digest: r for r in plan_max.config.records}
    f1 = by_digest[key("f1")]
    linked = [plan_max.config.records[link.link].digest for inp in f1.inputs for link in inp]
    assert linked == [key("from"), key("b2")]
    assert plan_max.config.steps[key("b2")] == "[build 3/3] RUN two"


def test_plan_is_deterministic_and_order_independent(blob_store: FakeBlobStore) -> None:
    records, image = two_stage_build(blob_store)
    a = plan_export(
        records,
        mode="max",
        image_diff_ids=image,
        blobs=blob_store,
        clock=lambda: "2026-01-01T00:00:00Z",
    )
    b = plan_export(
        list(reversed(records)),
        mode="max",
        image_diff_ids=image,
        blobs=blob_store,
        clock=lambda: "2026-01-01T00:00:00Z",
    )
    assert a.config_raw == b.config_raw and a.layers == b.layers


def test_each_layer_keeps_the_created_at_of_the_step_that_made_it(
    blob_store: FakeBlobStore,
) -> None:
    records, image = two_stage_build(blob_store)
    # distinct times per step; in key order (hashes) a later step is often visited first
    times = {
        key(n): f"2026-01-01T00:00:0{i}Z" for i, n in enumerate(["from", "b1", "b2", "f1", "f2"], 1)
    }
    timed = [SolvedRecord(r.key, r.inputs, r.layers, r.step, times[r.key]) for r in records]
    for order in (timed, list(reversed(timed))):
        plan = plan_export(
            order,
            mode="max",
            image_diff_ids=image,
            blobs=blob_store,
            clock=lambda: "2099-01-01T00:00:00Z",
        )
        made_by = {(r.layers or ())[-1].digest: times[r.key] for r in timed}
        assert {d.digest: d.annotations["buildkit/createdat"] for d in plan.layers} == made_by
        # and each record's result keeps its own time
        assert {r.digest: r.results[0].created_at for r in plan.config.records} == times


def test_created_at_is_carried_over_from_the_prior_cache(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry
) -> None:
    records, image = two_stage_build(blob_store)
    [opts] = parse_cache_to(f"type=registry,ref={REF},mode=max")
    first = export_cache(
        opts,
        records,
        blobs=blob_store,
        image_diff_ids=image,
        client=fake_registry,
        clock=make_clock(),
    )  # type: ignore[arg-type]
    assert first.manifest is not None and not first.unchanged
    first_config = load_registry_cache(fake_registry, Reference.parse(REF)).config
    puts_before = len(fake_registry.ops("put_manifest"))
    pushes_before = len(fake_registry.ops("push_blob"))
    # a later export the same day: nothing changed (last use is renewed once a day), so
    # nothing is written
    again = export_cache(
        opts,
        records,
        blobs=blob_store,
        image_diff_ids=image,
        client=fake_registry,
        clock=lambda: "2026-01-01T23:00:00Z",
    )
    assert again.unchanged and again.manifest == first.manifest
    assert len(fake_registry.ops("put_manifest")) == puts_before
    assert len(fake_registry.ops("push_blob")) == pushes_before
    # years later: only the last-use stamps change; every createdAt is carried over
    later = export_cache(
        opts,
        records,
        blobs=blob_store,
        image_diff_ids=image,
        client=fake_registry,
        clock=lambda: "2099-01-01T00:00:00Z",
    )
    assert not later.unchanged
    now = load_registry_cache(fake_registry, Reference.parse(REF)).config
    assert set(now.last_used.values()) == {"2099-01-01T00:00:00Z"}
    assert set(first_config.last_used.values()) == {"2026-01-01T00:00:06Z"}
    assert [r.results for r in now.records] == [r.results for r in first_config.records]


def test_registry_export_image_manifest_form(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry
) -> None:
    records, image = two_stage_build(blob_store)
    [opts] = parse_cache_to(f"type=registry,ref={REF},mode=max")
    result = export_cache(
        opts,
        records,
        blobs=blob_store,
        image_diff_ids=image,
        client=fake_registry,
        clock=make_clock(),
    )  # type: ignore[arg-type]
    raw, media_type = fake_registry.manifests["app-cache"]["latest"]
    assert media_type == mt.OCI_MANIFEST
    doc = parse_manifest(raw, media_type)
    assert doc.media_type == mt.OCI_MANIFEST and hasattr(doc, "config")
    assert doc.config.media_type == mt.BUILDKIT_CACHE_CONFIG  # type: ignore[union-attr]
    layers = doc.layers  # type: ignore[union-attr]
    assert all(d.media_type == mt.OCI_LAYER_GZIP for d in layers)
    assert all(
        set(d.annotations) == {ANNOTATION_UNCOMPRESSED, "buildkit/createdat"} for d in layers
    )
    config = parse_cache_config(fake_registry.blobs["app-cache"][doc.config.digest])  # type: ignore[union-attr]
    assert [d.digest for d in layers] == [layer.blob for layer in config.layers]
    assert json.loads(raw).keys() == {"schemaVersion", "mediaType", "config", "layers"}
    # every blob first, the manifest last
    ops = [c[0] for c in fake_registry.calls if c[0] in ("push_blob", "put_manifest")]
    assert ops[-1] == "put_manifest" and ops.count("put_manifest") == 1
    assert set(result.uploaded) == {d.digest for d in layers} | {doc.config.digest}  # type: ignore[union-attr]
    assert result.records == 5 and result.records_with_results == 5


@pytest.mark.parametrize(
    ("attrs", "top", "layer_type"),
    [
        ("image-manifest=false", mt.OCI_INDEX, mt.OCI_LAYER_GZIP),
        ("oci-mediatypes=false", mt.DOCKER_MANIFEST_LIST, mt.DOCKER_LAYER_GZIP),
        ("compression=zstd,force-compression=true", mt.OCI_MANIFEST, mt.OCI_LAYER_ZSTD),
        (
            "compression=zstd,force-compression=true,oci-mediatypes=false",
            mt.DOCKER_MANIFEST_LIST,
            mt.DOCKER_LAYER_ZSTD,
        ),
        (
            "compression=uncompressed,force-compression=true,image-manifest=false",
            mt.OCI_INDEX,
            mt.OCI_LAYER,
        ),
    ],
)
def test_registry_export_forms_and_media_types(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry, attrs: str, top: str, layer_type: str
) -> None:
    records, image = two_stage_build(blob_store)
    [opts] = parse_cache_to(f"type=registry,ref={REF},mode=max,{attrs}")
    export_cache(
        opts,
        records,
        blobs=blob_store,
        image_diff_ids=image,
        client=fake_registry,
        clock=make_clock(),
    )  # type: ignore[arg-type]
    raw, media_type = fake_registry.manifests["app-cache"]["latest"]
    assert media_type == top
    doc = json.loads(raw)
    entries = doc["layers"] if "layers" in doc else doc["manifests"]
    if "manifests" in doc:
        assert entries[-1]["mediaType"] == mt.BUILDKIT_CACHE_CONFIG
        entries = entries[:-1]
    assert {e["mediaType"] for e in entries} == {layer_type}
    # and it imports back to full hits with no hint needed
    source = load_cache_source(parse_cache_from(REF)[0], fake_registry)
    assert source.warning is None
    for rec in records:
        hit = source.lookup(rec.key)
        assert hit is not None and hit.diff_ids == tuple(
            d.annotations[ANNOTATION_UNCOMPRESSED] for d in rec.layers or ()
        )


def test_without_force_existing_compression_is_kept(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry
) -> None:
    records, image = two_stage_build(blob_store)
    [opts] = parse_cache_to(f"type=registry,ref={REF},mode=max,compression=zstd")
    export_cache(opts, records, blobs=blob_store, image_diff_ids=image, client=fake_registry)
    raw, _ = fake_registry.manifests["app-cache"]["latest"]
    assert {d["mediaType"] for d in json.loads(raw)["layers"]} == {mt.OCI_LAYER_GZIP}


def test_export_skips_known_blobs_and_mounts_from_other_repos(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry
) -> None:
    records, image = two_stage_build(blob_store)
    base = records[0].layers[0]  # type: ignore[index]
    # the base layer lives in another repository of the same registry
    fake_registry.blobs["base/busybox"] = {base.digest: blob_store.blobs[base.digest]}
    hinted = base.with_annotations({DISTRIBUTION_SOURCE_PREFIX + "127.0.0.1:5000": "base/busybox"})
    records = [
        SolvedRecord(
            r.key,
            r.inputs,
            tuple(hinted if d.digest == base.digest else d for d in r.layers or ()),
            r.step,
        )
        for r in records
    ]
    # one writer, no merge: the re-export trusts the import and reads nothing again
    [opts] = parse_cache_to(f"type=registry,ref={REF},mode=max,merge=false")
    first = export_cache(
        opts,
        records,
        blobs=blob_store,
        image_diff_ids=image,
        client=fake_registry,
        clock=make_clock(),
    )  # type: ignore[arg-type]
    assert first.mounted == (base.digest,)
    assert base.digest not in first.uploaded
    # mount hints never reach the stored manifest
    raw, _ = fake_registry.manifests["app-cache"]["latest"]
    assert b"distribution.source" not in raw
    # one more step: the re-export knows every old blob from the import of the same ref
    extra = blob_store.add_layer(b"one-more")
    more = [*records, SolvedRecord(key("f3"), (key("f2"),), (*(records[-1].layers or ()), extra))]
    prior = load_registry_cache(fake_registry, Reference.parse(REF))
    fake_registry.calls.clear()
    second = export_cache(
        opts, more, blobs=blob_store, image_diff_ids=image, client=fake_registry, prior=prior
    )
    assert extra.digest in second.uploaded
    assert len(second.uploaded) == 2  # the new layer and the new config
    assert len(second.existing) == 5
    heads = {c[2] for c in fake_registry.ops("head_blob")}
    assert heads <= set(second.uploaded)  # known blobs are never pushed...
    checked = [c[2] for c in fake_registry.ops("check_blob")]
    assert sorted(checked) == sorted(second.existing)  # ...but checked, once each (issue 9 item 9)
    assert not fake_registry.ops("get_manifest")  # prior came from the import


def test_empty_result_is_skipped(blob_store: FakeBlobStore, fake_registry: FakeRegistry) -> None:
    [opts] = parse_cache_to(f"type=registry,ref={REF}")
    result = export_cache(
        opts, [SolvedRecord(key("meta"))], blobs=blob_store, image_diff_ids=[], client=fake_registry
    )
    assert result.skipped_reason == "no layers to export"
    assert not fake_registry.ops("put_manifest")


def test_export_failure_raises_or_warns_with_ignore_error(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry
) -> None:
    records, image = two_stage_build(blob_store)
    fake_registry.fail_puts = True
    [strict] = parse_cache_to(f"type=registry,ref={REF}")
    with pytest.raises(MasonError, match="denied"):
        export_cache(strict, records, blobs=blob_store, image_diff_ids=image, client=fake_registry)
    [lenient] = parse_cache_to(f"type=registry,ref={REF},ignore-error=true")
    result = export_cache(
        lenient, records, blobs=blob_store, image_diff_ids=image, client=fake_registry
    )
    assert (
        result.warning is not None
        and "denied" in result.warning
        and "ignore-error" in result.warning
    )


def test_import_failures_are_warnings(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry
) -> None:
    records, image = two_stage_build(blob_store)
    [opts] = parse_cache_to(f"type=registry,ref={REF},mode=max")
    export_cache(opts, records, blobs=blob_store, image_diff_ids=image, client=fake_registry)
    raw, _ = fake_registry.manifests["app-cache"]["latest"]
    config_digest = json.loads(raw)["config"]["digest"]
    # auth denied
    fake_registry.deny_reads.add("app-cache")
    denied = load_cache_source(parse_cache_from(REF)[0], fake_registry)
    assert denied.warning is not None and "authentication required" in denied.warning
    fake_registry.deny_reads.clear()
    # corrupt config: the fake verifies digests, so a corrupted blob fails verification
    fake_registry.blobs["app-cache"][config_digest] = b"{" + b"x" * (
        len(fake_registry.blobs["app-cache"][config_digest]) - 1
    )
    corrupt = load_cache_source(parse_cache_from(REF)[0], fake_registry)
    assert corrupt.warning is not None and "failed" in corrupt.warning
    assert corrupt.lookup(records[0].key) is None
    # no client at all
    assert load_cache_source(parse_cache_from(REF)[0], None).warning


def test_several_sources_first_wins(blob_store: FakeBlobStore, fake_registry: FakeRegistry) -> None:
    records, image = two_stage_build(blob_store)
    for tag, subset in (("a", records[:2]), ("b", records)):
        [opts] = parse_cache_to(f"type=registry,ref={REF}:{tag},mode=max")
        export_cache(opts, subset, blobs=blob_store, image_diff_ids=image, client=fake_registry)
    sources = [
        load_cache_source(parse_cache_from(f"{REF}:{t}")[0], fake_registry)
        for t in ("missing", "a", "b")
    ]
    assert (
        sources[0].missing and not sources[0].warning and not sources[1].warning
    )  # nothing at :missing yet
    assert first_hit(sources, key("b1")).source == f"registry {REF}:a"  # type: ignore[union-attr]
    assert first_hit(sources, key("f2")).source == f"registry {REF}:b"  # type: ignore[union-attr]
    assert first_hit(sources, key("nothing")) is None


def test_local_round_trip_and_unchanged_reexport(tmp_path: Path, blob_store: FakeBlobStore) -> None:
    records, image = two_stage_build(blob_store)
    dest = tmp_path / "cache"
    [opts] = parse_cache_to(
        f"type=local,dest={dest},mode=max,tag=main,compression=zstd,force-compression=true"
    )
    first = export_cache(opts, records, blobs=blob_store, image_diff_ids=image, clock=make_clock())  # type: ignore[arg-type]
    index = json.loads((dest / "index.json").read_bytes())
    [entry] = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "main"
    assert entry["mediaType"] == mt.OCI_MANIFEST and entry["digest"] == first.manifest.digest  # type: ignore[union-attr]
    source = load_cache_source(parse_cache_from(f"type=local,src={dest},tag=main")[0])
    assert source.warning is None
    for rec in records:
        hit = source.lookup(rec.key)
        assert hit is not None and all(d.media_type == mt.OCI_LAYER_ZSTD for d in hit.layers)
        with hit.open_blob(hit.layers[-1]) as stream:
            assert stream.read()
    again = export_cache(
        opts, records, blobs=blob_store, image_diff_ids=image, clock=lambda: "2099-01-01T00:00:00Z"
    )
    assert again.unchanged and again.uploaded == () and again.manifest == first.manifest
    # a second tag in the same directory keeps the first
    [other] = parse_cache_to(f"type=local,dest={dest},tag=other")
    export_cache(other, records, blobs=blob_store, image_diff_ids=image)
    names = sorted(
        e["annotations"]["org.opencontainers.image.ref.name"]
        for e in json.loads((dest / "index.json").read_bytes())["manifests"]
    )
    assert names == ["main", "other"]


def test_inline_round_trip(blob_store: FakeBlobStore) -> None:
    records, image = two_stage_build(blob_store)
    value = inline_cache_value(records, image)
    assert value is not None
    decoded = json.loads(base64.b64decode(value))
    assert isinstance(decoded, list) and all("digest" in r for r in decoded)
    final_layers = records[-1].layers or ()
    config = build_image_config(
        {INLINE_CACHE_KEY: value},
        diff_ids=image,
    )
    manifest = build_manifest(config.descriptor(), final_layers)
    found = inline_config_from_image(config, manifest)
    assert found is not None
    cache_config, descs = found
    source = CacheSource("inline", cache_config, {d.digest: d for d in descs})
    for rec in records:
        hit = source.lookup(rec.key)
        if rec.key in (key("from"), key("f1"), key("f2")):
            assert hit is not None and hit.diff_ids == tuple(image[: len(rec.layers or ())])
        else:
            assert hit is None  # min mode: the build stage is key-only
    # inline values are deterministic (part of the image digest)
    assert inline_cache_value(list(reversed(records)), image) == value


def test_inline_non_prefix_result_uses_chains(blob_store: FakeBlobStore) -> None:
    base = blob_store.add_layer(b"base")
    linked = blob_store.add_layer(b"copy-link")
    image = [Digest(d.annotations[ANNOTATION_UNCOMPRESSED]) for d in (base, linked)]
    value = inline_cache_value([SolvedRecord(key("link"), (), (linked,))], image)
    assert value is not None
    [record] = json.loads(base64.b64decode(value))
    assert record["chains"][0]["layers"] == [1] and "layers" not in record


def test_import_of_image_with_inline_cache_through_registry(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry
) -> None:
    records, image = two_stage_build(blob_store)
    value = inline_cache_value(records, image)
    config = build_image_config({INLINE_CACHE_KEY: value}, diff_ids=image)
    layers = records[-1].layers or ()
    manifest = build_manifest(
        config.descriptor(), [Descriptor(d.media_type, d.digest, d.size) for d in layers]
    )
    fake_registry.blobs["app"] = {config.digest: config.raw}
    fake_registry.manifests["app"] = {"latest": (manifest.raw, manifest.media_type)}
    source = load_cache_source(parse_cache_from("127.0.0.1:5000/app")[0], fake_registry)
    assert source.warning is None and source.form == "inline"
    hit = source.lookup(key("f2"))
    assert hit is not None and hit.diff_ids == tuple(image)


def test_warm_reexport_from_hits_is_byte_identical(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry
) -> None:
    """Cold export, then a 'fresh machine' build where every step is a hit from the import: the
    builder hands back hit.layers and hit.created_at, and the cache manifest does not change."""
    records, image = two_stage_build(blob_store)
    [opts] = parse_cache_to(f"type=registry,ref={REF},mode=max")
    cold = export_cache(
        opts,
        records,
        blobs=blob_store,
        image_diff_ids=image,
        client=fake_registry,
        clock=make_clock(),
    )  # type: ignore[arg-type]
    source = load_cache_source(parse_cache_from(REF)[0], fake_registry)
    warm_records = []
    for rec in records:
        hit = source.lookup(rec.key)
        assert hit is not None
        warm_records.append(SolvedRecord(rec.key, rec.inputs, hit.layers, rec.step, hit.created_at))
    fake_registry.calls.clear()
    warm = export_cache(
        opts,
        warm_records,
        blobs=blob_store,
        image_diff_ids=image,
        client=fake_registry,
        prior=source,
        clock=lambda: "2026-01-01T20:00:00Z",  # the same day: last use is not renewed yet
    )
    assert warm.unchanged and warm.manifest == cold.manifest
    # only a HEAD per blob (a deleted one would be stored again: issue 9 item 9), nothing written
    assert {c[0] for c in fake_registry.calls} == {"check_blob"}
    # the same hits exported to another ref are stable across re-exports too
    [other] = parse_cache_to(f"type=registry,ref={REF}:other,mode=max")
    first = export_cache(
        other,
        warm_records,
        blobs=blob_store,
        image_diff_ids=image,
        client=fake_registry,
        clock=lambda: "2026-01-01T00:00:06Z",  # when the cold export stamped its records
    )
    again = export_cache(
        other,
        warm_records,
        blobs=blob_store,
        image_diff_ids=image,
        client=fake_registry,
        clock=lambda: "2026-01-01T21:00:00Z",
    )
    assert again.unchanged and again.manifest == first.manifest == cold.manifest


def test_progress_events_for_import_and_export(
    blob_store: FakeBlobStore, fake_registry: FakeRegistry
) -> None:
    from mason.progress import RecordingSink

    records, image = two_stage_build(blob_store)
    sink = RecordingSink()
    missing = load_cache_source(parse_cache_from(REF)[0], fake_registry, progress=sink)
    [opts] = parse_cache_to(f"type=registry,ref={REF},mode=max")
    export_cache(
        opts, records, blobs=blob_store, image_diff_ids=image, client=fake_registry, progress=sink
    )
    load_cache_source(parse_cache_from(REF)[0], fake_registry, progress=sink)
    seen = [(e.name, e.status) for e in sink.events]
    name_in = f"importing cache manifest from registry {REF}:latest"
    name_out = f"exporting cache to registry {REF}:latest"
    assert seen == [
        (name_in, "started"),
        (name_in, "done"),  # nothing there yet: said quietly
        (name_out, "started"),
        (name_out, "done"),
        (name_in, "started"),
        (name_in, "done"),
    ]
    assert sink.events[1].text == missing.missing == f"no cache at {REF}:latest yet"
    assert "6 uploaded" in sink.events[3].text  # five layers and the config


@pytest.mark.parametrize(
    ("attrs", "refused", "suggestion"),
    [
        ("image-manifest=false", mt.OCI_INDEX, "image-manifest=true,oci-mediatypes=true"),
        ("", mt.OCI_MANIFEST, "image-manifest=false,oci-mediatypes=false"),
    ],
)
def test_a_registry_refusing_the_cache_manifest_type_gets_a_hint(
    blob_store: FakeBlobStore, attrs: str, refused: str, suggestion: str
) -> None:
    """ECR-like: the manifest PUT is refused for its media type; the error names the registry,
    URL and the registry's message, and says which cache form to try instead."""
    from tests.support.fake_registry import FakeRegistry as HttpFakeRegistry

    from mason.registry.client import RegistryClient

    accepted = {mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST} - {
        refused
    }
    fake = HttpFakeRegistry(accepted_manifest_types=accepted)
    records, image = two_stage_build(blob_store)
    [opts] = parse_cache_to(
        f"type=registry,ref={fake.host}/app/cache,mode=max" + (f",{attrs}" if attrs else "")
    )
    with (
        RegistryClient(send=fake, sleep=lambda _s: None) as client,
        pytest.raises(MasonError) as err,
    ):
        export_cache(opts, records, blobs=blob_store, image_diff_ids=image, client=client)
    text = str(err.value)
    assert f"registry {fake.host} refused the manifest of media type {refused}" in text
    assert f"PUT https://{fake.host}/v2/app/cache/manifests/latest" in text
    assert (
        f'MANIFEST_INVALID: manifest invalid (detail: "unsupported manifest media type {refused}")'
        in text
    )
    assert suggestion in text
    # with ignore-error the same failure is one warning that keeps the hint
    [lenient] = parse_cache_to(opts.text + ",ignore-error=true")
    with RegistryClient(send=fake, sleep=lambda _s: None) as client:
        result = export_cache(
            lenient, records, blobs=blob_store, image_diff_ids=image, client=client
        )
    assert result.warning is not None and refused in result.warning and suggestion in result.warning


# -- store_blob: the per-blob step of both exports ---------------------------------------------


def _hinted(data: bytes, *repos: str) -> Descriptor:
    from mason.digest import sha256_bytes

    hints = {"containerd.io/distribution.source.reg.example": ",".join(repos)} if repos else {}
    return Descriptor(mt.OCI_LAYER_GZIP, sha256_bytes(data), len(data), hints)


def _opener(data: bytes) -> object:
    import io

    return lambda: io.BytesIO(data)


def test_store_blob_mounts_from_the_best_candidate_else_uploads_in_the_declined_session(
    fake_registry: FakeRegistry,
) -> None:
    from mason.registry.push import push_blob as store_blob

    target = Reference.parse("reg.example/team/app")
    data = b"layer bytes"
    desc = _hinted(data, "other/x", "team/app-cache")
    fake_registry.blobs["team/app-cache"] = {desc.digest: data}
    # the repository sharing the longest path prefix with the target is tried first: one request
    assert store_blob(fake_registry, target, desc, _opener(data)) == "mounted"  # type: ignore[arg-type]
    assert [c[:2] for c in fake_registry.calls] == [("mount_blob", "team/app")]
    fake_registry.calls.clear()
    desc = _hinted(
        data, "team/app-cache"
    )  # one candidate: HEAD first, so a blob already there moves nothing
    assert store_blob(fake_registry, target, desc, _opener(data)) == "existing"  # type: ignore[arg-type]
    assert [c[0] for c in fake_registry.calls] == ["head_blob"]

    fake_registry.calls.clear()
    other = b"other bytes"
    desc = _hinted(
        other, "team/app-cache", "other/x"
    )  # nobody has it: one upload, in the mount's session
    assert store_blob(fake_registry, target, desc, _opener(other)) == "uploaded"  # type: ignore[arg-type]
    assert [c[0] for c in fake_registry.calls] == [
        "mount_blob",
        "head_blob",
        "mount_post",
        "push_blob",
    ]


def test_store_blob_uploads_when_the_mount_source_is_forbidden(
    fake_registry: FakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mason.registry.errors import RegistryError
    from mason.registry.push import push_blob as store_blob

    real = fake_registry.push_blob_outcome

    def refuse_mounts(
        ref: Reference,
        desc: Descriptor,
        opener: object,
        *,
        mount_from: str | None = None,
        ask_first: bool = True,
    ) -> str:
        if mount_from is not None:
            raise RegistryError(
                "denied: pull access to the mount source", status=403, operation="mount"
            )
        return real(ref, desc, opener, mount_from=None, ask_first=ask_first)  # type: ignore[arg-type]

    monkeypatch.setattr(fake_registry, "push_blob_outcome", refuse_mounts)
    data = b"private base"
    outcome = store_blob(
        fake_registry,
        Reference.parse("reg.example/app"),
        _hinted(data, "private/base"),
        _opener(data),
    )  # type: ignore[arg-type]
    assert outcome == "uploaded" and fake_registry.ops("push_blob")


def test_min_with_several_images_keeps_the_chains_of_all(blob_store: FakeBlobStore) -> None:
    """A multi-platform build passes one chain per platform's image: min mode keeps a result
    that any of them is made of (here the build stage stands for a second platform's image)."""
    from mason.cache.model import diff_id_of

    records, image = two_stage_build(blob_store)
    b2 = next(r for r in records if r.key == key("b2"))
    other = [diff_id_of(d) for d in b2.layers]
    plan = plan_export(
        records, mode="min", image_diff_ids=[image, other], blobs=blob_store, clock=make_clock()
    )  # type: ignore[arg-type]
    with_result = {r.digest for r in plan.config.records if r.has_result}
    assert with_result == {r.key for r in records}  # both chains: every record of this build
    one = plan_export(
        records, mode="min", image_diff_ids=[image], blobs=blob_store, clock=make_clock()
    )  # type: ignore[arg-type]
    assert {r.digest for r in one.config.records if r.has_result} == {
        key("from"),
        key("f1"),
        key("f2"),
    }


class _ConfigFirstRegistry(FakeRegistry):
    """Layer uploads wait (bounded) until the cache config was put: they only finish early
    when the config is stored beside them, not after them."""

    def __init__(self) -> None:
        super().__init__()
        self.config_put = threading.Event()
        self.layers_saw_config: list[bool] = []

    def push_blob_outcome(
        self,
        ref: Reference,
        desc: Descriptor,
        opener: Callable[[], BinaryIO],
        *,
        mount_from: str | None = None,
        ask_first: bool = True,
    ) -> Literal["exists", "mounted", "uploaded"]:
        if desc.media_type == mt.BUILDKIT_CACHE_CONFIG:
            self.config_put.set()
        else:
            self.layers_saw_config.append(self.config_put.wait(30.0))
        return super().push_blob_outcome(
            ref, desc, opener, mount_from=mount_from, ask_first=ask_first
        )


def test_the_cache_config_is_stored_beside_the_layers(blob_store: FakeBlobStore) -> None:
    registry = _ConfigFirstRegistry()
    records, image = two_stage_build(blob_store)
    [opts] = parse_cache_to(f"type=registry,ref={REF},mode=max")
    result = export_cache(
        opts, records, blobs=blob_store, image_diff_ids=image, client=registry, clock=make_clock()
    )  # type: ignore[arg-type]
    assert registry.layers_saw_config and all(registry.layers_saw_config)
    ops = [c[0] for c in registry.calls if c[0] in ("push_blob", "put_manifest")]
    assert ops[-1] == "put_manifest"  # still last: the cache is complete when it is seen
    assert len(result.uploaded) == len(registry.layers_saw_config) + 1
