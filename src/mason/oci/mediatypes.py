"""Media type constants for OCI and Docker documents and layers."""

from __future__ import annotations

__all__ = [
    "BUILDKIT_CACHE_CONFIG",
    "DOCKER_CONFIG",
    "DOCKER_FOREIGN_LAYER",
    "DOCKER_FOREIGN_LAYER_GZIP",
    "DOCKER_LAYER",
    "DOCKER_LAYER_GZIP",
    "DOCKER_LAYER_ZSTD",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "INDEX_MEDIA_TYPES",
    "LAYER_MEDIA_TYPES",
    "MANIFEST_MEDIA_TYPES",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_NONDIST",
    "OCI_LAYER_NONDIST_GZIP",
    "OCI_LAYER_NONDIST_ZSTD",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "SINGLE_MANIFEST_MEDIA_TYPES",
    "compression_of",
    "is_index",
    "is_layer",
    "is_manifest",
    "layer_media_type",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# containerd-defined, not in Docker's spec; BuildKit writes it for zstd with oci-mediatypes=false.
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

BUILDKIT_CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"

SINGLE_MANIFEST_MEDIA_TYPES: tuple[str, ...] = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_MEDIA_TYPES: tuple[str, ...] = (OCI_INDEX, DOCKER_MANIFEST_LIST)
#: Every manifest type mason reads, for the registry ``Accept`` header.
MANIFEST_MEDIA_TYPES: tuple[str, ...] = (
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
)

_COMPRESSION: dict[str, str] = {
    OCI_LAYER: "uncompressed",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_NONDIST: "uncompressed",
    OCI_LAYER_NONDIST_GZIP: "gzip",
    OCI_LAYER_NONDIST_ZSTD: "zstd",
    DOCKER_LAYER: "uncompressed",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_ZSTD: "zstd",
    DOCKER_FOREIGN_LAYER: "uncompressed",
    DOCKER_FOREIGN_LAYER_GZIP: "gzip",
}
LAYER_MEDIA_TYPES: tuple[str, ...] = tuple(_COMPRESSION)


def layer_media_type(compression: str, oci: bool = True) -> str:
    """The layer media type for ``compression`` (a name of ``mason.compression.kinds``: its
    media-type suffix; eStargz is gzip on the wire, only annotations and the footer tell it apart)."""
    from mason.compression.errors import CompressionError
    from mason.compression.kinds import get_compression

    try:
        suffix = get_compression(compression).media_suffix
    except CompressionError:
        raise ValueError(f"unknown layer compression {compression!r}") from None
    # Docker's types spell the suffix with a dot (…diff.tar.gzip)
    return OCI_LAYER + suffix if oci else DOCKER_LAYER + suffix.replace("+", ".")


def compression_of(media_type: str) -> str:
    """ "uncompressed", "gzip" or "zstd" for a layer media type; ValueError otherwise.

    Unknown ``+gzip`` / ``+zstd`` / ``.gzip`` / ``.zstd`` suffixes are recognised too,
    so artifact layers with their own types still decompress.
    """
    base = media_type.split(";", 1)[0].strip()
    found = _COMPRESSION.get(base)
    if found is not None:
        return found
    if base.endswith(("+gzip", ".gzip")):
        return "gzip"
    if base.endswith(("+zstd", ".zstd")):
        return "zstd"
    if base.endswith((".tar", "+tar")) or base == "application/x-tar":
        return "uncompressed"
    raise ValueError(f"media type {media_type!r} is not a known layer type")


def is_manifest(media_type: str) -> bool:
    return media_type in SINGLE_MANIFEST_MEDIA_TYPES


def is_index(media_type: str) -> bool:
    return media_type in INDEX_MEDIA_TYPES


def is_layer(media_type: str) -> bool:
    return media_type in _COMPRESSION
