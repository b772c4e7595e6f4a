"""eStargz: a gzip tar layer that lazy-pulling snapshotters can read file by file.

Layout (stargz-snapshotter ``docs/estargz.md``; BuildKit's lossless variant)::

    [gz: headers…] [gz: payload(f1) pad hdr(f2)…] [gz: chunk 0 of f2] [gz: chunk 1 …] …
    [gz: TOC tar "stargz.index.json" + end-of-archive] [51-byte footer]

The writer copies the input tar's bytes unchanged, including its end-of-archive
blocks, which therefore come *before* the TOC entry: plain tar readers list the
layer's files only, while the digest of the whole decompressed stream (the
diff ID) covers the TOC. Every non-empty regular file's payload starts a new
gzip member, split every ``chunk_size`` bytes; the TOC records each chunk's
compressed offset and sha256. Each member is compressed in one shot by the gzip
engine (libdeflate by default: at level 6, ~4% smaller than BuildKit's Go
compress/gzip on its own busybox base layer), several at once on a thread
pool; runs of tar headers longer than 1 MiB are cut into 1 MiB members.

The verifier parses the footer and TOC, walks every member and the tar inside,
checks each chunk and file digest against the TOC and can write the original
tar back out. It accepts BuildKit v0.11.6's departures from the spec (no
landmark files, ``chunkSize`` on a single full-size chunk, whiteouts and empty
files without ``mode``).
"""

from __future__ import annotations

import base64
import collections
import datetime
import functools
import io
import json
import os
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, BinaryIO

from mason.compression import _tar
from mason.compression.annotations import (
    ANNOTATION_TOC_DIGEST,
    ANNOTATION_UNCOMPRESSED,
    ANNOTATION_UNCOMPRESSED_SIZE,
)
from mason.compression.errors import EStargzError
from mason.compression.footer import FOOTER_SIZE, LEGACY_FOOTER_SIZE, parse_footer
from mason.compression.gzip import BLOCK_SIZE, check_gzip_engine, check_gzip_level, gzip_member
from mason.digest import Digest, HashingWriter, digest_of, new_sha256, sha256_bytes
from mason.futures import Future, ThreadPoolExecutor
from mason.structs import Struct

__all__ = [
    "ANNOTATION_TOC_DIGEST",
    "ANNOTATION_UNCOMPRESSED",
    "ANNOTATION_UNCOMPRESSED_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "FOOTER_SIZE",
    "LEGACY_FOOTER_SIZE",
    "TOC_TAR_NAME",
    "EStargzInfo",
    "EStargzResult",
    "estargz_to_tar",
    "footer_bytes",
    "is_estargz",
    "parse_footer",
    "read_toc",
    "verify_estargz",
    "write_estargz",
]

TOC_TAR_NAME = "stargz.index.json"
DEFAULT_CHUNK_SIZE = 4 << 20  # what BuildKit and the stargz tools use

_EMPTY_DIGEST = sha256_bytes(b"")
_READ = 1 << 20
_IN_FLIGHT_PER_THREAD = 4 << 20  # a default chunk
_MAX_TOC = 256 << 20  # a TOC larger than this is hostile, not a layer
_TYPE_NAMES = {
    ord("0"): "reg",
    ord("7"): "reg",
    ord("1"): "hardlink",
    ord("2"): "symlink",
    ord("3"): "char",
    ord("4"): "block",
    ord("5"): "dir",
    ord("6"): "fifo",
}


def _layer_annotations(
    diff_id: Digest, toc_digest: Digest, uncompressed_size: int
) -> dict[str, str]:
    return {
        ANNOTATION_UNCOMPRESSED: diff_id,
        ANNOTATION_TOC_DIGEST: toc_digest,
        ANNOTATION_UNCOMPRESSED_SIZE: str(uncompressed_size),
    }


class EStargzResult(Struct, frozen=True):
    """What ``write_estargz`` produced: the blob's digest and the values of its annotations."""

    digest: Digest
    size: int
    diff_id: Digest
    uncompressed_size: int
    toc_digest: Digest
    toc_offset: int

    def annotations(self) -> dict[str, str]:
        """The layer descriptor annotations BuildKit sets on eStargz layers."""
        return _layer_annotations(self.diff_id, self.toc_digest, self.uncompressed_size)


# -- writing ---------------------------------------------------------------------


def footer_bytes(toc_offset: int) -> bytes:
    """The 51-byte footer: an empty gzip member whose FEXTRA holds ``%016xSTARGZ``."""
    payload = b"%016xSTARGZ" % toc_offset
    extra = b"SG" + struct.pack("<H", len(payload)) + payload
    return (
        b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff"
        + struct.pack("<H", len(extra))
        + extra
        + b"\x01\x00\x00\xff\xff"  # a final, empty stored deflate block
        + b"\x00" * 8  # CRC32 and ISIZE of nothing
    )


class _MemberSink:
    """Cuts the uncompressed stream into gzip members and compresses each in one shot.

    ``begin()`` starts a member and returns a mark whose compressed offset
    ``finish()`` reports. Bytes written after ``begin(whole=True)`` stay in that
    member until ``release()`` (a chunk, the TOC); other bytes (tar headers,
    padding, non-file data) are cut into extra members every ``BLOCK_SIZE`` bytes
    past that, so memory stays bounded. Cut points depend only on the bytes and
    the marks, never on write sizes or threads. Members are compressed in a
    thread pool (the engines release the GIL) and written in order.
    """

    def __init__(self, out: HashingWriter, level: int, engine: str, threads: int) -> None:
        self._out = out
        self._compress = functools.partial(gzip_member, level=level, engine=engine)
        self.diff = new_sha256()
        self.uncompressed = 0
        self._parts: list[bytes] = []
        self._size = 0  # bytes in _parts
        self._kept = 0  # leading bytes of _parts that must stay in this member
        self._whole = False
        self._mark: int | None = None  # the mark of the member being filled (None: unmarked)
        self._offsets: list[int] = []
        self._threads = threads
        self._pool = ThreadPoolExecutor(threads, "estargz") if threads > 1 else None
        self._pending: collections.deque[tuple[int | None, int, Future[bytes]]] = (
            collections.deque()
        )
        self._in_flight = 0  # uncompressed bytes in _pending
        self._budget = 2 * threads * _IN_FLIGHT_PER_THREAD

    def begin(self, *, whole: bool = False) -> int:
        """End the current member and start one; returns its mark."""
        assert self._mark is None or self._size, "a marked member ended empty"
        self._submit()
        self._whole = whole
        self._mark = len(self._offsets)
        self._offsets.append(-1)
        return self._mark

    def release(self) -> None:
        """The bytes so far stay in this member; later ones may be cut into new members."""
        self._whole = False
        self._kept = self._size

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.diff.update(data)
        self.uncompressed += len(data)
        self._parts.append(data)
        self._size += len(data)
        if not self._whole and self._size - self._kept >= BLOCK_SIZE:
            joined = b"".join(self._parts)
            cut = self._kept + BLOCK_SIZE
            self._parts, self._size = [joined[:cut]], cut
            self._submit()
            rest = joined[cut:]
            while len(rest) >= BLOCK_SIZE:
                self._parts, self._size = [rest[:BLOCK_SIZE]], BLOCK_SIZE
                self._submit()
                rest = rest[BLOCK_SIZE:]
            if rest:
                self._parts, self._size = [rest], len(rest)

    def _submit(self) -> None:
        """Queue the member being filled, if it has any bytes."""
        if not self._size:
            return
        data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts, self._size, self._kept = [], 0, 0
        mark, self._mark = self._mark, None
        if self._pool is None:
            self._write(mark, self._compress(data))
            return
        self._pending.append((mark, len(data), self._pool.submit(self._compress, data)))
        self._in_flight += len(data)
        # Bound memory by bytes, not members: small files make many small members,
        # and waiting on each would leave the threads idle.
        while self._in_flight > self._budget and len(self._pending) > 1:
            self._write(*self._next())

    def _next(self) -> tuple[int | None, bytes]:
        mark, size, future = self._pending.popleft()
        self._in_flight -= size
        return mark, future.result()

    def _write(self, mark: int | None, member: bytes) -> None:
        if mark is not None:
            self._offsets[mark] = self._out.size
        self._out.write(member)

    def finish(self) -> list[int]:
        """Write every member; returns the compressed offset of each mark."""
        self._submit()
        while self._pending:
            self._write(*self._next())
        return self._offsets

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _read_exact(src: BinaryIO, n: int, where: str) -> bytes:
    parts = []
    left = n
    while left:
        data = src.read(min(left, _READ))
        if not data:
            raise EStargzError(
                f"{where}: input tar ends in the middle of an entry ({n - left} of {n} bytes)"
            )
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


def _modtime(mtime: float) -> str | None:
    seconds = int(mtime)
    if seconds == 0:
        return None
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _go_json(value: Any) -> bytes:
    """``json.MarshalIndent(v, "", "\\t")`` as Go writes it (HTML characters escaped)."""
    text = json.dumps(value, indent="\t", ensure_ascii=False)
    for char, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text.encode("utf-8", "replace")


def _toc_tar(toc_json: bytes) -> bytes:
    """The TOC as Go's archive/tar writes a header with only Typeflag, Name and Size set."""
    header = bytearray(_tar.BLOCK)
    header[0 : len(TOC_TAR_NAME)] = TOC_TAR_NAME.encode()
    header[100:108] = b"0000000\0"  # mode
    header[108:116] = b"0000000\0"  # uid
    header[116:124] = b"0000000\0"  # gid
    header[124:136] = b"%011o\0" % len(toc_json)
    header[136:148] = b"00000000000\0"  # mtime
    header[148:156] = b" " * 8
    header[156] = ord("0")
    header[257:263] = b"ustar\0"
    header[263:265] = b"00"
    header[329:337] = b"0000000\0"  # devmajor
    header[337:345] = b"0000000\0"  # devminor
    header[148:156] = b"%06o\0 " % sum(header)
    return (
        bytes(header) + toc_json + b"\0" * (-len(toc_json) % _tar.BLOCK) + b"\0" * (2 * _tar.BLOCK)
    )


class _EntryBuilder:
    """TOC entries from tar headers, fields in Go's order, zero values omitted."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._user_names: dict[int, str] = {}
        self._group_names: dict[int, str] = {}

    def entry(self, h: _tar.TarHeader, where: str) -> dict[str, Any]:
        kind = _TYPE_NAMES.get(h.typeflag)
        if kind is None:
            raise EStargzError(
                f"{where}: unsupported tar entry type {chr(h.typeflag)!r} for {h.name!r}",
                hint="eStargz carries regular files, directories, links, devices and fifos only",
            )
        name = h.name
        if name.lstrip("./") == TOC_TAR_NAME or name == TOC_TAR_NAME:
            raise EStargzError(f"{where}: the input tar already contains {TOC_TAR_NAME}")
        if kind == "dir" and not name.endswith("/"):
            name += "/"
        e: dict[str, Any] = {"name": name, "type": kind}
        if kind == "reg" and h.size:
            e["size"] = h.size
        modtime = _modtime(h.mtime)
        if modtime:
            e["modtime"] = modtime
        if kind in ("hardlink", "symlink") and h.linkname:
            e["linkName"] = h.linkname
        if h.mode:
            e["mode"] = h.mode
        if h.uid:
            e["uid"] = h.uid
        if h.gid:
            e["gid"] = h.gid
        if h.uname and self._user_names.get(h.uid) != h.uname:
            e["userName"] = h.uname
            self._user_names[h.uid] = h.uname
        if h.gname and self._group_names.get(h.gid) != h.gname:
            e["groupName"] = h.gname
            self._group_names[h.gid] = h.gname
        if kind in ("char", "block"):
            if h.devmajor:
                e["devMajor"] = h.devmajor
            if h.devminor:
                e["devMinor"] = h.devminor
        if h.xattrs:
            e["xattrs"] = {k: base64.b64encode(v).decode() for k, v in sorted(h.xattrs.items())}
        return e


def write_estargz(
    src: BinaryIO,
    dst: BinaryIO,
    level: int | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    engine: str | None = None,
    threads: int | None = None,
) -> EStargzResult:
    """Convert the layer tar read from ``src`` into an eStargz blob written to ``dst``.

    Levels are gzip's 0-9 (default 6, as BuildKit). ``engine`` is a gzip engine
    (``mason.compression.gzip.GZIP_ENGINES``; default libdeflate, as for gzip
    layers): each member is compressed in one shot, so libdeflate's ratio (smaller
    than Go's compress/gzip at the same level) applies to eStargz too. ``threads``
    (default: the usable CPUs) compress members in parallel and never change the
    bytes. Memory: the TOC plus about two chunks (``chunk_size``) per thread.
    """
    effective = check_gzip_level(level)
    if chunk_size <= 0:
        raise EStargzError(f"invalid eStargz chunk size {chunk_size}")
    if threads is None:
        threads = len(os.sched_getaffinity(0))
    out = HashingWriter(dst)
    sink = _MemberSink(out, effective, check_gzip_engine(engine), max(1, threads))
    try:
        entries = _convert(src, sink, chunk_size)
        offsets = sink.finish()
        toc_offset = out.size
        toc = {"version": 1, "entries": [_finish_entry(e, offsets) for e in entries]}
        toc_json = _go_json(toc)
        sink.begin(whole=True)
        sink.write(_toc_tar(toc_json))
        sink.finish()
    finally:
        sink.close()
    out.write(footer_bytes(toc_offset))
    return EStargzResult(
        digest=out.digest,
        size=out.size,
        diff_id=digest_of(sink.diff),
        uncompressed_size=sink.uncompressed,
        toc_digest=sha256_bytes(toc_json),
        toc_offset=toc_offset,
    )


def _copy_chunks(
    src: BinaryIO,
    sink: _MemberSink,
    builder: _EntryBuilder,
    entry: dict[str, Any],
    size: int,
    chunk_size: int,
    where: str,
) -> Digest:
    """Copy a regular file's ``size`` bytes from ``src``, a gzip member per chunk; ``entry``
    is the first chunk's TOC entry, the others are appended to ``builder``. The file's digest."""
    file_hash = new_sha256()
    chunk_offset = 0
    while chunk_offset < size:
        length = min(chunk_size, size - chunk_offset)
        first = chunk_offset == 0
        mark = sink.begin(whole=True)
        chunk_hash = new_sha256()
        left = length
        while left:
            data = src.read(min(left, _READ))
            if not data:
                raise EStargzError(
                    f"{where}: input tar ends inside {entry['name']!r} ({chunk_offset + length - left} of {size} bytes)"
                )
            sink.write(data)
            chunk_hash.update(data)
            file_hash.update(data)
            left -= len(data)
        sink.release()
        chunk_entry = entry if first else {"name": entry["name"], "type": "chunk"}
        chunk_entry["_mark"] = mark
        if not first:
            chunk_entry["chunkOffset"] = chunk_offset
        # The spec: chunkSize on every chunk but the last (BuildKit also sets it on a
        # full-size last chunk; readers accept both).
        if chunk_offset + length < size:
            chunk_entry["chunkSize"] = length
        chunk_entry["_chunkDigest"] = digest_of(chunk_hash)
        if not first:
            builder.entries.append(chunk_entry)
        chunk_offset += length
    return digest_of(file_hash)


def _convert(src: BinaryIO, sink: _MemberSink, chunk_size: int) -> list[dict[str, Any]]:
    """Copy the tar from ``src`` into ``sink``, a member per file chunk; the TOC entries
    (chunk offsets as the sink's marks, digests under ``_``-keys)."""
    builder = _EntryBuilder()
    meta = _tar.PendingMeta()
    position = 0  # uncompressed offset in the input, for error messages
    while True:
        where = f"layer tar at offset {position}"
        block = src.read(_tar.BLOCK)
        if len(block) < _tar.BLOCK and block:
            block += _read_exact(src, _tar.BLOCK - len(block), where)
        if not block:
            break  # a tar without end-of-archive blocks (BuildKit's base layers have none)
        if _tar.is_zero_block(block):
            # End of archive: keep these and any trailing bytes as they are (lossless).
            sink.write(block)
            while data := src.read(_READ):
                sink.write(data)
            break
        header = _tar.parse_header(block, where)
        sink.write(block)
        position += _tar.BLOCK
        if header.typeflag in _tar.META_TYPES:
            payload = _read_exact(src, header.padded_payload_size, where)
            sink.write(payload)
            position += len(payload)
            meta.absorb(header, payload[: header.size], where)
            continue
        meta.apply_to(header)
        entry = builder.entry(header, where)
        builder.entries.append(entry)
        size = header.payload_size
        if entry["type"] != "reg" or size == 0:
            if entry["type"] == "reg":
                entry["digest"] = _EMPTY_DIGEST
            skip = header.padded_payload_size
            if skip:  # data blocks on a non-regular entry: copy them through untouched
                sink.write(_read_exact(src, skip, where))
                position += skip
            continue
        entry["_digest"] = _copy_chunks(src, sink, builder, entry, size, chunk_size, where)
        padding = -size % _tar.BLOCK
        if padding:
            sink.write(_read_exact(src, padding, where))
        position += size + padding
    return builder.entries


_FIELD_ORDER = (
    "name", "type", "size", "modtime", "linkName", "mode", "uid", "gid", "userName", "groupName",
    "offset", "innerOffset", "devMajor", "devMinor", "xattrs", "digest", "chunkOffset", "chunkSize", "chunkDigest",
)  # fmt: skip


def _finish_entry(e: dict[str, Any], offsets: list[int]) -> dict[str, Any]:
    """Put the offsets and digests known after the fact into Go's field order."""
    merged = dict(e)
    if "_mark" in merged:
        merged["offset"] = offsets[merged.pop("_mark")]
    if "_digest" in merged:
        merged["digest"] = merged.pop("_digest")
    if "_chunkDigest" in merged:
        merged["chunkDigest"] = merged.pop("_chunkDigest")
    return {k: merged[k] for k in _FIELD_ORDER if k in merged}


# -- reading and verifying --------------------------------------------------------


def _blob_size(blob: BinaryIO) -> int:
    blob.seek(0, io.SEEK_END)
    return blob.tell()


def _inflate_member(data: bytes, where: str) -> tuple[bytes, bytes]:
    """Decompress one gzip member from ``data``; returns (output, unused bytes after it)."""
    d = zlib.decompressobj(31)
    try:
        out = d.decompress(data)
    except zlib.error as exc:
        raise EStargzError(f"{where}: corrupt gzip member: {exc}") from exc
    if not d.eof:
        raise EStargzError(f"{where}: gzip member is truncated")
    return out, d.unused_data


def read_toc(blob: BinaryIO) -> tuple[int, bytes, list[dict[str, Any]]]:
    """``(toc_offset, toc_json_bytes, entries)`` of a seekable eStargz blob."""
    size = _blob_size(blob)
    blob.seek(max(0, size - FOOTER_SIZE))
    toc_offset, footer_size = parse_footer(blob.read(FOOTER_SIZE))
    if toc_offset >= size - footer_size:
        raise EStargzError(
            f"bad footer: TOC offset {toc_offset} is beyond the blob ({size} bytes)",
            reference="estargz-bad-footer",
        )
    if size - footer_size - toc_offset > _MAX_TOC:
        raise EStargzError(
            f"eStargz TOC member of {size - footer_size - toc_offset} bytes is too large"
        )
    blob.seek(toc_offset)
    member = blob.read(size - footer_size - toc_offset)
    where = f"eStargz TOC member at offset {toc_offset}"
    toc_tar, rest = _inflate_member(member, where)
    if rest:
        raise EStargzError(f"{where}: unexpected data between the TOC and the footer")
    header = _tar.parse_header(toc_tar[: _tar.BLOCK], where)
    if header.name.lstrip("./") != TOC_TAR_NAME:
        raise EStargzError(f"{where}: first entry is {header.name!r}, not {TOC_TAR_NAME}")
    toc_json = toc_tar[_tar.BLOCK : _tar.BLOCK + header.size]
    if len(toc_json) != header.size:
        raise EStargzError(f"{where}: TOC is truncated")
    try:
        toc = json.loads(toc_json)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EStargzError(f"{where}: TOC is not valid JSON: {exc}") from exc
    if not isinstance(toc, dict) or not isinstance(toc.get("entries"), list):
        raise EStargzError(f"{where}: TOC has no entries list")
    if toc.get("version") != 1:
        raise EStargzError(f"{where}: unsupported TOC version {toc.get('version')!r}")
    entries = toc["entries"]
    for i, e in enumerate(entries):
        if (
            not isinstance(e, dict)
            or not isinstance(e.get("name"), str)
            or not isinstance(e.get("type"), str)
        ):
            raise EStargzError(f"{where}: TOC entry {i} lacks a name or type")
    return toc_offset, toc_json, entries


def is_estargz(blob: BinaryIO) -> bool:
    """True when ``blob`` (seekable) ends with a valid footer and TOC."""
    try:
        read_toc(blob)
    except EStargzError:
        return False
    finally:
        blob.seek(0)
    return True


class EStargzInfo(Struct, frozen=True):
    """What ``verify_estargz`` established about a blob."""

    toc_offset: int
    toc_digest: Digest
    toc_json: bytes
    entries: tuple[Mapping[str, Any], ...]
    diff_id: Digest
    uncompressed_size: int
    tar_size: int  # bytes of the layer tar before the TOC
    files: int
    chunks: int

    def annotations(self) -> dict[str, str]:
        return _layer_annotations(self.diff_id, self.toc_digest, self.uncompressed_size)


class _MemberStream:
    """Decompressed bytes of the gzip members in ``blob[0:end]``, read sequentially,
    remembering at which uncompressed offset each member (by compressed offset) starts."""

    def __init__(self, blob: BinaryIO, end: int) -> None:
        self._blob = blob
        self._end = end
        self._pos = 0  # compressed bytes consumed into decompressors
        self._pending = b""  # compressed bytes not yet fed
        self._d: Any = None
        self._buf = bytearray()
        self.out_pos = 0  # uncompressed bytes handed out
        self._produced = 0  # uncompressed bytes produced
        self.member_starts: dict[int, int] = {}

    def _fill(self) -> bool:
        while True:
            if not self._pending:
                want = min(_READ, self._end - self._pos - 0)
                if want <= 0:
                    if self._d is not None and not self._d.eof:
                        raise EStargzError(f"gzip member ending at offset {self._end} is truncated")
                    return False
                self._pending = self._blob.read(want)
                if not self._pending:
                    raise EStargzError(f"blob ends at offset {self._pos}, before the TOC")
            if self._d is None or self._d.eof:
                self.member_starts[self._pos] = self._produced
                self._d = zlib.decompressobj(31)
            data = self._pending
            self._pending = b""
            try:
                out = self._d.decompress(data)
            except zlib.error as exc:
                raise EStargzError(
                    f"corrupt gzip member starting at or before offset {self._pos}: {exc}"
                ) from exc
            used = len(data) - len(self._d.unused_data) if self._d.eof else len(data)
            self._pending = self._d.unused_data if self._d.eof else b""
            self._pos += used
            if out:
                self._buf += out
                self._produced += len(out)
                return True
            if self._d.eof and not self._pending and self._pos >= self._end:
                return False

    def read(self, n: int) -> bytes:
        while len(self._buf) < n and self._fill():
            pass
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self.out_pos += len(data)
        return data

    def read_all(self) -> Iterator[bytes]:
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            self.out_pos += len(data)
            yield data
        while self._fill():
            data = bytes(self._buf)
            self._buf.clear()
            self.out_pos += len(data)
            yield data


def _entry_int(e: Mapping[str, Any], key: str, where: str) -> int:
    v = e.get(key, 0)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise EStargzError(f"{where}: {key} must be a non-negative integer, got {v!r}")
    return v


def _clean(name: str) -> str:
    name = name.lstrip("/")
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


_TocFile = tuple[Mapping[str, Any], list[Mapping[str, Any]]]


def _group_files(entries: Sequence[Mapping[str, Any]]) -> list[_TocFile]:
    """The TOC's entries with each regular file's chunks (its own entry first, then the
    ``chunk`` entries that continue it)."""
    files: list[_TocFile] = []
    for i, e in enumerate(entries):
        if e["type"] == "chunk":
            if (
                not files
                or files[-1][0]["type"] != "reg"
                or _clean(files[-1][0]["name"]) != _clean(e["name"])
            ):
                raise EStargzError(
                    f"eStargz TOC entry {i}: chunk of {e['name']!r} does not follow its file"
                )
            files[-1][1].append(e)
        else:
            files.append(
                (e, [e] if e["type"] == "reg" and _entry_int(e, "size", e["name"]) > 0 else [])
            )
    return files


class _TarCheck:
    """One pass over an eStargz blob's tar stream, checking each tar entry against its TOC
    entry and each chunk against its digest, hashing everything for the diff ID."""

    def __init__(
        self, blob: BinaryIO, toc_offset: int, files: list[_TocFile], tar_out: BinaryIO | None
    ) -> None:
        blob.seek(0)
        self.stream = _MemberStream(blob, toc_offset)
        self.diff = new_sha256()
        self._tar_out = tar_out
        self._toc_iter = iter(files)
        self._meta = _tar.PendingMeta()
        #: name, member offset, innerOffset, uncompressed position, of every chunk read
        self.chunk_checks: list[tuple[str, int, int, int]] = []
        self.files = self.chunks = 0

    def _take(self, n: int) -> bytes:
        data = self.stream.read(n)
        self._emit(data)
        return data

    def _emit(self, data: bytes) -> None:
        self.diff.update(data)
        if self._tar_out is not None and data:
            self._tar_out.write(data)

    def run(self) -> None:
        while True:
            where = f"eStargz tar at uncompressed offset {self.stream.out_pos}"
            block = self._take(_tar.BLOCK)
            if not block:
                break
            if len(block) < _tar.BLOCK:
                raise EStargzError(f"{where}: tar stream ends inside a header")
            if _tar.is_zero_block(block):
                for data in self.stream.read_all():
                    self._emit(data)
                break
            header = _tar.parse_header(block, where)
            if header.typeflag in _tar.META_TYPES:
                self._meta.absorb(
                    header, self._take(header.padded_payload_size)[: header.size], where
                )
                continue
            self._meta.apply_to(header)
            self._entry(header, where)
        leftover = next(self._toc_iter, None)
        if leftover is not None:
            raise EStargzError(f"TOC entry {leftover[0]['name']!r} has no entry in the tar stream")

    def _entry(self, header: _tar.TarHeader, where: str) -> None:
        """Check one tar entry against the next TOC entry, and read its payload."""
        try:
            entry, chunks = next(self._toc_iter)
        except StopIteration:
            raise EStargzError(f"{where}: tar entry {header.name!r} has no TOC entry") from None
        name = entry["name"]
        kind = _TYPE_NAMES.get(header.typeflag, "?")
        if _clean(name) != _clean(header.name) or entry["type"] != kind:
            raise EStargzError(
                f"{where}: tar entry {header.name!r} ({kind}) does not match TOC entry {name!r} ({entry['type']})"
            )
        if kind in ("hardlink", "symlink") and entry.get("linkName", "") != header.linkname:
            raise EStargzError(f"{where}: link target of {name!r} differs between tar and TOC")
        size = header.payload_size
        if kind == "reg" and _entry_int(entry, "size", name) != size:
            raise EStargzError(
                f"{where}: size of {name!r} is {size} in the tar, {entry.get('size', 0)} in the TOC"
            )
        if kind != "reg" or size == 0:
            if kind == "reg" and entry.get("digest", _EMPTY_DIGEST) != _EMPTY_DIGEST:
                raise EStargzError(
                    f"{where}: empty file {name!r} has a non-empty digest in the TOC"
                )
            self._take(header.padded_payload_size)
            return
        self._file(entry, chunks, size, where)
        self._take(-size % _tar.BLOCK)

    def _file(
        self, entry: Mapping[str, Any], chunks: Sequence[Mapping[str, Any]], size: int, where: str
    ) -> None:
        """Read a regular file's chunks, checking each chunk's digest and then the file's."""
        name = entry["name"]
        self.files += 1
        payload_start = self.stream.out_pos
        file_hash = new_sha256()
        read = 0
        for k, chunk in enumerate(chunks):
            chunk_offset = _entry_int(chunk, "chunkOffset", name)
            if chunk_offset != read:
                raise EStargzError(
                    f"{where}: chunk {k} of {name!r} starts at {chunk_offset}, expected {read}"
                )
            declared = _entry_int(chunk, "chunkSize", name)
            length = size - read if k == len(chunks) - 1 else declared
            if length <= 0 or (declared and declared < length) or read + length > size:
                raise EStargzError(
                    f"{where}: chunk {k} of {name!r} has an invalid chunkSize {declared}"
                )
            got = self._chunk(length, file_hash, name, where)
            want = chunk.get("chunkDigest")
            if want != got:
                raise EStargzError(
                    f"eStargz chunk digest mismatch for {name!r} at file offset {chunk_offset}: "
                    f"the TOC says {want}, the content has {got}",
                    reference="estargz-chunk-digest-mismatch",
                )
            self.chunk_checks.append(
                (
                    name,
                    _entry_int(chunk, "offset", name),
                    _entry_int(chunk, "innerOffset", name),
                    payload_start + chunk_offset,
                )
            )
            self.chunks += 1
            read += length
        got = digest_of(file_hash)
        if entry.get("digest") != got:
            raise EStargzError(
                f"eStargz file digest mismatch for {name!r}: the TOC says {entry.get('digest')}, the content has {got}",
                reference="estargz-chunk-digest-mismatch",
            )

    def _chunk(self, length: int, file_hash: Any, name: str, where: str) -> Digest:
        """Read one chunk of ``length`` bytes into ``file_hash``; the chunk's digest."""
        chunk_hash = new_sha256()
        left = length
        while left:
            data = self._take(min(left, _READ))
            if not data:
                raise EStargzError(f"{where}: blob ends inside {name!r}")
            chunk_hash.update(data)
            file_hash.update(data)
            left -= len(data)
        return digest_of(chunk_hash)

    def check_offsets(self) -> None:
        """Every chunk's TOC ``offset`` is a gzip member boundary, and ``innerOffset`` in that
        member is where the chunk's bytes were read."""
        for name, offset, inner, position in self.chunk_checks:
            start = self.stream.member_starts.get(offset)
            if start is None:
                raise EStargzError(
                    f"TOC offset {offset} of {name!r} is not the start of a gzip member"
                )
            if start + inner != position:
                raise EStargzError(
                    f"TOC offset {offset} of {name!r} points at uncompressed byte {start + inner}, "
                    f"but the chunk starts at {position}"
                )


def _toc_member_tar(blob: BinaryIO, toc_offset: int) -> bytes:
    """The decompressed TOC member (the tar holding the TOC), the last bytes of the diff ID."""
    blob.seek(toc_offset)
    size = _blob_size(blob)
    blob.seek(toc_offset)
    toc_tar, _ = _inflate_member(
        blob.read(size - toc_offset), f"eStargz TOC member at offset {toc_offset}"
    )
    return toc_tar


def verify_estargz(
    blob: BinaryIO,
    *,
    expected_toc_digest: str | None = None,
    expected_diff_id: str | None = None,
    expected_uncompressed_size: int | None = None,
    tar_out: BinaryIO | None = None,
) -> EStargzInfo:
    """Check every part of an eStargz blob (seekable) and optionally write its layer tar.

    Checks: the footer; the TOC member and its digest; that each tar entry has its
    TOC entry (same order, name, type, size, link); that every reg/chunk ``offset``
    is a gzip member boundary at the start of that chunk; every chunk and file
    digest; and the diff ID / uncompressed size over all decompressed bytes.
    ``EStargzError`` names the first problem found.
    """
    toc_offset, toc_json, entries = read_toc(blob)
    toc_digest = sha256_bytes(toc_json)
    if expected_toc_digest is not None and toc_digest != expected_toc_digest:
        raise EStargzError(
            f"eStargz TOC digest mismatch: expected {expected_toc_digest}, the TOC has {toc_digest}",
            reference="estargz-toc-digest-mismatch",
        )
    check = _TarCheck(blob, toc_offset, _group_files(entries), tar_out)
    check.run()
    check.check_offsets()
    tar_size = check.stream.out_pos
    toc_tar = _toc_member_tar(blob, toc_offset)
    check.diff.update(toc_tar)
    diff_id = digest_of(check.diff)
    uncompressed = tar_size + len(toc_tar)
    if expected_diff_id is not None and diff_id != expected_diff_id:
        raise EStargzError(
            f"eStargz diff ID mismatch: expected {expected_diff_id}, the decompressed blob has {diff_id}",
            reference="estargz-diff-id-mismatch",
        )
    if expected_uncompressed_size is not None and uncompressed != expected_uncompressed_size:
        raise EStargzError(
            f"eStargz uncompressed size mismatch: expected {expected_uncompressed_size}, got {uncompressed}"
        )
    return EStargzInfo(
        toc_offset,
        toc_digest,
        toc_json,
        tuple(entries),
        diff_id,
        uncompressed,
        tar_size,
        check.files,
        check.chunks,
    )


def estargz_to_tar(blob: BinaryIO, dst: BinaryIO) -> EStargzInfo:
    """Verify ``blob`` and write the layer tar it holds (without the TOC) to ``dst``."""
    return verify_estargz(blob, tar_out=dst)
