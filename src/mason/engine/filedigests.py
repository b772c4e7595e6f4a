"""Digests of context files kept between builds on one root, so an unchanged file is not read
again (docs/cache-keys.md, "Not reading unchanged files").

An entry names one digest of one file (``kind``: BuildKit's per-file content checksum, or the
content's plain sha256) under the file's path below its context directory, with the ``lstat``
it was read under: device, inode, size, mtime, ctime and mode. It is used only when all of them
are unchanged and the file was not *racy* when it was recorded: as in git's index, a file whose
mtime or ctime is not safely older than the moment its stat was taken could change again within
the same timestamp tick without any of them changing, so such an entry is never kept (nor
trusted, should one be read). ctime cannot be set from user space: ``touch -d`` can put an
mtime back, never a ctime.

A context directory's entries are one row of the root's sqlite metadata
(``Metadata.file_digests``): read in one query on first use, and merged with what this build
read and replaced in one transaction by ``flush`` (after the solve), so a crash leaves the old
row or the new one. A row that does not decode, or any error reading it, is an empty cache: a
file is read, never trusted on a doubt.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mason.digest import Digest, new_sha256
from mason.engine.racy import file_identity, settled
from mason.errors import MasonError

__all__ = ["FileDigestCache", "RootDigests", "decode", "encode"]

#: One entry: dev, ino, size, mtime_ns, ctime_ns, mode, the digest's 32 bytes, recorded_ns.
_ENTRY = struct.Struct("<QQqqqQ32sq")
_MAGIC = b"mason.filedigests.v1\0"
_COUNT = struct.Struct("<I")
#: At most this many entries per context directory; past it the oldest recorded go.
MAX_ENTRIES = 200_000

#: (path below the context, kind) -> one packed ``_ENTRY``
Entries = dict[tuple[str, str], bytes]


def encode(entries: Entries) -> bytes:
    """The row's bytes: magic, the sha256 of the rest, count, the packed entries, then kind
    and path of each, NUL-separated (neither can hold a NUL)."""
    keys = list(entries)
    names = "\0".join(f"{kind}\0{path}" for path, kind in keys)
    body = b"".join(entries[k] for k in keys)
    rest = _COUNT.pack(len(keys)) + body + names.encode("utf-8", "surrogateescape")
    return _MAGIC + new_sha256(rest).digest() + rest


def decode(blob: Any) -> Entries:
    """The entries of a row ``encode`` wrote; ValueError for anything else (a changed byte
    anywhere fails the row's own sha256)."""
    if not isinstance(blob, bytes) or not blob.startswith(_MAGIC):
        raise ValueError("not a file digest row")
    check = len(_MAGIC)
    if new_sha256(blob[check + 32 :]).digest() != blob[check : check + 32]:
        raise ValueError("a damaged file digest row")
    start = check + 32 + _COUNT.size
    (count,) = _COUNT.unpack_from(blob, check + 32)
    end = start + count * _ENTRY.size
    names = blob[end:].decode("utf-8", "surrogateescape").split("\0") if count else []
    if len(blob) < end or len(names) != 2 * count:
        raise ValueError("a truncated file digest row")
    size = _ENTRY.size
    return {
        (path, kind): blob[start + i * size : start + (i + 1) * size]
        for i, (kind, path) in enumerate(zip(names[0::2], names[1::2], strict=True))
    }


class RootDigests:
    """The kept digests of one context directory: ``get`` and ``put`` by path below it.

    ``put`` takes ``since_ns``: the clock (``time.time_ns()``) read before the file's stat was
    taken; what it notes is checked and packed by ``FileDigestCache.flush``. Thread-safe."""

    def __init__(self, owner: FileDigestCache, path: Path) -> None:
        #: the context as the build names it (paths are relative to it) and as rows name it
        self.path = path
        self.root = str(path.resolve())
        #: what the host paths of files below ``path`` start with (``Path`` drops a "./")
        self.prefix = "" if str(path) == "." else f"{path}/"
        self._owner = owner
        self._lock = threading.Lock()
        self._kept: Entries | None = None
        self._loaded: bytes | None = None  # the row ``_kept`` was decoded from
        #: this build's reads that may be kept (``put``'s rules), packed as the kept entries:
        #: used by ``get`` at once (one read serves both kinds) and merged by ``flush``
        self._reads: Entries = {}

    def _entries(self) -> Entries:
        if self._kept is not None:
            return self._kept
        with self._lock:
            if self._kept is None:
                self._loaded, self._kept = self._owner._read(self.root)
            return self._kept

    def get(self, rel: str, kind: str, st: os.stat_result) -> Digest | None:
        """The digest of ``kind`` read by this build or kept for the file ``rel`` if it is
        still the file with the stat ``st`` (an ``lstat`` taken now), else None: read it."""
        packed = self._reads.get((rel, kind)) or self._entries().get((rel, kind))
        if packed is None:
            return None
        *identity, raw, recorded_ns = _ENTRY.unpack(packed)
        if tuple(identity) != file_identity(st) or not settled(st, recorded_ns):
            return None
        return Digest("sha256:" + raw.hex())

    def put(
        self,
        rel: str,
        kind: str,
        st: os.stat_result,
        digest: str,
        *,
        since_ns: int,
        after: os.stat_result,
    ) -> None:
        """Note ``digest`` for the file ``rel`` read under ``st`` (kept by ``flush``). Not
        noted: a file that changed while it was read (``after``, its ``fstat`` once read, is
        not ``st``) or a racy one (modified too close to ``since_ns``)."""
        identity = file_identity(st)
        keep = file_identity(after) == identity and settled(st, since_ns)
        if keep and digest.startswith("sha256:") and len(digest) == 71:
            packed = _ENTRY.pack(*identity, bytes.fromhex(digest[7:]), since_ns)
            self._reads[(rel, kind)] = packed  # a dict store is atomic
        else:
            self._reads.pop((rel, kind), None)  # an earlier read of it is no longer the file

    def _pending(self) -> Entries:
        """This build's entries, to be kept."""
        reads, self._reads = self._reads, {}
        return reads

    def _merge(self, kept: bytes | None, new: Entries) -> bytes:
        """The row to write: what is kept now (another build may have written since this one
        read it) with this build's entries over it."""
        if kept is not None and kept == self._loaded:  # no other build wrote it since
            entries = dict(self._kept or {})
        else:
            try:
                entries = decode(kept) if kept is not None else {}
            except (ValueError, struct.error):
                entries = {}
        entries.update(new)
        if len(entries) > MAX_ENTRIES:
            newest = sorted(entries, key=lambda k: _ENTRY.unpack(entries[k])[-1])
            entries = {k: entries[k] for k in newest[-MAX_ENTRIES:]}
        return encode(entries)


class FileDigestCache:
    """The file digests of one state root for one build: ``for_root(context)`` per context
    directory, ``flush()`` once at the end. ``meta_of`` gives the root's ``Metadata`` (None
    keeps nothing), asked for when a digest is first wanted (a cold build's metadata is still
    being created when the build's parts are put together: issue 14)."""

    def __init__(self, meta_of: Callable[[], Any]) -> None:
        self._meta_of = meta_of
        self._roots: dict[str, RootDigests] = {}
        self._lock = threading.Lock()

    def for_root(self, root: str | os.PathLike[str]) -> RootDigests:
        """The digests of the files below ``root`` (named by their path relative to it)."""
        key = os.fspath(root)
        with self._lock:
            if key not in self._roots:
                self._roots[key] = RootDigests(self, Path(key))
            return self._roots[key]

    def _read(self, root: str) -> tuple[bytes | None, Entries]:
        """The row kept for ``root`` and its entries (None and none when it does not decode)."""
        meta = self._meta_of()
        if meta is None:
            return None, {}
        try:
            blob = meta.file_digests(root)
            return (blob, decode(blob)) if blob is not None else (None, {})
        except (sqlite3.Error, MasonError, ValueError, struct.error):
            return None, {}  # an unreadable cache is an empty one

    def flush(self) -> None:
        """Write what this build read; a metadata error loses the cache, never the build."""
        with self._lock:
            roots = list(self._roots.values())
        for rd in roots:
            new = rd._pending()
            if new and (meta := self._meta_of()) is not None:
                with contextlib.suppress(sqlite3.Error, MasonError):
                    meta.update_file_digests(rd.root, functools.partial(rd._merge, new=new))
