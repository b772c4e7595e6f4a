"""Content descriptors (OCI image spec "descriptor")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mason.digest import Digest, DigestError, parse_digest, sha256_bytes
from mason.oci.errors import ManifestError
from mason.oci.platform import Platform, PlatformError
from mason.structs import Struct, field, replace

__all__ = [
    "ANNOTATION_REF_NAME",
    "ANNOTATION_UNCOMPRESSED",
    "DISTRIBUTION_SOURCE_PREFIX",
    "Descriptor",
    "RawDocument",
]

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_UNCOMPRESSED = "containerd.io/uncompressed"
#: + a registry host: the repositories of that registry known to hold the blob (containerd's
#: hint, which BuildKit writes too); a push mounts from them instead of uploading
DISTRIBUTION_SOURCE_PREFIX = "containerd.io/distribution.source."


class RawDocument:
    """A document that keeps the bytes it was read or written as: digest and size are of
    ``raw``, never of a re-serialisation. The frozen structs using it (a mixin: no fields,
    no ``__dict__``) say ``__hash__ = RawDocument.__hash__``, their hash being of ``raw``."""

    __slots__ = ()
    raw: bytes

    def __hash__(self) -> int:
        return hash(self.raw)

    @property
    def digest(self) -> Digest:
        return sha256_bytes(self.raw)

    @property
    def size(self) -> int:
        return len(self.raw)


class Descriptor(Struct, frozen=True):
    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str | None = None

    def __hash__(self) -> int:
        # annotations is a dict; identity of content is digest + size + type.
        return hash((self.media_type, self.digest, self.size))

    def to_json(self) -> dict[str, Any]:
        """JSON object in the field order Go's ocispec writes (deterministic output)."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = {k: self.annotations[k] for k in sorted(self.annotations)}
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @classmethod
    def from_json(cls, value: Any, *, where: str = "descriptor") -> Descriptor:
        """Parse a descriptor object; raises ``ManifestError`` naming ``where`` on bad input."""
        if not isinstance(value, Mapping):
            raise ManifestError(f"{where}: expected a JSON object, got {type(value).__name__}")
        media_type = value.get("mediaType", "")
        digest = value.get("digest")
        size = value.get("size")
        if not isinstance(media_type, str):
            raise ManifestError(f"{where}: mediaType must be a string")
        if not isinstance(digest, str):
            raise ManifestError(f"{where}: missing digest")
        try:
            parsed = parse_digest(digest)
        except DigestError as exc:
            raise ManifestError(f"{where}: {exc.message}") from exc
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{where}: size must be a non-negative integer, got {size!r}")
        annotations = value.get("annotations") or {}
        if not isinstance(annotations, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise ManifestError(f"{where}: annotations must map strings to strings")
        platform = None
        if value.get("platform") is not None:
            try:
                platform = Platform.from_json(value["platform"])
            except PlatformError as exc:
                raise ManifestError(f"{where}: {exc.message}") from exc
        urls = value.get("urls") or ()
        if not isinstance(urls, list | tuple) or not all(isinstance(u, str) for u in urls):
            raise ManifestError(f"{where}: urls must be a list of strings")
        artifact_type = value.get("artifactType")
        return cls(
            media_type,
            parsed,
            size,
            dict(annotations),
            platform,
            tuple(urls),
            artifact_type if isinstance(artifact_type, str) and artifact_type else None,
        )

    def with_annotations(self, extra: Mapping[str, str]) -> Descriptor:
        merged = dict(self.annotations)
        merged.update(extra)
        return replace(self, annotations=merged)

    @property
    def ref_name(self) -> str | None:
        return self.annotations.get(ANNOTATION_REF_NAME)
