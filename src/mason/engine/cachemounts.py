"""Cache mounts that outlive the machine (``--cache-to type=registry,…,cache-mounts=true``).

A build notes each ``RUN --mount=type=cache`` directory it uses (``CacheMounts.used``). At
export, each becomes one layer in the content store: a tar of the directory as it is, gzip'd,
so an unchanged directory is the same blob again (``CacheMounts.layers``). On a machine where
the directory does not exist yet, the first RUN that mounts it fills it from the first
imported cache that carries that id (``CacheMounts.restore``): only when that RUN actually
runs, under the mount's lock. Mounts seeded ``from=`` a stage or an image are their own cache
per source and are neither exported nor restored.
"""

from __future__ import annotations

import fcntl
import functools
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from mason.cache.model import CacheSource
from mason.digest import Digest
from mason.engine.blobs import Blobs
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.structs import Struct, field

__all__ = ["CacheMounts"]


class CacheMounts(Struct):
    #: the imported caches, in ``--cache-from`` order, whose mount layers ``restore`` uses
    sources: Sequence[CacheSource] = ()
    #: called with a line for the progress of the RUN that restored a mount
    note: Callable[[str], None] | None = None
    _dirs: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def used(self, cache_id: str, directory: Path, lock_file: Path) -> None:
        """A RUN mounted ``directory`` (its lock file beside it) as cache ``cache_id``."""
        with self._lock:
            self._dirs.setdefault(cache_id, (directory, lock_file))

    def restore(self, cache_id: str, dest: Path) -> str | None:
        """Fill the new, empty directory ``dest`` with cache ``cache_id`` from the first
        imported cache that has it; that cache's name, or None when none has it."""
        # the codecs and tar modules load when a cache mount is restored or exported, not for
        # every build (start-up, issue 14)
        from mason.compression.streams import open_decompressed
        from mason.layer.apply import apply_layer

        for source in self.sources:
            desc = source.mounts.get(cache_id)
            if desc is None:
                continue
            compression = mt.compression_of(desc.media_type)
            with source.provider.open_blob(desc) as blob:
                stream = open_decompressed(blob, compression, what=f"cache mount {cache_id}")
                apply_layer(stream, str(dest), mode="flat")
            return source.name
        return None

    def layers(self, blobs: Blobs) -> dict[str, Descriptor]:
        """Each used mount's contents as a gzip layer in the content store (under a shared
        lock, so no other build on this root changes it meanwhile): id -> descriptor."""
        with self._lock:
            dirs = dict(self._dirs)
        out: dict[str, Descriptor] = {}
        for cache_id, (directory, lock_file) in sorted(dirs.items()):
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                lr = blobs.store_layer(functools.partial(_tar_digest, str(directory)))
            finally:
                os.close(fd)
            out[cache_id] = blobs.descriptor(lr, oci=True, annotate=True)
        return out


def _tar_digest(directory: str, stream: BinaryIO) -> Digest:
    from mason.layer.diff import write_dir_tar

    return write_dir_tar(directory, stream).diff_id
