"""``tarfile``'s header parser and writer, faster on the headers layers are made of (issue 14).

A layer read (unpacked, or indexed for a sparse base) spent half its Python time in
``TarInfo.frombuf``: a slice, a search and a decode per field, and two checksums by
``struct``. ``LayerTarInfo.frombuf`` reads the fields with one ``struct`` call and checks the
one checksum tar writers use; a header it does not take in full (a base-256 number, a
signed-char checksum, a GNU sparse entry, an end-of-archive block, anything malformed) goes
to the standard parser, which then decides and raises as it always did. Pass it as
``tarfile.open(..., tarinfo=LayerTarInfo)``.

A layer written (a step's commit) spent two thirds of its Python time in ``TarInfo.tobuf``
and ``TarFile.addfile``'s copy of each header. ``ustar_header`` encodes, in one ``struct``
call, the header ``tarfile``'s PAX writer gives an entry that needs no extended header
(ASCII names that fit, numbers in octal range, no xattrs, no device numbers); it answers
None for anything else, which then goes to ``tobuf``.
"""

from __future__ import annotations

import struct
import tarfile
from typing import Self

__all__ = ["LayerTarInfo", "ustar_header"]

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


_SPACES = b"        "  # the checksum field while the checksum is summed
_MAGIC, _VERSION = tarfile.POSIX_MAGIC[:6], tarfile.POSIX_MAGIC[6:]
_PLAIN_TYPES = frozenset(
    (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE)
)
_MAX_ID = 8**7  # 7 octal digits: uid, gid
_MAX_BIG = 8**11  # 11 octal digits: size, mtime


def _fits(text: str, length: int) -> bool:
    return len(text) <= length and text.isascii()


def ustar_header(info: tarfile.TarInfo) -> bytes | None:
    """The block ``info.tobuf(tarfile.PAX_FORMAT, ...)`` gives when it needs no extended
    header, or None (``tobuf`` then writes it)."""
    name, link = info.name, info.linkname
    if info.type == tarfile.DIRTYPE and not name.endswith("/"):
        name += "/"
    uid, gid, size, mtime = info.uid, info.gid, info.size, info.mtime
    if (
        info.pax_headers
        or info.type not in _PLAIN_TYPES
        or not (_fits(name, 100) and _fits(link, 100))
        or not (_fits(info.uname, 32) and _fits(info.gname, 32))
        or not all(type(n) is int for n in (uid, gid, size, mtime, info.mode))
        or not (0 <= uid < _MAX_ID and 0 <= gid < _MAX_ID)
        or not (0 <= size < _MAX_BIG and 0 <= mtime < _MAX_BIG)
    ):
        return None
    block = _HEADER.pack(
        name.encode(),
        b"%07o\0" % (info.mode & 0o7777),
        b"%07o\0" % uid,
        b"%07o\0" % gid,
        b"%011o\0" % size,
        b"%011o\0" % int(mtime),  # an int (checked above), typed float
        _SPACES,
        info.type,
        link.encode(),
        _MAGIC,
        _VERSION,
        info.uname.encode(),
        info.gname.encode(),
        b"",  # devmajor, devminor and prefix: NULs, as tobuf leaves them here
        b"",
        b"",
    )
    # tarfile's unsigned checksum; its field keeps the last of the spaces
    start, end = _CHKSUM_FIELD.start, _CHKSUM_FIELD.stop - 1
    return block[:start] + b"%06o\0" % sum(block) + block[end:]
