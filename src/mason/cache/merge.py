"""Merging an export with what its destination already holds, so that builders sharing one
cache ref add to it instead of replacing each other's records (buildx#1044, #1142: with
BuildKit the last writer of a ref wins).

The union is taken on the cache graph itself: the other cache's layers and records are
appended to this build's, results whose blobs the destination no longer lists are dropped,
layers no result reaches are dropped, and ``normalize_cache_config`` merges what is equal
(same blob and parent chain, same record digest and links) and keeps each record's newest
result. The result is the cache a BuildKit importer reads as any other: records it does not
know are simply never looked up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from datetime import datetime

from mason.cache.format import (
    CacheConfig,
    CacheInput,
    CacheLayer,
    CacheRecord,
    CacheResult,
    ChainedResult,
    normalize_cache_config,
    serialize_cache_config,
)
from mason.cache.model import CacheSource, ExportPlan
from mason.cache.retention import prune_config, stamp_last_used, without_unreached_layers
from mason.digest import Digest
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.structs import replace

__all__ = [
    "merge_export",
    "missing_records",
    "plan_for",
    "retain",
    "stamped",
    "wants_merge",
]


def _media_type(desc: Descriptor, oci: bool) -> str:
    """The layer's media type, in the export's family (OCI or Docker); unknown ones pass."""
    try:
        return mt.layer_media_type(mt.compression_of(desc.media_type), oci)
    except ValueError:
        return desc.media_type


def wants_merge(option: bool | None, prior: CacheSource) -> bool:
    """``merge=`` as given; unset, merge into a cache mason wrote (it names its steps or
    their last use) or into an empty ref (several first builds may be writing it at once),
    and replace a cache another tool wrote, as BuildKit does."""
    if option is not None:
        return option
    mason_wrote = bool(prior.config.steps or prior.config.last_used)  # fields only mason writes
    return prior.manifest is None or mason_wrote


def _shifted(rec: CacheRecord, layer_offset: int, record_offset: int) -> CacheRecord:
    return CacheRecord(
        rec.digest,
        tuple(CacheResult(r.layer + layer_offset, r.created_at) for r in rec.results),
        tuple(
            ChainedResult(tuple(i + layer_offset for i in c.layers), c.created_at)
            for c in rec.chains
        ),
        tuple(
            tuple(CacheInput(link.link + record_offset, link.selector) for link in inp)
            for inp in rec.inputs
        ),
    )


def _without_unlisted(config: CacheConfig, listed: Mapping[Digest, Descriptor]) -> CacheConfig:
    """``config`` without the results whose chains hold a blob ``listed`` lacks."""

    def usable(indexes: Sequence[int]) -> bool:
        return all(config.layers[i].blob in listed for i in indexes)

    records = tuple(
        CacheRecord(
            rec.digest,
            tuple(r for r in rec.results if usable(config.chain(r.layer))),
            tuple(c for c in rec.chains if usable(c.layers)),
            rec.inputs,
        )
        for rec in config.records
    )
    return replace(config, records=records)


def merge_export(
    plan: ExportPlan, other: CacheSource, alive: Set[Digest], *, oci_mediatypes: bool
) -> ExportPlan:
    """``plan`` united with ``other`` (the cache at the destination, as just read), whose
    results on blobs not in ``alive`` (gone from the repository) are left out."""
    listed = {d: desc for d, desc in other.descriptors.items() if d in alive}
    theirs = _without_unlisted(other.config, listed)
    ours = plan.config
    layers = ours.layers + tuple(
        CacheLayer(layer.blob, layer.parent + len(ours.layers) if layer.parent >= 0 else -1)
        for layer in theirs.layers
    )
    records = ours.records + tuple(
        _shifted(rec, len(ours.layers), len(ours.records)) for rec in theirs.records
    )
    steps = {**theirs.steps, **ours.steps}
    last_used = {**theirs.last_used, **ours.last_used}
    explain = {**theirs.explain, **ours.explain}
    union = CacheConfig(layers, records, steps, last_used, explain)
    merged = normalize_cache_config(without_unreached_layers(normalize_cache_config(union)))
    descriptors: dict[Digest, Descriptor] = {}
    for desc in listed.values():
        media_type = _media_type(desc, oci_mediatypes)
        descriptors[desc.digest] = Descriptor(media_type, desc.digest, desc.size, desc.annotations)
    descriptors.update({d.digest: d for d in plan.layers})  # ours win: same bytes, our dates
    return plan_for(merged, descriptors, plan.blobs)


def plan_for(
    config: CacheConfig, descriptors: Mapping[Digest, Descriptor], own: Sequence[Descriptor]
) -> ExportPlan:
    """The export plan of a normalised ``config``: a descriptor per layer, and the blobs to
    store (``own``, with their mount hints, for this build's; the listed ones for the rest)."""
    out_layers = tuple(descriptors[layer.blob] for layer in config.layers)
    reached = {layer.blob for layer in config.layers}
    blobs = {d.digest: d for d in own if d.digest in reached}
    for layer in config.layers:
        blobs.setdefault(layer.blob, descriptors[layer.blob])
    return ExportPlan(
        config, serialize_cache_config(config), out_layers, tuple(blobs[d] for d in sorted(blobs))
    )


def retain(plan: ExportPlan, keep_duration: float, now: datetime) -> ExportPlan:
    """``plan`` without the records unused for ``keep_duration`` seconds (``keep-duration=``)."""
    sizes = {d.digest: d.size for d in plan.layers}
    pruned = prune_config(plan.config, sizes, now, keep_duration=keep_duration)
    if pruned.dropped == 0:
        return plan
    return plan_for(pruned.config, {d.digest: d for d in plan.layers}, plan.blobs)


def stamped(plan: ExportPlan, earlier: Mapping[str, str], now: str) -> ExportPlan:
    """``plan`` (this build's records) with their last use stamped (``stamp_last_used``)."""
    config = stamp_last_used(plan.config, earlier, now)
    return replace(plan, config=config, config_raw=serialize_cache_config(config))


def missing_records(ours: CacheConfig, stored: CacheConfig) -> int:
    """How many of our records with a result ``stored`` has no result for (0: a concurrent
    writer already merged ours; a newer result for the same record counts as there)."""
    have = {rec.digest for rec in stored.records if rec.has_result}
    return sum(1 for rec in ours.records if rec.has_result and rec.digest not in have)
