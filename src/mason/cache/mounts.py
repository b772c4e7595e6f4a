"""Cache mounts in a registry cache (``--cache-to …,cache-mounts=true``): the contents of each
``RUN --mount=type=cache`` directory a build used, by ``id``, as one compressed,
content-addressed layer, listed in a small index (``MOUNTS_INDEX_MEDIA_TYPE``).

The index and the mount layers ride in the cache manifest beside the cache's own layers
(annotated, so mason tells them apart); BuildKit's importer puts every listed blob in its
descriptor map and looks up only the ones its cache config names, so it ignores them. A
mount whose contents did not change is the same blob again, which the registry already has.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from mason.cache.format import CacheFormatError
from mason.digest import sha256_bytes
from mason.oci.descriptor import Descriptor
from mason.oci.errors import OCIError

__all__ = [
    "MOUNTS_INDEX_MEDIA_TYPE",
    "MOUNT_ID_ANNOTATION",
    "index_descriptor",
    "is_mount_entry",
    "mount_layer",
    "mounts_index",
    "parse_mounts_index",
]

MOUNTS_INDEX_MEDIA_TYPE = "application/vnd.mason.cachemounts.v1+json"
#: on a mount's layer descriptor in the cache manifest: the mount's ``id``
MOUNT_ID_ANNOTATION = "dev.mason.cache-mount.id"
#: an index larger than this is not read
MAX_INDEX_SIZE = 1 << 20


def is_mount_entry(desc: Descriptor) -> bool:
    """The index or a mount layer: not a layer of the cache's own records."""
    return desc.media_type == MOUNTS_INDEX_MEDIA_TYPE or MOUNT_ID_ANNOTATION in desc.annotations


def mounts_index(mounts: Mapping[str, Descriptor]) -> bytes:
    """The index document: mount id -> its layer descriptor, sorted (deterministic bytes)."""
    doc = {
        "mediaType": MOUNTS_INDEX_MEDIA_TYPE,
        "mounts": {i: mounts[i].to_json() for i in sorted(mounts)},
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def index_descriptor(raw: bytes) -> Descriptor:
    return Descriptor(MOUNTS_INDEX_MEDIA_TYPE, sha256_bytes(raw), len(raw))


def parse_mounts_index(raw: bytes, what: str) -> dict[str, Descriptor]:
    try:
        doc = json.loads(raw)
        mounts = doc["mounts"]
        if not isinstance(mounts, dict):
            raise TypeError("mounts is not an object")
        return {
            str(i): Descriptor.from_json(d, where=f"{what} mount {i}") for i, d in mounts.items()
        }
    except (ValueError, KeyError, TypeError, OCIError) as exc:
        raise CacheFormatError(f"{what}: unreadable cache-mounts index: {exc}") from exc


def mount_layer(cache_id: str, layer: Descriptor) -> Descriptor:
    """``layer`` as listed in the cache manifest: annotated with its mount's id."""
    return layer.with_annotations({MOUNT_ID_ANNOTATION: cache_id})
