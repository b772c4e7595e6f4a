"""``tarfile``'s header parser, faster on the headers layers are made of (issue 14).

A layer read (unpacked, or indexed for a sparse base) spent half its Python time in
``TarInfo.frombuf``: a slice, a search and a decode per field, and two checksums by
``struct``. ``LayerTarInfo.frombuf`` reads the fields with one ``struct`` call and checks the
one checksum tar writers use; a header it does not take in full (a base-256 number, a
signed-char checksum, a GNU sparse entry, an end-of-archive block, anything malformed) goes
to the standard parser, which then decides and raises as it always did. Pass it as
``tarfile.open(..., tarinfo=LayerTarInfo)``.
"""

from __future__ import annotations

import struct
import tarfile
from typing import Self

__all__ = ["LayerTarInfo"]

# name mode uid gid size mtime chksum type linkname magic version uname gname devmajor
# devminor prefix (and 12 bytes of padding): the ustar header
_HEADER = struct.Struct("100s8s8s8s12s12s8s1s100s6s2s32s32s8s8s155s12x")
_NUMBERS = (1, 2, 3, 4, 5, 6, 13, 14)  # mode uid gid size mtime chksum devmajor devminor
_CHKSUM_FIELD = slice(148, 156)


def _text(field: bytes, encoding: str, errors: str) -> str:
    return field.split(b"\0", 1)[0].decode(encoding, errors)


def _octal(field: bytes) -> int:
    """An octal number field (NUL- or space-ended); ValueError for anything else."""
    digits = field.split(b"\0", 1)[0].strip()
    if digits and not digits.isdigit():  # int() would also take "+", "-" and "_"
        raise ValueError(field)
    return int(digits or b"0", 8)


class LayerTarInfo(tarfile.TarInfo):
    """A ``TarInfo`` whose ``frombuf`` takes a ustar header at once (module docstring)."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        if len(buf) != tarfile.BLOCKSIZE or buf[156:157] == tarfile.GNUTYPE_SPARSE:
            return super().frombuf(buf, encoding, errors)
        fields = _HEADER.unpack(buf)
        try:
            mode, uid, gid, size, mtime, chksum, devmajor, devminor = (
                _octal(fields[i]) for i in _NUMBERS
            )
        except ValueError:
            return super().frombuf(buf, encoding, errors)
        if chksum != 256 + sum(buf) - sum(buf[_CHKSUM_FIELD]):  # the unsigned sum only
            return super().frombuf(buf, encoding, errors)
        obj = cls()
        obj.name = _text(fields[0], encoding, errors)
        obj.mode, obj.uid, obj.gid, obj.size, obj.mtime = mode, uid, gid, size, mtime
        obj.chksum = chksum
        obj.type = fields[7]
        obj.linkname = _text(fields[8], encoding, errors)
        obj.uname = _text(fields[11], encoding, errors)
        obj.gname = _text(fields[12], encoding, errors)
        obj.devmajor, obj.devminor = devmajor, devminor
        prefix = _text(fields[15], encoding, errors)
        # as the standard parser: a V7 directory is a regular file named with a slash, a
        # directory's name loses its slashes, a ustar prefix heads the name
        if obj.type == tarfile.AREGTYPE and obj.name.endswith("/"):
            obj.type = tarfile.DIRTYPE
        if obj.isdir():
            obj.name = obj.name.rstrip("/")
        if prefix and obj.type not in tarfile.GNU_TYPES:
            obj.name = prefix + "/" + obj.name
        return obj
