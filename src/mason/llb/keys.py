"""Cache keys around the cache maps: record digests, content roots, source keys.

BuildKit v0.32.2 (``solver/cachekey.go``, ``source/containerimage``,
``source/http``) names each exported cache record by
``sha256("<cache map digest>@<output index>")``; the record does not include its
inputs, which are carried by the record's input links. A content checksum of an
input's selected files becomes a root record of its own at output ``-1``, named
from the digest of the NUL-joined checksums (``content_root``). An image source
has two keys: the resolved manifest with the platform, and the chain ID of the
config's layers.
"""

from __future__ import annotations

from collections.abc import Sequence

from mason.digest import Digest, sha256_bytes
from mason.llb import pb
from mason.llb.cachemap import CacheMap, Selector, source_cache_map
from mason.llb.contenthash import ContentTree
from mason.llb.gojson import go_json
from mason.structs import Struct

__all__ = [
    "ContentRoot",
    "chain_id",
    "content_key",
    "content_root",
    "http_source_key",
    "image_source_keys",
    "record_digest",
]

#: The output index of a content-checksum root record.
CONTENT_OUTPUT = -1


def record_digest(cache_map_digest: str, output: int) -> Digest:
    """The exported record's digest: ``sha256("<digest>@<output>")``."""
    return sha256_bytes(f"{cache_map_digest}@{output}".encode())


class ContentRoot(Struct, frozen=True):
    """A content key: the digest-list preimage, its digest, and the root record it names."""

    preimage: bytes
    digest: Digest
    record: Digest


def content_root(checksums: Sequence[str]) -> ContentRoot:
    """One input's content key from its selectors' checksums (``NewContentHashFunc``)."""
    preimage = b"\0".join(c.encode() for c in checksums)
    dgst = sha256_bytes(preimage)
    return ContentRoot(preimage, dgst, record_digest(dgst, CONTENT_OUTPUT))


def content_key(tree: ContentTree, selectors: Sequence[Selector]) -> ContentRoot:
    """An input's content key: its selectors' checksums over ``tree`` (``NewContentHashFunc``).

    ``selectors`` are the input's ``Dep.content`` from its consumer's cache map (no
    selectors: the whole tree). ``tree`` is what the input *is*:
    ``ContentTree.for_context`` for the build context, ``ContentTree.for_snapshot`` for
    any other op's result (a stage copied with ``COPY --from``, a bind mount's source, a
    heredoc's mkfile output, a download). The root record ``ContentRoot.record`` is then
    linked as that input of the consumer's record, next to the input's own key.
    Raises ``ChecksumError`` when a selected path is missing.
    """
    chosen = selectors or (Selector(""),)
    return content_root([tree.checksum(sel) for sel in chosen])


class _ManifestKey(Struct, frozen=True):
    digest: str
    platform: pb.Platform
    layer_limit: int | None

    def go_json_fields(self) -> tuple[tuple[str, object, bool], ...]:
        return (
            ("Digest", self.digest, False),
            ("OS", self.platform.os, False),
            ("Arch", self.platform.architecture, False),
            ("Variant", self.platform.variant, True),
            ("OSVersion", self.platform.os_version, True),
            ("OSFeatures", self.platform.os_features, True),
            ("Limit", self.layer_limit, True),
        )


def chain_id(diff_ids: Sequence[str]) -> Digest:
    """The OCI chain ID of a layer stack: ``sha256(parent + " " + diff_id)`` down the stack."""
    if not diff_ids:
        raise ValueError("a chain ID needs at least one layer")
    chain = diff_ids[0]
    for diff_id in diff_ids[1:]:
        chain = sha256_bytes(f"{chain} {diff_id}".encode())
    return Digest(chain)


def image_source_keys(
    manifest_digest: str,
    platform: pb.Platform,
    diff_ids: Sequence[str],
    layer_limit: int | None = None,
) -> tuple[CacheMap, CacheMap]:
    """Both cache maps of an image source: the manifest for the platform, then the layers' chain ID.

    The first map's preimage is the source string; the manifest key's own JSON
    preimage is ``image_manifest_key_json``.
    """
    manifest_key = sha256_bytes(image_manifest_key_json(manifest_digest, platform, layer_limit))
    limited = list(diff_ids if layer_limit is None else diff_ids[:layer_limit])
    return source_cache_map(manifest_key), source_cache_map(chain_id(limited))


def image_manifest_key_json(
    manifest_digest: str, platform: pb.Platform, layer_limit: int | None = None
) -> bytes:
    return go_json(_ManifestKey(manifest_digest, platform, layer_limit))


class _HTTPKey(Struct, frozen=True):
    filename: str
    perm: int
    uid: int
    gid: int
    checksum: str

    def go_json_fields(self) -> tuple[tuple[str, object, bool], ...]:
        return (
            ("Filename", self.filename, False),
            ("Perm", self.perm, False),
            ("UID", self.uid, False),
            ("GID", self.gid, False),
            ("Checksum", self.checksum, False),
            ("LastModTime", "", True),
            ("AuthHeaderSecret", "", True),
            ("Header", None, True),
        )


def http_source_key_json(
    filename: str, checksum: str, perm: int = 0, uid: int = 0, gid: int = 0
) -> bytes:
    """The JSON BuildKit hashes for an HTTP source pinned by ``--checksum`` (nothing fetched)."""
    return go_json(_HTTPKey(filename, perm, uid, gid, checksum))


def http_source_key(
    filename: str, checksum: str, perm: int = 0, uid: int = 0, gid: int = 0
) -> CacheMap:
    return source_cache_map(sha256_bytes(http_source_key_json(filename, checksum, perm, uid, gid)))
