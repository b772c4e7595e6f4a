"""In-memory fakes for the cache tests: a registry behind ``CacheRegistry`` and a content store
behind ``ExportBlobStore``."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO, Literal, TypeVar

import zstandard

from mason.cache.model import SolvedRecord
from mason.digest import Digest, VerifyingReader, sha256_bytes
from mason.oci import mediatypes as mt
from mason.oci.descriptor import ANNOTATION_UNCOMPRESSED, Descriptor
from mason.oci.manifest import ImageIndex, ImageManifest, parse_manifest
from mason.oci.reference import Reference
from mason.registry.errors import RegistryError, RegistryNotFoundError

T = TypeVar("T")
R = TypeVar("R")


class FakeRegistry:
    """Blobs per repository and tags, in memory; records every call in ``calls``."""

    def __init__(self) -> None:
        self.blobs: dict[str, dict[str, bytes]] = {}
        self.manifests: dict[str, dict[str, tuple[bytes, str]]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.fail_puts = False
        self.deny_reads: set[str] = set()
        #: (repository, digest) put through this fake by an upload or a mount, as the client keeps
        self.put: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def _log(self, op: str, repo: str, what: str) -> None:
        with self._lock:
            self.calls.append((op, repo, what))

    def ops(self, op: str) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[0] == op]

    def get_manifest(self, ref: Reference) -> ImageManifest | ImageIndex:
        self._log("get_manifest", ref.repository, ref.identifier)
        if ref.repository in self.deny_reads:
            raise RegistryError(
                "authentication required", status=401, operation=f"get manifest {ref}"
            )
        try:
            raw, media_type = self.manifests[ref.repository][ref.identifier]
        except KeyError:
            raise RegistryNotFoundError(
                "manifest unknown", status=404, operation=f"get manifest {ref}"
            ) from None
        return parse_manifest(raw, media_type)

    def head_manifest(self, ref: Reference) -> Descriptor | None:
        self._log("head_manifest", ref.repository, ref.identifier)
        if ref.repository in self.deny_reads:
            raise RegistryError(
                "authentication required", status=401, operation=f"check manifest {ref}"
            )
        found = self.manifests.get(ref.repository, {}).get(ref.identifier)
        if found is None:
            return None
        return Descriptor(found[1], sha256_bytes(found[0]), len(found[0]))

    def names(self, ref: Reference, digest: Digest) -> bool:
        found = self.head_manifest(ref)  # a fake has no mirrors
        return found is not None and found.digest == digest

    def map_bounded(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        return [fn(item) for item in items]

    def put_manifest(self, ref: Reference, manifest_raw: bytes, media_type: str) -> Digest:
        self._log("put_manifest", ref.repository, ref.identifier)
        if self.fail_puts:
            raise RegistryError(
                "denied: requested access to the resource is denied",
                status=403,
                operation=f"push manifest {ref}",
            )
        digest = sha256_bytes(manifest_raw)
        repo = self.manifests.setdefault(ref.repository, {})
        repo[ref.identifier] = (manifest_raw, media_type)
        repo[digest] = (manifest_raw, media_type)
        return digest

    def delete_manifest(self, ref: Reference, digest: Digest) -> None:
        self._log("delete_manifest", ref.repository, digest)
        repo = self.manifests.get(ref.repository, {})
        for ident in [i for i, (raw, _t) in repo.items() if sha256_bytes(raw) == digest]:
            del repo[ident]

    @contextmanager
    def open_blob(self, ref: Reference, desc: Descriptor) -> Iterator[BinaryIO]:
        self._log("get_blob", ref.repository, desc.digest)
        data = self.blobs.get(ref.repository, {}).get(desc.digest)
        if data is None:
            raise RegistryNotFoundError(
                "blob unknown", status=404, operation=f"get blob {desc.digest}"
            )
        yield VerifyingReader(io.BytesIO(data), desc.digest, desc.size)  # type: ignore[misc]

    def blob_exists(self, ref: Reference, digest: Digest, *, for_push: bool = False) -> bool:
        self._log("check_blob", ref.repository, digest)
        return digest in self.blobs.get(ref.repository, {})

    def peek_blob(self, ref: Reference, desc: Descriptor, n: int) -> bytes | None:
        """A ranged GET of the first ``n`` bytes (``None``: 404)."""
        self._log("peek_blob", ref.repository, desc.digest)
        data = self.blobs.get(ref.repository, {}).get(desc.digest)
        return None if data is None else data[:n]

    def push_blob(self, ref: Reference, desc: Descriptor, opener: Callable[[], BinaryIO]) -> bool:
        self._log("head_blob", ref.repository, desc.digest)
        if desc.digest in self.blobs.get(ref.repository, {}):
            return False
        self._upload(ref, desc, opener)
        return True

    def mount_blob(self, ref: Reference, digest: Digest, from_repository: str) -> bool:
        self._log("mount_blob", ref.repository, digest)
        return self._mount(ref, digest, from_repository)

    def open_upload_ahead(self, ref: Reference) -> None:
        self._log("open_upload_ahead", ref.repository, "")

    def keep_upload_ahead(self, ref: Reference) -> None:
        self._log("keep_upload_ahead", ref.repository, "")

    def stop_upload_ahead(self, ref: Reference) -> None:
        self._log("stop_upload_ahead", ref.repository, "")

    def put_repositories(self, registry: str, digest: Digest) -> list[str]:
        with self._lock:
            return sorted({repo for repo, d in self.put if d == digest})

    def _mount(self, ref: Reference, digest: Digest, from_repository: str) -> bool:
        data = self.blobs.get(from_repository, {}).get(digest)
        if data is None:
            return False
        with self._lock:
            self.blobs.setdefault(ref.repository, {})[digest] = data
            self.put.append((ref.repository, digest))
        return True

    def push_blob_outcome(
        self,
        ref: Reference,
        desc: Descriptor,
        opener: Callable[[], BinaryIO],
        *,
        mount_from: str | None = None,
        ask_first: bool = True,
    ) -> Literal["exists", "mounted", "uploaded"]:
        """Like the real client: HEAD (unless not ``ask_first``), then a mount POST whose
        refusal opens the upload session."""
        if ask_first:
            self._log("head_blob", ref.repository, desc.digest)
            if desc.digest in self.blobs.get(ref.repository, {}):
                return "exists"
        if mount_from is not None:
            self._log("mount_post", ref.repository, desc.digest)
            if self._mount(ref, desc.digest, mount_from):
                return "mounted"
        self._upload(ref, desc, opener)
        return "uploaded"

    def _upload(self, ref: Reference, desc: Descriptor, opener: Callable[[], BinaryIO]) -> None:
        with opener() as f:
            data = f.read()
        assert sha256_bytes(data) == desc.digest and len(data) == desc.size
        self._log("push_blob", ref.repository, desc.digest)
        with self._lock:
            self.blobs.setdefault(ref.repository, {})[desc.digest] = data
            self.put.append((ref.repository, desc.digest))


class FakeBlobStore:
    """Layers by diff ID with their uncompressed bytes; compresses on request, once."""

    def __init__(self) -> None:
        self.tars: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self.compressions: list[tuple[str, str]] = []

    def add_layer(self, content: bytes, compression: str = "gzip") -> Descriptor:
        diff_id = sha256_bytes(content)
        self.tars[diff_id] = content
        return self._compress(diff_id, compression)

    def _compress(self, diff_id: str, compression: str) -> Descriptor:
        tar = self.tars[diff_id]
        if compression == "gzip":
            data = gzip.compress(tar, mtime=0)
        elif compression == "zstd":
            data = zstandard.ZstdCompressor().compress(tar)
        else:
            data = tar
        digest = sha256_bytes(data)
        if digest not in self.blobs:
            self.compressions.append((diff_id, compression))
        self.blobs[digest] = data
        return Descriptor(
            mt.layer_media_type(compression), digest, len(data), {ANNOTATION_UNCOMPRESSED: diff_id}
        )

    def cache_blob(
        self, layer: Descriptor, compression: str, level: int | None, force: bool
    ) -> Descriptor:
        if not force and mt.compression_of(layer.media_type) != "uncompressed":
            return layer
        return self._compress(layer.annotations[ANNOTATION_UNCOMPRESSED], compression)

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        return io.BytesIO(self.blobs[desc.digest])


def key(name: str) -> Digest:
    """A stand-in for a solver key."""
    return Digest("sha256:" + hashlib.sha256(name.encode()).hexdigest())


# -- shared fixtures of the export tests (test_cache_export, test_cache_hit_checks) --------

REF = "127.0.0.1:5000/app-cache"


def make_clock() -> object:
    counter = itertools.count(1)
    return lambda: f"2026-01-01T00:00:{next(counter):02d}Z"


def two_stage_build(store: FakeBlobStore) -> tuple[list[SolvedRecord], list[Digest]]:
    """base -> build stage (2 RUNs) ; base -> final stage (COPY --from, RUN). Image = final chain."""
    base = store.add_layer(b"base-tar")
    b1 = store.add_layer(b"build-run-1")
    b2 = store.add_layer(b"build-run-2")
    f1 = store.add_layer(b"final-copy")
    f2 = store.add_layer(b"final-run")
    records = [
        SolvedRecord(key("from"), (), (base,), step="[build 1/3] FROM base"),
        SolvedRecord(key("b1"), (key("from"),), (base, b1), step="[build 2/3] RUN one"),
        SolvedRecord(key("b2"), (key("b1"),), (base, b1, b2), step="[build 3/3] RUN two"),
        SolvedRecord(
            key("f1"), (key("from"), key("b2")), (base, f1), step="[stage-1 2/3] COPY --from=build"
        ),
        SolvedRecord(key("f2"), (key("f1"),), (base, f1, f2), step="[stage-1 3/3] RUN three"),
    ]
    image = [Digest(d.annotations[ANNOTATION_UNCOMPRESSED]) for d in (base, f1, f2)]
    return records, image
