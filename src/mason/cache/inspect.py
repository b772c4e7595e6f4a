"""A summary of an imported cache for ``mason cache inspect`` (JSON-serialisable)."""

from __future__ import annotations

from typing import Any

from mason.cache.model import CacheSource
from mason.compression.annotations import ANNOTATION_TOC_DIGEST
from mason.oci import mediatypes as mt
from mason.oci.descriptor import ANNOTATION_UNCOMPRESSED, Descriptor

__all__ = ["describe_cache", "layer_compression"]


def layer_compression(desc: Descriptor) -> str:
    """``gzip``, ``zstd``, ``uncompressed``, ``estargz`` (gzip with a TOC annotation) or ``unknown``."""
    try:
        compression = mt.compression_of(desc.media_type)
    except ValueError:
        return "unknown"
    if compression == "gzip" and ANNOTATION_TOC_DIGEST in desc.annotations:
        return "estargz"
    return compression


def describe_cache(source: CacheSource) -> dict[str, Any]:
    """Records, results, layers (size, compression, parent), total size and, for caches mason
    wrote, the Dockerfile step of each record."""
    config = source.config
    layers = []
    for i, layer in enumerate(config.layers):
        desc = source.descriptors.get(layer.blob)
        layers.append(
            {
                "index": i,
                "digest": layer.blob,
                "parent": layer.parent,
                "size": desc.size if desc else None,
                "mediaType": desc.media_type if desc else None,
                "compression": layer_compression(desc) if desc else "missing",
                "diffID": desc.annotations.get(ANNOTATION_UNCOMPRESSED) if desc else None,
            }
        )
    results = []
    for rec in config.records:
        if not rec.has_result:
            continue
        hit = source.lookup(rec.digest)
        entry: dict[str, Any] = {"key": rec.digest, "usable": hit is not None}
        if hit is not None:
            entry["layers"] = len(hit.layers)
            entry["top"] = hit.layers[-1].digest
            entry["size"] = sum(d.size for d in hit.layers)
            entry["createdAt"] = hit.created_at
        step = config.steps.get(rec.digest)
        if step:
            entry["step"] = step
        results.append(entry)
    key_only = [
        {"key": r.digest, **({"step": config.steps[r.digest]} if r.digest in config.steps else {})}
        for r in config.records
        if not r.has_result
    ]
    total = sum(d.size for d in source.descriptors.values())
    out: dict[str, Any] = {
        "source": source.name,
        "form": source.form,
        "manifest": source.manifest.to_json() if source.manifest else None,
        "config": source.config_descriptor.to_json() if source.config_descriptor else None,
        "writtenBy": "mason" if config.steps else "unknown (no mason step annotations)",
        "records": len(config.records),
        "recordsWithResults": len(results),
        "layers": layers,
        "blobs": len(source.descriptors),
        "totalSize": total,
        "results": results,
        "keyOnly": key_only,
    }
    return out
