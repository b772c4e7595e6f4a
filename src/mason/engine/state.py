"""Local state in ``$MASON_ROOT``: content store, sqlite metadata, process lock.

Layout of a root (the root and mason's directories 0700, its files 0600; a root made by an
older mason is tightened when opened)::

    lock                 fcntl lock file (shared while building, exclusive to prune/clean)
    meta.db              sqlite3: results, blobs, compressed variants, snapshots
    blobs/sha256/<hex>   content-addressed blobs (layers, configs, manifests)
    tmp/                 temp files; renamed into place or removed; leftovers cleaned on start
    snapshots/           snapshot directories (managed by mason.layer through engine.snapshots)
    cachemounts/         RUN --mount=type=cache directories (each with the mode= it asks for)
    cachemount-locks/    flock files of the cache mounts

Crash consistency: every blob is written to ``tmp/`` then fsynced and renamed;
metadata changes are sqlite transactions; a blob row is only written after the
blob is in place, so a crash leaves at worst an unreferenced file that the next
exclusive ``clean`` (start of a build when no other process holds the root, or
``prune``) removes.

The three concerns are three modules: ``mason.engine.stateroot`` (the root and its lock),
``mason.engine.metadata`` (the sqlite rows) and ``mason.engine.contentstore`` (the blobs,
written by ``mason.oci.cas``). This module keeps the names many call sites import.
"""

from __future__ import annotations

from mason.engine.contentstore import ContentStore, StateError
from mason.engine.metadata import BlobInfo, CachedResult, LayerRef, Metadata
from mason.engine.stateroot import StateRoot, UsageEntry, human_size, parse_size

__all__ = [
    "BlobInfo",
    "CachedResult",
    "ContentStore",
    "LayerRef",
    "Metadata",
    "StateError",
    "StateRoot",
    "UsageEntry",
    "human_size",
    "parse_size",
]
