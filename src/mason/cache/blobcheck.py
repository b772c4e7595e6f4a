"""What can be checked about a cache's layer blob without reading it: that its first bytes
are what its media type says (gzip, zstd or a plain tar).

A cache's descriptors are claims. A blob copied registry to registry (a cross-repo mount,
the push of a lazy cache hit) is never read by mason, so a relabelled media type would go
into the image as is; the first ``MAGIC_BYTES`` of the blob are enough to catch it, at the
cost of one small ranged read.
"""

from __future__ import annotations

from mason.oci import mediatypes as mt

__all__ = ["MAGIC_BYTES", "compression_mismatch", "known_layer_compression", "sniff_compression"]

#: One tar header block: enough to tell a plain tar from anything else.
MAGIC_BYTES = 512

_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"
# zstd skippable frames (magic 0x184D2A50..5F, little endian): zstd:chunked may start with one
_ZSTD_SKIPPABLE = b"\x2a\x4d\x18"


def _tar_header(block: bytes) -> bool:
    """A valid tar header (its checksum matches) or the all-zero end-of-archive block."""
    if block == bytes(len(block)):
        return True
    field = block[148:156].split(b"\0", 1)[0].strip()
    try:
        stored = int(field, 8)
    except ValueError:
        return False
    # the checksum is computed with its own field as spaces; old tars summed signed bytes
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:512])
    signed = unsigned - 256 * sum(1 for b in block[:148] + block[156:512] if b > 127)
    return stored in (unsigned, signed)


def sniff_compression(head: bytes) -> str | None:
    """``gzip``, ``zstd`` or ``uncompressed`` (a tar) from a blob's first bytes; ``None`` when
    they are none of these. Fewer than ``MAGIC_BYTES`` bytes without a compression magic
    count as a tar (a truncated tar fails when it is unpacked, not here)."""
    if head.startswith(_GZIP):
        return "gzip"
    if head.startswith(_ZSTD) or (
        len(head) >= 4 and head[1:4] == _ZSTD_SKIPPABLE and head[0] & 0xF0 == 0x50
    ):
        return "zstd"
    if len(head) < MAGIC_BYTES or _tar_header(head[:MAGIC_BYTES]):
        return "uncompressed"
    return None


def known_layer_compression(media_type: str) -> str | None:
    """The compression of a layer media type mason can unpack, or ``None`` for any other type."""
    try:
        return mt.compression_of(media_type)
    except ValueError:
        return None


def compression_mismatch(media_type: str, head: bytes) -> str | None:
    """Why ``head`` (a blob's first bytes) cannot be a blob of ``media_type``, or ``None``."""
    claimed = known_layer_compression(media_type)
    if claimed is None:
        return f"its media type {media_type!r} is not a layer type mason can unpack"
    found = sniff_compression(head)
    if found == claimed:
        return None
    what = (
        f"{found} data"
        if found
        else f"neither gzip, zstd nor a tar (it starts with {head[:4].hex()})"
    )
    return f"its descriptor says {media_type} ({claimed}) but the blob is {what}"
