"""A minimal streaming tar header reader that keeps raw bytes (for eStargz).

It understands USTAR, GNU (long names/links) and PAX headers well enough to
name every entry and size its payload, without re-encoding anything: the
eStargz writer must copy the original bytes unchanged (BuildKit's lossless mode).
"""

from __future__ import annotations

from mason.compression.errors import EStargzError
from mason.structs import Struct, field

__all__ = [
    "BLOCK",
    "HEADER_ONLY_TYPES",
    "META_TYPES",
    "PendingMeta",
    "TarHeader",
    "is_zero_block",
    "parse_header",
    "parse_pax",
]

BLOCK = 512
#: Typeflags whose entries never carry data blocks, whatever their size field says (as Go's reader).
HEADER_ONLY_TYPES = frozenset(b"123456")
#: Entries that only describe the next entry (PAX extended/global, GNU long name/link).
META_TYPES = frozenset(b"xgLK")


class TarHeader(Struct):
    name: str
    typeflag: int
    size: int
    mode: int
    uid: int
    gid: int
    mtime: float
    linkname: str
    uname: str
    gname: str
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes] = field(default_factory=dict)

    @property
    def payload_size(self) -> int:
        """Bytes of data that follow the header (before padding)."""
        return 0 if self.typeflag in HEADER_ONLY_TYPES else self.size

    @property
    def padded_payload_size(self) -> int:
        n = self.payload_size
        return n + (-n % BLOCK)


def is_zero_block(block: bytes) -> bool:
    return block.count(0) == len(block)


def _text(field_bytes: bytes) -> str:
    return field_bytes.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field_bytes: bytes, what: str, where: str) -> int:
    if field_bytes and field_bytes[0] & 0x80:  # GNU base-256
        if field_bytes[0] == 0xFF:
            raise EStargzError(f"{where}: negative {what} in tar header")
        return int.from_bytes(bytes([field_bytes[0] & 0x7F]) + field_bytes[1:], "big")
    text = field_bytes.split(b"\0", 1)[0].strip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise EStargzError(f"{where}: invalid {what} field {field_bytes!r} in tar header") from None


def parse_header(block: bytes, where: str) -> TarHeader:
    """Parse one 512-byte header block; ``EStargzError`` on a bad checksum or field."""
    if len(block) != BLOCK:
        raise EStargzError(f"{where}: truncated tar header ({len(block)} bytes)")
    stored = _number(block[148:156], "checksum", where)
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    # Some old tars sum signed bytes; only checked when the usual sum fails (it is slow in Python).
    if stored != unsigned and stored != unsigned - 256 * sum(
        b > 127 for b in block[:148] + block[156:]
    ):
        raise EStargzError(f"{where}: tar header checksum mismatch (not a tar stream?)")
    name = _text(block[0:100])
    magic = block[257:263]
    if magic == b"ustar\x00":  # POSIX: name may be split into prefix/name
        prefix = _text(block[345:500])
        if prefix:
            name = f"{prefix}/{name}"
    typeflag = block[156] or ord("0")
    return TarHeader(
        name=name,
        typeflag=typeflag,
        size=_number(block[124:136], "size", where),
        mode=_number(block[100:108], "mode", where),
        uid=_number(block[108:116], "uid", where),
        gid=_number(block[116:124], "gid", where),
        mtime=float(_number(block[136:148], "mtime", where)),
        linkname=_text(block[157:257]),
        uname=_text(block[265:297]),
        gname=_text(block[297:329]),
        devmajor=_number(block[329:337], "devmajor", where),
        devminor=_number(block[337:345], "devminor", where),
    )


def parse_pax(data: bytes, where: str) -> dict[str, bytes]:
    """Records of a PAX extended header payload (values kept as bytes)."""
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # padding
            break
        space = data.find(b" ", pos)
        if space < 0:
            raise EStargzError(f"{where}: malformed PAX record")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise EStargzError(f"{where}: malformed PAX record length") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise EStargzError(f"{where}: malformed PAX record")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value
        pos += length
    return records


def apply_meta(
    header: TarHeader, pax: dict[str, bytes], long_name: str | None, long_link: str | None
) -> None:
    """Overlay GNU long names and PAX records onto ``header`` (PAX wins, as in Go)."""
    if long_name is not None:
        header.name = long_name
    if long_link is not None:
        header.linkname = long_link
    for key, value in pax.items():
        text = value.decode("utf-8", "surrogateescape")
        if key == "path":
            header.name = text
        elif key == "linkpath":
            header.linkname = text
        elif key == "size":
            header.size = int(text)
        elif key == "uid":
            header.uid = int(text)
        elif key == "gid":
            header.gid = int(text)
        elif key == "uname":
            header.uname = text
        elif key == "gname":
            header.gname = text
        elif key == "mtime":
            header.mtime = float(text)
        elif key.startswith("SCHILY.xattr."):
            header.xattrs[key[len("SCHILY.xattr.") :]] = value


class PendingMeta:
    """The PAX records and GNU long names read since the last real entry; they describe the
    next entry and are cleared once applied to it."""

    def __init__(self) -> None:
        self._pax: dict[str, bytes] = {}
        self._long_name: str | None = None
        self._long_link: str | None = None

    def _clear(self) -> None:
        self._pax, self._long_name, self._long_link = {}, None, None

    def absorb(self, header: TarHeader, body: bytes, where: str) -> None:
        """Record a meta entry's body (``header.typeflag`` in META_TYPES); global PAX ('g')
        headers describe no entry and are ignored."""
        if header.typeflag == ord("x"):
            self._pax.update(parse_pax(body, where))
        elif header.typeflag == ord("L"):
            self._long_name = body.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif header.typeflag == ord("K"):
            self._long_link = body.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")

    def apply_to(self, header: TarHeader) -> None:
        """Overlay what was read onto ``header``, then start afresh."""
        apply_meta(header, self._pax, self._long_name, self._long_link)
        self._clear()
