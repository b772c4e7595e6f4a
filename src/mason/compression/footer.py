"""The eStargz footer: the last 51 bytes of an eStargz blob (47 in the legacy stargz form),
an empty gzip member whose extra field carries the TOC's offset and ``STARGZ``. Read on its
own, it tells a plain gzip blob from an eStargz one without loading the eStargz reader
(``mason.compression.estargz``), which a build with no eStargz never needs."""

from __future__ import annotations

import re
import struct
import zlib

from mason.compression.errors import EStargzError

__all__ = ["FOOTER_SIZE", "LEGACY_FOOTER_SIZE", "parse_footer"]

FOOTER_SIZE = 51
LEGACY_FOOTER_SIZE = 47

_FOOTER_PATTERN = re.compile(rb"^([0-9a-f]{16})STARGZ$")


def parse_footer(tail: bytes) -> tuple[int, int]:
    """``(toc_offset, footer_size)`` from the last bytes of a blob (51 suffice).

    Accepts the eStargz footer and the legacy 47-byte stargz footer."""
    if len(tail) >= FOOTER_SIZE:
        f = tail[-FOOTER_SIZE:]
        if (
            f[:4] == b"\x1f\x8b\x08\x04"
            and struct.unpack("<H", f[10:12])[0] == 26
            and f[12:14] == b"SG"
            and struct.unpack("<H", f[14:16])[0] == 22
        ):
            m = _FOOTER_PATTERN.match(f[16:38])
            if m and _is_empty_gzip(f):
                return int(m.group(1), 16), FOOTER_SIZE
    if len(tail) >= LEGACY_FOOTER_SIZE:
        f = tail[-LEGACY_FOOTER_SIZE:]
        if f[:4] == b"\x1f\x8b\x08\x04" and struct.unpack("<H", f[10:12])[0] == 22:
            m = _FOOTER_PATTERN.match(f[12:34])
            if m and _is_empty_gzip(f):
                return int(m.group(1), 16), LEGACY_FOOTER_SIZE
    raise EStargzError(
        "not an eStargz blob: bad footer (the last 51 bytes are not an empty gzip member "
        "carrying the TOC offset and 'STARGZ')",
        reference="estargz-bad-footer",
    )


def _is_empty_gzip(member: bytes) -> bool:
    try:
        d = zlib.decompressobj(31)
        return d.decompress(member) == b"" and d.eof and not d.unused_data
    except zlib.error:
        return False
