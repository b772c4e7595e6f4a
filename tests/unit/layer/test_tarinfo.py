"""``LayerTarInfo.frombuf`` reads every header as the standard parser does: the same fields,
or the same error (it hands what it does not take in full to that parser); ``ustar_header``
writes every header it takes as the standard PAX writer does, byte for byte."""

from __future__ import annotations

import io
import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st

from mason.layer._tarinfo import LayerTarInfo, ustar_header

_FIELDS = (
    "name", "mode", "uid", "gid", "size", "mtime", "chksum", "type", "linkname", "uname",
    "gname", "devmajor", "devminor",
)  # fmt: skip


def _parsed(cls: type[tarfile.TarInfo], buf: bytes) -> object:
    try:
        info = cls.frombuf(buf, "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        return type(exc)
    return (*(getattr(info, f) for f in _FIELDS), getattr(info, "_sparse_structs", None))


_segments = st.text(st.characters(codec="utf-8", exclude_characters="\0/"), min_size=1, max_size=60)
# long ones take a ustar prefix; one with a trailing slash is a V7 directory if its type is \0
_names = st.builds(
    lambda parts, slash: "/".join(parts) + slash,
    st.lists(_segments, min_size=1, max_size=5),
    st.sampled_from(["", "/"]),
)
_types = st.sampled_from([b"0", b"\0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"S", b"L"])


@st.composite
def headers(draw: st.DrawFn) -> bytes:
    info = tarfile.TarInfo(draw(_names))
    info.type = draw(_types)
    info.mode = draw(st.integers(0, 0o7777))
    info.uid = draw(st.integers(0, 1 << 40))
    info.gid = draw(st.integers(0, 1 << 21))
    info.size = draw(st.integers(0, 1 << 36))
    info.mtime = draw(st.integers(-1, 1 << 34))
    info.linkname = draw(st.text(max_size=20).filter(lambda s: "\0" not in s))
    info.uname = draw(st.sampled_from(["", "root", "ünïcode"]))
    info.devmajor, info.devminor = draw(st.integers(0, 300)), draw(st.integers(0, 300))
    fmt = draw(st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT]))
    try:
        buf = info.tobuf(fmt, "utf-8", "surrogateescape")
    except ValueError:  # too long or too big for the format
        buf = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    header = bytearray(buf[-512:] if len(buf) > 512 and draw(st.booleans()) else buf[:512])
    for _ in range(draw(st.integers(0, 3))):  # damage: digits, spaces, NULs, high bytes
        header[draw(st.integers(0, 511))] = draw(st.sampled_from([0, 32, 48, 55, 56, 43, 128, 255]))
    return bytes(header)


@settings(max_examples=400, deadline=None)
@given(headers())
def test_every_header_reads_as_the_standard_parser_reads_it(buf: bytes) -> None:
    assert _parsed(LayerTarInfo, buf) == _parsed(tarfile.TarInfo, buf)


def test_blocks_that_are_not_headers_fail_as_they_did() -> None:
    for buf in (b"", b"\0" * 100, b"\0" * 512, b"x" * 512):
        assert _parsed(LayerTarInfo, buf) == _parsed(tarfile.TarInfo, buf)


def test_a_whole_layer_lists_the_same_members() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i, name in enumerate(["bin/", "bin/sh", "a" * 120 + "/long", "dev/null", "ünï"]):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE if name.endswith("/") else tarfile.REGTYPE
            info.size = 0 if info.isdir() else i
            info.uid = 70000 if i == 2 else 0
            tf.addfile(info, io.BytesIO(b"x" * info.size))

    def members(tarinfo: type[tarfile.TarInfo]) -> list[tuple[object, ...]]:
        out.seek(0)
        with tarfile.open(fileobj=out, mode="r|", tarinfo=tarinfo) as tf:
            return [(m.name, m.type, m.size, m.uid, m.pax_headers) for m in tf]

    assert members(LayerTarInfo) == members(tarfile.TarInfo)
    assert len(members(LayerTarInfo)) == 5


# most names in layers: ASCII, some longer than a ustar name field (100)
_plain_names = st.one_of(
    st.text(st.sampled_from("ab/._-"), min_size=1, max_size=110),
    st.integers(98, 102).map(lambda n: "d/" + "a" * (n - 2)),  # about the field's length
)
#: what no ustar header holds: each makes tarfile write an extended header first
_SPOILERS: list[tuple[str, st.SearchStrategy[object]]] = [
    ("name", _names),
    ("linkname", _names),
    ("uname", st.sampled_from(["ünïcode", "u" * 33])),
    ("uid", st.integers(8**7, 1 << 40)),
    ("gid", st.integers(8**7, 1 << 40)),
    ("size", st.integers(8**11, 1 << 40)),
    ("mtime", st.one_of(st.integers(8**11, 1 << 40), st.integers(-10, -1))),
    ("mtime", st.floats(0, 1e9)),
    ("pax_headers", st.just({"SCHILY.xattr.user.k": "v"})),
    ("type", st.sampled_from([b"3", b"4"])),  # devices: their numbers are written
    ("type", st.sampled_from([b"\0", b"7", b"S", b"L"])),
]


@st.composite
def entries(draw: st.DrawFn) -> tarfile.TarInfo:
    """Entries as layers hold them, some spoiled by a field no ustar header can hold."""
    info = tarfile.TarInfo(draw(_plain_names))
    info.type = draw(st.sampled_from([b"0", b"1", b"2", b"5", b"6"]))
    info.mode = draw(st.integers(0, 0o177777))  # the bits above 0o7777 are not written
    info.uid, info.gid = draw(st.integers(0, 8**7 - 1)), draw(st.integers(0, 8**7 - 1))
    info.size = draw(st.integers(0, 8**11 - 1))
    info.mtime = draw(st.integers(0, 8**11 - 1))
    info.linkname = draw(st.one_of(st.just(""), _plain_names))
    info.uname = draw(st.sampled_from(["", "root"]))
    info.gname = draw(st.sampled_from(["", "wheel"]))
    info.devmajor, info.devminor = draw(st.integers(0, 300)), draw(st.integers(0, 300))
    for field, values in draw(st.lists(st.sampled_from(_SPOILERS), max_size=2)):
        setattr(info, field, draw(values))
    return info


@settings(max_examples=500, deadline=None)
@given(entries())
def test_every_header_taken_is_written_as_the_pax_writer_writes_it(info: tarfile.TarInfo) -> None:
    expected = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    written = ustar_header(info)
    assert written is None or written == expected
    if len(expected) == tarfile.BLOCKSIZE and info.type in (b"0", b"1", b"2", b"5", b"6"):
        assert written == expected  # a plain ustar entry is never left to the slow writer
