"""Image manifests and indexes (OCI and Docker v2 schema 2) that keep their raw bytes.

Digests are always of ``raw``; a parsed document is never re-serialised for
hashing. ``build_*`` produce compact JSON in Go's field order, so the same
inputs give byte-identical documents.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor, RawDocument
from mason.oci.errors import ManifestError
from mason.oci.platform import Platform
from mason.structs import Struct, field

__all__ = [
    "ImageIndex",
    "ImageManifest",
    "build_index",
    "build_manifest",
    "dump_json",
    "parse_index",
    "parse_manifest",
]


def dump_json(value: Any) -> bytes:
    """Compact JSON in insertion order, UTF-8: how mason writes every document."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class _TypedDocument(RawDocument):
    __slots__ = ()
    media_type: str

    def descriptor(
        self, *, platform: Platform | None = None, annotations: Mapping[str, str] | None = None
    ) -> Descriptor:
        return Descriptor(
            self.media_type, self.digest, len(self.raw), dict(annotations or {}), platform
        )


class ImageManifest(_TypedDocument, Struct, frozen=True):
    raw: bytes
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    artifact_type: str | None = None

    __hash__ = RawDocument.__hash__

    @property
    def is_docker(self) -> bool:
        return self.media_type == mt.DOCKER_MANIFEST


class ImageIndex(_TypedDocument, Struct, frozen=True):
    raw: bytes
    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    artifact_type: str | None = None

    __hash__ = RawDocument.__hash__

    @property
    def is_docker(self) -> bool:
        return self.media_type == mt.DOCKER_MANIFEST_LIST

    def for_platform(self, platform: Platform) -> Descriptor | None:
        """The image manifest entry that fits ``platform`` best, as containerd's
        ``platforms.Only`` orders them (``Platform.rank``); the first in the index on a tie."""
        best: tuple[int, Descriptor] | None = None
        for d in self.manifests:
            rank = platform.rank(d.platform) if d.platform is not None else None
            if rank is not None and (best is None or rank < best[0]):
                best = (rank, d)
        return best[1] if best else None


def _annotations(doc: Mapping[str, Any], where: str) -> dict[str, str]:
    value = doc.get("annotations") or {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ManifestError(f"{where}: annotations must map strings to strings")
    return dict(value)


def _load(raw: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{where}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _media_type(doc: Mapping[str, Any], content_type: str | None, where: str) -> str:
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestError(f"{where}: mediaType must be a string")
    header = content_type.split(";", 1)[0].strip() if content_type else None
    if header in ("", "application/json", "text/plain", "application/octet-stream"):
        header = None
    if declared:
        if declared not in mt.MANIFEST_MEDIA_TYPES:
            if doc.get("schemaVersion") == 1 or "schema1" in declared:
                raise ManifestError(
                    f"{where}: Docker schema 1 manifests are not supported",
                    hint="push the image again with a current client (schema 2 / OCI)",
                )
            raise ManifestError(f"{where}: unknown manifest media type {declared!r}")
        return declared
    if doc.get("schemaVersion") == 1:
        raise ManifestError(f"{where}: Docker schema 1 manifests are not supported")
    if header in mt.MANIFEST_MEDIA_TYPES:
        return header
    # OCI allows an absent mediaType (BuildKit's index.json omits it): infer from shape.
    if "manifests" in doc:
        return mt.OCI_INDEX
    if "config" in doc or "layers" in doc:
        return mt.OCI_MANIFEST
    raise ManifestError(
        f"{where}: neither a manifest nor an index (no mediaType, config or manifests)"
    )


def parse_manifest(
    raw: bytes, content_type: str | None = None, *, where: str = "manifest"
) -> ImageManifest | ImageIndex:
    """Parse ``raw`` as an OCI/Docker manifest or index; ``ManifestError`` on anything else.

    ``content_type`` (the registry's header) is used when the document omits
    ``mediaType``. Size limits are the caller's job.
    """
    doc = _load(raw, where)
    media_type = _media_type(doc, content_type, where)
    version = doc.get("schemaVersion")
    if version != 2:
        raise ManifestError(f"{where}: schemaVersion must be 2, got {version!r}")
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestError(f"{where}: artifactType must be a string")
    subject = (
        Descriptor.from_json(doc["subject"], where=f"{where}: subject")
        if doc.get("subject") is not None
        else None
    )
    if mt.is_index(media_type):
        manifests = _descriptors(doc, "manifests", where)
        return ImageIndex(
            raw, media_type, manifests, _annotations(doc, where), subject, artifact_type or None
        )
    if "config" not in doc:
        raise ManifestError(f"{where}: image manifest has no config descriptor")
    config = Descriptor.from_json(doc["config"], where=f"{where}: config")
    layers = _descriptors(doc, "layers", where)
    return ImageManifest(
        raw, media_type, config, layers, _annotations(doc, where), subject, artifact_type or None
    )


def _descriptors(doc: Mapping[str, Any], key: str, where: str) -> tuple[Descriptor, ...]:
    """The descriptor list under ``key`` (absent or null: empty)."""
    entries = doc.get(key)
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise ManifestError(f"{where}: {key} must be a list")
    return tuple(
        Descriptor.from_json(e, where=f"{where}: {key}[{i}]") for i, e in enumerate(entries)
    )


def parse_index(raw: bytes, content_type: str | None = None, *, where: str = "index") -> ImageIndex:
    """Like ``parse_manifest`` but requires an index."""
    parsed = parse_manifest(raw, content_type, where=where)
    if not isinstance(parsed, ImageIndex):
        raise ManifestError(f"{where}: expected an image index, got {parsed.media_type}")
    return parsed


def build_manifest(
    config: Descriptor,
    layers: Sequence[Descriptor],
    media_type: str = mt.OCI_MANIFEST,
    annotations: Mapping[str, str] | None = None,
    *,
    subject: Descriptor | None = None,
    artifact_type: str | None = None,
) -> ImageManifest:
    """A manifest document with deterministic bytes (Go's field order, compact, sorted annotations)."""
    if media_type not in mt.SINGLE_MANIFEST_MEDIA_TYPES:
        raise ManifestError(f"build_manifest: {media_type!r} is not an image manifest media type")
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type}
    if artifact_type:
        doc["artifactType"] = artifact_type
    doc["config"] = config.to_json()
    doc["layers"] = [layer.to_json() for layer in layers]
    return ImageManifest(
        _dump_document(doc, subject, annotations),
        media_type,
        config,
        tuple(layers),
        dict(annotations or {}),
        subject,
        artifact_type,
    )


def build_index(
    manifests: Iterable[Descriptor],
    media_type: str = mt.OCI_INDEX,
    annotations: Mapping[str, str] | None = None,
    *,
    subject: Descriptor | None = None,
    artifact_type: str | None = None,
    include_media_type: bool = True,
) -> ImageIndex:
    """An index document with deterministic bytes. ``include_media_type=False`` writes
    no top-level ``mediaType`` (BuildKit's ``index.json`` style)."""
    if media_type not in mt.INDEX_MEDIA_TYPES:
        raise ManifestError(f"build_index: {media_type!r} is not an index media type")
    entries = tuple(manifests)
    doc: dict[str, Any] = {"schemaVersion": 2}
    if include_media_type:
        doc["mediaType"] = media_type
    if artifact_type:
        doc["artifactType"] = artifact_type
    doc["manifests"] = [d.to_json() for d in entries]
    return ImageIndex(
        _dump_document(doc, subject, annotations),
        media_type,
        entries,
        dict(annotations or {}),
        subject,
        artifact_type,
    )


def _dump_document(
    doc: dict[str, Any], subject: Descriptor | None, annotations: Mapping[str, str] | None
) -> bytes:
    """``doc`` with the trailing ``subject`` and (sorted) ``annotations`` fields, as bytes."""
    if subject is not None:
        doc["subject"] = subject.to_json()
    if annotations:
        doc["annotations"] = {k: annotations[k] for k in sorted(annotations)}
    return dump_json(doc)
