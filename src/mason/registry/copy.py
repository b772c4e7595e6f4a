"""Copy an image, index or cache manifest between registries and OCI layouts.

Children first, manifests last: blobs in parallel (bounded by the client's
``max_workers``), child manifests by digest, the root by tag. Within one
registry blobs are cross-repo mounted, never re-uploaded; blobs the target
already has are skipped.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import BinaryIO, cast

from mason.digest import Digest, sha256_bytes
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.layout import OCILayout
from mason.oci.reference import Reference
from mason.registry.client import RegistryClient
from mason.registry.errors import RegistryError
from mason.registry.push import push_blob
from mason.structs import Struct, field, repr_without

__all__ = [
    "CopyStats",
    "Endpoint",
    "LayoutEndpoint",
    "RegistryEndpoint",
    "copy_image",
    "parse_endpoint",
    "read_manifest_raw",
]

_MANIFEST_TYPES = frozenset(mt.MANIFEST_MEDIA_TYPES)


class RegistryEndpoint(Struct, frozen=True):
    ref: Reference

    def __str__(self) -> str:
        return str(self.ref)


class LayoutEndpoint(Struct, frozen=True):
    path: str
    tag: str | None = None

    def __str__(self) -> str:
        return f"oci-layout://{self.path}" + (f":{self.tag}" if self.tag else "")


Endpoint = RegistryEndpoint | LayoutEndpoint


def parse_endpoint(text: str) -> Endpoint:
    """``oci-layout://DIR[:TAG]``, ``docker://REF`` or a plain image reference."""
    if text.startswith("oci-layout://"):
        rest = text[len("oci-layout://") :]
        path, sep, tag = rest.rpartition(":")
        if sep and path and "/" not in tag and tag:
            return LayoutEndpoint(path, tag)
        return LayoutEndpoint(rest, None)
    if text.startswith("docker://"):
        text = text[len("docker://") :]
    return RegistryEndpoint(Reference.parse(text))


class CopyStats(Struct):
    root: Descriptor | None = None
    manifests: int = 0
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_existing: int = 0
    bytes_uploaded: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    __repr__ = repr_without("_lock")

    def count(self, outcome: str, size: int) -> None:
        with self._lock:
            if outcome == "uploaded":
                self.blobs_uploaded += 1
                self.bytes_uploaded += size
            elif outcome == "mounted":
                self.blobs_mounted += 1
            else:
                self.blobs_existing += 1


def _open_layout(path: str, create: bool) -> OCILayout:
    try:
        return OCILayout.open(path)
    except Exception:
        if not create:
            raise
        return OCILayout.create(path)


def read_manifest_raw(
    client: RegistryClient, src: Endpoint, digest: Digest | None = None
) -> tuple[bytes, str, Digest]:
    """Raw bytes, media type and digest of ``src``'s root (or of ``digest`` within it)."""
    if isinstance(src, RegistryEndpoint):
        ref = src.ref.with_digest(digest) if digest else src.ref
        fetched = client.fetch_manifest(ref)
        return fetched.raw, fetched.media_type, fetched.digest
    layout = OCILayout.open(src.path)
    desc = layout.resolve(digest or src.tag)
    raw = layout.read_blob(desc)
    return raw, desc.media_type, desc.digest


def _children(raw: bytes, media_type: str) -> tuple[list[Descriptor], list[Descriptor]]:
    """(child manifests, blobs) a manifest document references."""
    doc = json.loads(raw)
    manifests: list[Descriptor] = []
    blobs: list[Descriptor] = []
    if not isinstance(doc, dict):
        return manifests, blobs
    if "manifests" in doc:
        for entry in doc.get("manifests") or []:
            desc = Descriptor.from_json(entry)
            (manifests if desc.media_type in _MANIFEST_TYPES else blobs).append(desc)
    else:
        if isinstance(doc.get("config"), dict):
            blobs.append(Descriptor.from_json(doc["config"]))
        blobs.extend(Descriptor.from_json(e) for e in doc.get("layers") or [])
    if isinstance(doc.get("subject"), dict):
        pass  # the subject is another image: not copied along
    return manifests, blobs


class _Copy:
    """One ``copy_image``: the endpoints, their open layouts, the blobs already taken care of."""

    def __init__(self, client: RegistryClient, src: Endpoint, dst: Endpoint) -> None:
        self.client = client
        self.src = src
        self.dst = dst
        self.stats = CopyStats()
        self.src_layout = OCILayout.open(src.path) if isinstance(src, LayoutEndpoint) else None
        self.dst_layout = (
            _open_layout(dst.path, create=True) if isinstance(dst, LayoutEndpoint) else None
        )
        self.mount_from: list[str] = []
        if (
            isinstance(src, RegistryEndpoint)
            and isinstance(dst, RegistryEndpoint)
            and src.ref.registry == dst.ref.registry
        ):
            self.mount_from = [src.ref.repository]
        self._seen_blobs: set[Digest] = set()
        self._lock = threading.Lock()

    def _opener(self, desc: Descriptor) -> Callable[[], BinaryIO]:
        """Opens ``desc``'s bytes at the source."""
        if isinstance(self.src, RegistryEndpoint):
            src_ref = self.src.ref
            return lambda: self.client.open_blob_stream(src_ref, desc)
        assert self.src_layout is not None
        layout = self.src_layout
        return lambda: cast(BinaryIO, layout.open_blob(desc))

    def copy_blob(self, desc: Descriptor) -> None:
        if isinstance(self.dst, RegistryEndpoint):
            outcome = push_blob(
                self.client, self.dst.ref, desc, self._opener(desc), mount_from=self.mount_from
            )
            self.stats.count(outcome, desc.size)
            return
        dst_layout = self.dst_layout
        assert dst_layout is not None
        if dst_layout.has_blob(desc.digest):
            self.stats.count("exists", desc.size)
            return
        if isinstance(self.src, RegistryEndpoint):
            self.client.fetch_blob(self.src.ref, desc, dst_layout.blob_path(desc.digest))
        else:
            assert self.src_layout is not None
            with self.src_layout.open_blob(desc) as reader:
                dst_layout.put_blob_stream(reader, desc.media_type, desc.digest, desc.size)  # type: ignore[arg-type]
        self.stats.count("uploaded", desc.size)

    def copy_manifest(self, digest: Digest | None, tag: str | None) -> Descriptor:
        """Copy a manifest (children and blobs first), by ``tag`` or else by digest."""
        raw, media_type, got = read_manifest_raw(self.client, self.src, digest)
        children, blobs = _children(raw, media_type)
        for child in children:
            self.copy_manifest(child.digest, None)
        todo = []
        with self._lock:
            for blob in blobs:
                if blob.digest not in self._seen_blobs:
                    self._seen_blobs.add(blob.digest)
                    todo.append(blob)
        self.client.map_bounded(self.copy_blob, todo)
        desc = Descriptor(media_type, got, len(raw))
        self._put_manifest(desc, raw, tag)
        self.stats.manifests += 1
        return desc

    def _put_manifest(self, desc: Descriptor, raw: bytes, tag: str | None) -> None:
        if isinstance(self.dst, RegistryEndpoint):
            target = self.dst.ref.with_tag(tag) if tag else self.dst.ref.with_digest(desc.digest)
            pushed = self.client.put_manifest(target, raw, desc.media_type)
            if pushed != sha256_bytes(raw):
                raise RegistryError(
                    f"manifest digest changed in transit to {self.dst}",
                    operation=f"copy {self.src} to {self.dst}",
                )
            return
        assert self.dst_layout is not None
        self.dst_layout.put_blob_bytes(raw, desc.media_type)
        if tag:
            self.dst_layout.add_manifest(desc, ref_name=tag)


def copy_image(client: RegistryClient, src: Endpoint, dst: Endpoint) -> CopyStats:
    copy = _Copy(client, src, dst)
    if isinstance(dst, RegistryEndpoint):
        root_tag = dst.ref.tag
    else:
        src_tag = src.ref.tag if isinstance(src, RegistryEndpoint) else src.tag
        root_tag = dst.tag or src_tag or "latest"
    root_digest = src.ref.digest if isinstance(src, RegistryEndpoint) else None
    copy.stats.root = copy.copy_manifest(root_digest, root_tag)
    return copy.stats
