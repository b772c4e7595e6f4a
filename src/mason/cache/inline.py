"""Inline cache: records embedded in the image config under ``moby.buildkit.cache.v0``.

As BuildKit writes it (``cache/remotecache/inline``): only the ``records`` array, JSON,
then base64 (a Go ``[]byte``); a result's ``layer`` is a position in the image's own
layers (the chain ``[0..k]``), or ``chains`` with explicit image layer positions when
a result is not a prefix of the image. Always min mode.

``createdAt`` comes from the solved record or is Go's zero time, never the wall clock:
the value is part of the image config, and building twice must give the same image.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence

from mason.cache.backends import CacheBackend
from mason.cache.format import (
    ZERO_TIME,
    CacheConfig,
    CacheFormatError,
    CacheLayer,
    CacheRecord,
    CacheResult,
    ChainedResult,
    parse_records,
    records_to_json,
    validate_cache_config,
)
from mason.cache.model import (
    ANNOTATION_CREATED_AT,
    SolvedRecord,
    diff_id_of,
    index_records,
    input_links,
)
from mason.cache.options import CacheOptions
from mason.digest import Digest
from mason.oci.config import ImageConfig
from mason.oci.descriptor import ANNOTATION_UNCOMPRESSED, Descriptor
from mason.oci.manifest import ImageManifest

__all__ = [
    "ANNOTATION_DESCRIPTION",
    "BACKEND",
    "INLINE_CACHE_KEY",
    "decode_inline_records",
    "inline_cache_value",
    "inline_config_from_image",
]

INLINE_CACHE_KEY = "moby.buildkit.cache.v0"
ANNOTATION_DESCRIPTION = "buildkit/description"


def inline_cache_value(
    records: Sequence[SolvedRecord], image_diff_ids: Sequence[Digest]
) -> str | None:
    """The ``moby.buildkit.cache.v0`` value for an image whose layers have ``image_diff_ids``
    (base first), or ``None`` when no record has a result in this image."""
    image = tuple(image_diff_ids)
    position = {d: i for i, d in enumerate(image)}
    by_key, ordered = index_records(records)
    index_of = {k: i for i, k in enumerate(ordered)}
    out: list[CacheRecord] = []
    any_result = False
    for key in ordered:
        found = by_key.get(key)
        if found is None:
            out.append(CacheRecord(Digest(key)))
            continue
        rec = found
        results: tuple[CacheResult, ...] = ()
        chains: tuple[ChainedResult, ...] = ()
        created = rec.created_at or ZERO_TIME
        if rec.layers:
            diff_ids = tuple(diff_id_of(d) for d in rec.layers)
            if diff_ids == image[: len(diff_ids)]:
                results = (CacheResult(len(diff_ids) - 1, created),)
            elif all(d in position for d in diff_ids):
                chains = (
                    ChainedResult(tuple(position[d] for d in diff_ids if d is not None), created),
                )
        any_result = any_result or bool(results or chains)
        out.append(CacheRecord(rec.written_digest, results, chains, input_links(rec, index_of)))
    if not any_result:
        return None
    return base64.b64encode(records_to_json(out)).decode()


def decode_inline_records(value: object, *, what: str = "inline cache") -> tuple[CacheRecord, ...]:
    if not isinstance(value, str):
        raise CacheFormatError(f"{what}: {INLINE_CACHE_KEY} must be a base64 string")
    try:
        decoded = json.loads(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise CacheFormatError(f"{what}: {INLINE_CACHE_KEY} is not base64 JSON: {exc}") from exc
    try:
        return parse_records(decoded, what=what)
    except CacheFormatError as exc:
        raise CacheFormatError(f"{what}: {exc.message}") from exc


def inline_config_from_image(
    image_config: ImageConfig, manifest: ImageManifest
) -> tuple[CacheConfig, list[Descriptor]] | None:
    """The cache an image carries inline, as a config over the image's layers (a linear
    chain) plus the layer descriptors annotated with diff IDs; ``None`` without one.

    Raises ``CacheFormatError`` when the value is corrupt or the image's layer count and
    ``rootfs.diff_ids`` disagree (BuildKit: "invalid image with mismatching manifest and config").
    """
    value = image_config.data.get(INLINE_CACHE_KEY)
    if value is None:
        return None
    what = f"inline cache in image config {image_config.digest}"
    records = decode_inline_records(value, what=what)
    diff_ids = image_config.diff_ids
    if len(diff_ids) != len(manifest.layers):
        raise CacheFormatError(
            f"{what}: invalid image with mismatching manifest and config "
            f"({len(manifest.layers)} layers, {len(diff_ids)} diff_ids)"
        )
    history = [h for h in image_config.history if not h.empty_layer]
    layers = tuple(CacheLayer(layer.digest, i - 1) for i, layer in enumerate(manifest.layers))
    descs = []
    for i, layer in enumerate(manifest.layers):
        extra: dict[str, str] = {ANNOTATION_UNCOMPRESSED: diff_ids[i]}
        if i < len(history):
            if history[i].created:
                extra[ANNOTATION_CREATED_AT] = history[i].created or ""
            if history[i].created_by:
                extra[ANNOTATION_DESCRIPTION] = history[i].created_by or ""
        descs.append(layer.with_annotations(extra))
    config = CacheConfig(layers, records)
    validate_cache_config(config, what)
    return config, descs


# -- the backend (mason.cache.backends) ------------------------------------------------

#: ``--cache-to type=inline``: no attributes, no exporter of its own -- the image exporter
#: writes ``inline_cache_value`` into the config (``CacheBackend.in_image``); it is read back
#: through ``--cache-from type=registry,ref=IMAGE``, so it has no importer either
BACKEND = CacheBackend(
    "inline",
    display_name=lambda _o: "inline",
    destination=lambda _o: "inline",
    export_attrs=frozenset(),
    parse_to=lambda attrs, text, _images: CacheOptions(
        "inline", "to", text, dict(attrs), mode="min"
    ),
)
