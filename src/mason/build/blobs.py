"""Layer blobs: where each layer's bytes are (content store, a remote repository), and
its compressed variants, so nothing is compressed twice and nothing is downloaded
before it is needed.

A layer is known by its diff ID (sha256 of the uncompressed tar). Its blobs are
recorded in the metadata as variants ``(diff_id, compression, level) -> blob``.
A blob may be only *remote*: known to exist in some repository (an imported
cache, a base image); ``ensure_local`` downloads it on first need.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from mason.build.state import BlobInfo, LayerRef, StateError, StateRoot
from mason.compression import compress_stream, open_decompressed
from mason.digest import Digest
from mason.oci import mediatypes as mt
from mason.oci.descriptor import ANNOTATION_UNCOMPRESSED, Descriptor
from mason.oci.reference import Reference

__all__ = ["Blobs", "HashingWriter", "RemoteLocation"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteLocation:
    """Where a blob can be had: a repository (``ref``; tag/digest ignored, also used for
    cross-repo mounts) and/or an ``opener`` (an imported cache's lazy blob stream)."""

    ref: Reference | None
    media_type: str
    size: int
    opener: Callable[[], AbstractContextManager[BinaryIO]] | None = field(default=None, compare=False)


class HashingWriter:
    """A write-only stream that hashes (sha256) and counts what passes through to ``inner``."""

    def __init__(self, inner: IO[bytes] | BinaryIO) -> None:
        self._inner = inner
        self._h = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        b = bytes(data)
        self._h.update(b)
        self.size += len(b)
        self._inner.write(b)
        return len(b)

    def flush(self) -> None:
        self._inner.flush()

    @property
    def digest(self) -> Digest:
        return Digest("sha256:" + self._h.hexdigest())


class Blobs:
    """Layer blobs of one build. ``client`` is a ``mason.registry`` client (or None offline)."""

    def __init__(self, state: StateRoot, client: Any | None = None) -> None:
        self.state = state
        self.client = client
        self._lock = threading.Lock()
        self._remote: dict[Digest, list[RemoteLocation]] = {}
        self._diff_ids: dict[Digest, Digest] = {}
        self._fetch_locks: dict[Digest, threading.Lock] = {}
        self.downloaded: list[Digest] = []

    # remote knowledge -----------------------------------------------------------

    def add_remote(self, blob: Digest, diff_id: Digest | None, location: RemoteLocation) -> None:
        with self._lock:
            locs = self._remote.setdefault(blob, [])
            if location.ref is None or all(
                    loc.ref is None or str(loc.ref.repository_ref) != str(location.ref.repository_ref) for loc in locs):
                locs.append(location)
            if diff_id is not None:
                self._diff_ids[blob] = diff_id

    def remote_locations(self, blob: Digest) -> list[RemoteLocation]:
        with self._lock:
            return list(self._remote.get(blob, ()))

    def has_local(self, blob: Digest) -> bool:
        return self.state.store.has(blob)

    # storing new layers -----------------------------------------------------------

    def store_layer(self, write_tar: Callable[[BinaryIO], Digest], compression: str = "gzip",
                    level: int | None = None) -> LayerRef:
        """Run ``write_tar(stream)`` (it writes an uncompressed layer tar and returns its diff ID)
        through the compressor into the content store, in one pass."""
        store = self.state.store
        f, tmp = store.temp_file()
        try:
            with f:
                hw = HashingWriter(f)
                if compression == "uncompressed":
                    diff_id = write_tar(hw)  # type: ignore[arg-type]
                else:
                    from mason.compression import open_compressor

                    comp = open_compressor(hw, compression, level)  # type: ignore[arg-type]
                    diff_id = write_tar(comp)
                    comp.close()
            blob = hw.digest
            if not store.has(blob):
                store.commit_file(tmp, blob)
        finally:
            tmp.unlink(missing_ok=True)
        media = mt.layer_media_type(compression, True)
        info = BlobInfo(blob, hw.size, media)
        self.state.meta.put_blob(info)
        self.state.meta.put_variant(diff_id, compression, level, info)
        return LayerRef(diff_id, blob, hw.size, media)

    # getting bytes --------------------------------------------------------------

    def ensure_local(self, lr: LayerRef) -> LayerRef:
        """Make sure some blob of this layer is in the content store (download if only remote)."""
        if lr.blob is not None and self.has_local(lr.blob):
            return lr
        for comp, _level, info in self.state.meta.variants_of(lr.diff_id):
            if self.has_local(info.digest):
                del comp
                return LayerRef(lr.diff_id, info.digest, info.size, info.media_type)
        if lr.blob is None:
            raise StateError(f"layer {lr.diff_id} has no blob to fetch", reference="blob-missing")
        self._download(lr.blob, lr.diff_id)
        return lr

    def _download(self, blob: Digest, diff_id: Digest) -> None:
        with self._lock:
            lock = self._fetch_locks.setdefault(blob, threading.Lock())
        with lock:
            if self.has_local(blob):
                return
            locs = self.remote_locations(blob)
            if not locs:
                raise StateError(f"blob {blob} is neither in the content store nor in a known repository",
                                 reference="blob-missing")
            last: Exception | None = None
            for loc in locs:
                desc = Descriptor(loc.media_type, blob, loc.size)
                try:
                    if loc.opener is not None:
                        cm = loc.opener()
                    elif loc.ref is not None and self.client is not None:
                        cm = self.client.open_blob(loc.ref, desc)
                    else:
                        continue
                    with cm as stream:
                        self.state.store.put_stream(stream, expected=blob)
                except Exception as exc:  # try the next location
                    last = exc
                    continue
                info = BlobInfo(blob, loc.size, loc.media_type)
                self.state.meta.put_blob(info)
                self.state.meta.put_variant(diff_id, mt.compression_of(loc.media_type), None, info)
                with self._lock:
                    self.downloaded.append(blob)
                return
            if last is None:
                raise StateError(f"blob {blob}: no way to fetch it", reference="blob-missing")
            raise last

    def open_uncompressed(self, lr: LayerRef) -> BinaryIO:
        """The layer's tar stream (verified blob, decompressed). Caller closes."""
        lr = self.ensure_local(lr)
        assert lr.blob is not None
        reader = self.state.store.open(lr.blob)
        comp = mt.compression_of(lr.media_type) if lr.media_type else "gzip"
        if comp == "uncompressed":
            return reader
        return open_decompressed(reader, comp)

    # variants for export ---------------------------------------------------------

    def variant(self, lr: LayerRef, compression: str, level: int | None, force: bool) -> LayerRef:
        """A blob of this layer in ``compression``: an existing one (local or remote) unless ``force``
        asks for exactly that level, else compressed now (once) and recorded."""
        if not force and lr.blob is not None and lr.media_type and mt.compression_of(lr.media_type) == compression:
            return lr
        for comp, lvl, info in self.state.meta.variants_of(lr.diff_id):
            if comp == compression and (not force or level is None or lvl == level) and self.has_local(info.digest):
                return LayerRef(lr.diff_id, info.digest, info.size, info.media_type)
        if not force and lr.blob is not None and not lr.media_type:
            return lr
        # Recompress: needs the bytes.
        src = self.open_uncompressed(lr)
        store = self.state.store
        f, tmp = store.temp_file()
        try:
            with f, src:
                hw = HashingWriter(f)
                compress_stream(src, hw, compression, level)  # type: ignore[arg-type]
            blob = hw.digest
            if not store.has(blob):
                store.commit_file(tmp, blob)
        finally:
            tmp.unlink(missing_ok=True)
        info = BlobInfo(blob, hw.size, mt.layer_media_type(compression, True))
        self.state.meta.put_blob(info)
        self.state.meta.put_variant(lr.diff_id, compression, level, info)
        return LayerRef(lr.diff_id, blob, hw.size, info.media_type)

    def descriptor(self, lr: LayerRef, *, oci: bool, annotate: bool = False) -> Descriptor:
        """The layer's descriptor; ``annotate`` adds ``containerd.io/uncompressed`` (cache manifests)."""
        assert lr.blob is not None
        comp = mt.compression_of(lr.media_type) if lr.media_type else "gzip"
        return Descriptor(mt.layer_media_type(comp, oci), lr.blob, lr.blob_size,
                          annotations={ANNOTATION_UNCOMPRESSED: lr.diff_id} if annotate else {})

    def opener(self, lr: LayerRef) -> Callable[[], BinaryIO]:
        def _open() -> BinaryIO:
            local = self.ensure_local(lr)
            assert local.blob is not None
            return self.state.store.open(local.blob, local.blob_size or None)

        return _open
