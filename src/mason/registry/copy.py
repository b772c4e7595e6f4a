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
from dataclasses import dataclass, field
from typing import BinaryIO, cast

from mason.digest import Digest, sha256_bytes
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.layout import OCILayout
from mason.oci.reference import Reference
from mason.registry.client import RegistryClient
from mason.registry.errors import RegistryError
from mason.registry.push import push_blob

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


@dataclass(frozen=True)
class RegistryEndpoint:
    ref: Reference

    def __str__(self) -> str:
        return str(self.ref)


@dataclass(frozen=True)
class LayoutEndpoint:
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


@dataclass
class CopyStats:
    root: Descriptor | None = None
    manifests: int = 0
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_existing: int = 0
    bytes_uploaded: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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


def read_manifest_raw(client: RegistryClient, src: Endpoint, digest: Digest | None = None) -> tuple[bytes, str, Digest]:
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


def copy_image(client: RegistryClient, src: Endpoint, dst: Endpoint) -> CopyStats:
    stats = CopyStats()
    src_layout = OCILayout.open(src.path) if isinstance(src, LayoutEndpoint) else None
    dst_layout = _open_layout(dst.path, create=True) if isinstance(dst, LayoutEndpoint) else None
    mount_from: list[str] = []
    if isinstance(src, RegistryEndpoint) and isinstance(dst, RegistryEndpoint) and src.ref.registry == dst.ref.registry:
        mount_from = [src.ref.repository]
    seen_blobs: set[Digest] = set()
    lock = threading.Lock()

    def copy_blob(desc: Descriptor) -> None:
        if isinstance(dst, RegistryEndpoint):
            opener: Callable[[], BinaryIO]
            if isinstance(src, RegistryEndpoint):
                src_ref = src.ref
                opener = lambda: client.open_blob_stream(src_ref, desc)  # noqa: E731
            else:
                assert src_layout is not None
                layout = src_layout
                opener = lambda: cast(BinaryIO, layout.open_blob(desc))  # noqa: E731
            outcome = push_blob(client, dst.ref, desc, opener, mount_from=mount_from)
            stats.count(outcome, desc.size)
            return
        assert dst_layout is not None
        if dst_layout.has_blob(desc.digest):
            stats.count("exists", desc.size)
            return
        if isinstance(src, RegistryEndpoint):
            client.fetch_blob(src.ref, desc, dst_layout.blob_path(desc.digest))
        else:
            assert src_layout is not None
            with src_layout.open_blob(desc) as reader:
                dst_layout.put_blob_stream(reader, desc.media_type, desc.digest, desc.size)  # type: ignore[arg-type]
        stats.count("uploaded", desc.size)

    def copy_manifest(digest: Digest | None, tag: str | None) -> Descriptor:
        raw, media_type, got = read_manifest_raw(client, src, digest)
        children, blobs = _children(raw, media_type)
        for child in children:
            copy_manifest(child.digest, None)
        todo = []
        with lock:
            for blob in blobs:
                if blob.digest not in seen_blobs:
                    seen_blobs.add(blob.digest)
                    todo.append(blob)
        client.map_bounded(copy_blob, todo)
        desc = Descriptor(media_type, got, len(raw))
        if isinstance(dst, RegistryEndpoint):
            target = dst.ref.with_tag(tag) if tag else dst.ref.with_digest(got)
            pushed = client.put_manifest(target, raw, media_type)
            if pushed != sha256_bytes(raw):
                raise RegistryError(f"manifest digest changed in transit to {dst}", operation=f"copy {src} to {dst}")
        else:
            assert dst_layout is not None
            dst_layout.put_blob_bytes(raw, media_type)
            if tag:
                dst_layout.add_manifest(desc, ref_name=tag)
        stats.manifests += 1
        return desc

    if isinstance(dst, RegistryEndpoint):
        root_tag = dst.ref.tag
    else:
        src_tag = src.ref.tag if isinstance(src, RegistryEndpoint) else src.tag
        root_tag = dst.tag or src_tag or "latest"
    root_digest = src.ref.digest if isinstance(src, RegistryEndpoint) else None
    stats.root = copy_manifest(root_digest, root_tag)
    return stats
