from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import pathlib
import shutil
import subprocess
import tarfile
import zlib

import pytest
from tests.support.testdata import TESTDATA

from mason.compression import CompressionError, EStargzError
from mason.compression.estargz import (
    ANNOTATION_TOC_DIGEST,
    ANNOTATION_UNCOMPRESSED,
    ANNOTATION_UNCOMPRESSED_SIZE,
    _toc_tar,
    estargz_to_tar,
    footer_bytes,
    is_estargz,
    parse_footer,
    read_toc,
    verify_estargz,
    write_estargz,
)
from mason.compression.gzip import GZIP_ENGINES, gzip_member
from mason.compression.streams import compress_stream

COMPRESSION = TESTDATA / "compression"


def _rows() -> list[dict[str, str]]:
    with open(COMPRESSION / "INDEX.tsv", newline="") as f:
        return [r for r in csv.DictReader(f, delimiter="\t") if r["toc.digest"]]


def _blob(row: dict[str, str]) -> pathlib.Path:
    return COMPRESSION / row["layout"] / "blobs" / "sha256" / row["digest"].split(":", 1)[1]


ROWS = _rows()


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r['layout']}:{r['role']}")
def test_accepts_every_buildkit_estargz_blob(row: dict[str, str]) -> None:
    tar = io.BytesIO()
    with open(_blob(row), "rb") as f:
        info = verify_estargz(
            f,
            expected_toc_digest=row["toc.digest"],
            expected_diff_id=row["diffID"],
            expected_uncompressed_size=int(row["uncompressed_size"]),
            tar_out=tar,
        )
        f.seek(info.toc_offset)
        toc_member = zlib.decompressobj(31).decompress(f.read())
    assert info.annotations() == {
        ANNOTATION_UNCOMPRESSED: row["diffID"],
        ANNOTATION_TOC_DIGEST: row["toc.digest"],
        ANNOTATION_UNCOMPRESSED_SIZE: row["uncompressed_size"],
    }
    assert len(tar.getvalue()) == info.tar_size == int(row["uncompressed_size"]) - len(toc_member)
    # mason writes the TOC tar entry byte for byte as Go's archive/tar does
    assert _toc_tar(info.toc_json) == toc_member


def test_converted_base_layer_rebuilds_the_original_tar() -> None:
    # The force-converted base keeps the gzip layer's tar exactly (BuildKit's lossless mode).
    row = next(r for r in ROWS if r["layout"] == "estargz-oci-force" and r["role"] == "layer:base")
    with open(COMPRESSION / "INDEX.tsv", newline="") as f:
        gzip_row = next(
            r
            for r in csv.DictReader(f, delimiter="\t")
            if r["layout"] == "estargz" and r["role"] == "layer:base"
        )
    tar = io.BytesIO()
    with open(_blob(row), "rb") as f:
        verify_estargz(f, tar_out=tar)
    assert "sha256:" + hashlib.sha256(tar.getvalue()).hexdigest() == gzip_row["diffID"]


def _buildkit_tar(row: dict[str, str]) -> tuple[bytes, list[dict[str, object]]]:
    tar = io.BytesIO()
    with open(_blob(row), "rb") as f:
        info = verify_estargz(f, tar_out=tar)
    return tar.getvalue(), json.loads(info.toc_json)["entries"]


@pytest.mark.parametrize(
    "row", [r for r in ROWS if r["layout"] == "estargz-oci-force"], ids=lambda r: r["role"]
)
def test_writer_matches_buildkit_toc_and_round_trips(row: dict[str, str]) -> None:
    tar_bytes, buildkit_entries = _buildkit_tar(row)
    out = io.BytesIO()
    result = write_estargz(io.BytesIO(tar_bytes), out)
    blob = out.getvalue()
    assert result.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert result.size == len(blob)
    everything = gzip.decompress(blob)  # one valid gzip stream of many members
    assert result.diff_id == "sha256:" + hashlib.sha256(everything).hexdigest()
    assert result.uncompressed_size == len(everything) == int(row["uncompressed_size"])
    rebuilt = io.BytesIO()
    out.seek(0)
    info = verify_estargz(
        out,
        expected_toc_digest=result.toc_digest,
        expected_diff_id=result.diff_id,
        expected_uncompressed_size=result.uncompressed_size,
        tar_out=rebuilt,
    )
    assert rebuilt.getvalue() == tar_bytes
    mine = json.loads(info.toc_json)["entries"]
    assert len(mine) == len(buildkit_entries)
    for ours, theirs in zip(mine, buildkit_entries, strict=True):
        ours = {k: v for k, v in ours.items() if k != "offset"}
        theirs = {k: v for k, v in theirs.items() if k != "offset"}
        if theirs.get("chunkSize") and theirs.get("size") == theirs.get("chunkSize"):
            # BuildKit sets chunkSize on a single full-size chunk; the spec says the last chunk has none.
            theirs.pop("chunkSize")
        assert ours == theirs
    assert write_estargz(io.BytesIO(tar_bytes), io.BytesIO()) == result  # deterministic


def _sample_tar(big: int = 2500) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:

        def add(info: tarfile.TarInfo, data: bytes | None = None) -> None:
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(data) if data is not None else None)

        d = tarfile.TarInfo("dir")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        add(d)
        long_name = "dir/" + "n" * 150 + ".txt"
        f = tarfile.TarInfo(long_name)
        f.size, f.mode, f.uid, f.gid, f.uname, f.gname = 5, 0o4755, 1000, 1000, "user", "group"
        f.pax_headers = {"SCHILY.xattr.user.k": "v"}
        add(f, b"hello")
        b = tarfile.TarInfo("dir/big.bin")
        b.size, b.mode = big, 0o644
        add(b, bytes(range(256)) * (big // 256) + b"x" * (big % 256))
        e = tarfile.TarInfo("dir/.wh.gone")
        add(e, b"")
        s = tarfile.TarInfo("dir/link")
        s.type, s.linkname = tarfile.SYMTYPE, "big.bin"
        add(s)
        h = tarfile.TarInfo("dir/hard")
        h.type, h.linkname = tarfile.LNKTYPE, "dir/big.bin"
        add(h)
        p = tarfile.TarInfo("dir/fifo")
        p.type, p.mode = tarfile.FIFOTYPE, 0o644
        add(p)
        c = tarfile.TarInfo("dir/null")
        c.type, c.devmajor, c.devminor, c.mode = tarfile.CHRTYPE, 1, 3, 0o666
        add(c)
    return buf.getvalue()


def test_toc_entries_for_every_kind_and_chunking() -> None:
    tar_bytes = _sample_tar()
    out = io.BytesIO()
    result = write_estargz(io.BytesIO(tar_bytes), out, 9, chunk_size=1000)
    out.seek(0)
    info = verify_estargz(out, expected_toc_digest=result.toc_digest)
    entries = json.loads(info.toc_json)["entries"]
    by_name: dict[str, list[dict[str, object]]] = {}
    for e in entries:
        by_name.setdefault(e["name"], []).append(e)
    assert by_name["dir/"][0] == {
        "name": "dir/",
        "type": "dir",
        "modtime": "2023-11-14T22:13:20Z",
        "mode": 0o755,
    }
    long_entry = next(v[0] for k, v in by_name.items() if k.endswith(".txt"))
    assert (
        long_entry["mode"] == 0o4755
        and long_entry["uid"] == 1000
        and long_entry["userName"] == "user"
    )
    assert long_entry["xattrs"] == {"user.k": "dg=="}
    assert (
        long_entry["digest"]
        == long_entry["chunkDigest"]
        == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    )
    big = by_name["dir/big.bin"]
    assert [e["type"] for e in big] == ["reg", "chunk", "chunk"]
    assert [e.get("chunkOffset", 0) for e in big] == [0, 1000, 2000]
    assert [e.get("chunkSize") for e in big] == [1000, 1000, None]  # the last chunk has none
    assert len({e["offset"] for e in big}) == 3
    assert by_name["dir/.wh.gone"] == [
        {
            "name": "dir/.wh.gone",
            "type": "reg",
            "modtime": "2023-11-14T22:13:20Z",
            "mode": 0o644,
            "digest": "sha256:" + hashlib.sha256(b"").hexdigest(),
        }
    ]
    assert by_name["dir/link"][0]["linkName"] == "big.bin"
    assert by_name["dir/hard"][0]["type"] == "hardlink"
    assert by_name["dir/fifo"][0]["type"] == "fifo"
    assert by_name["dir/null"][0]["devMajor"] == 1 and by_name["dir/null"][0]["devMinor"] == 3
    assert info.chunks == 4 and info.files == 2
    # plain gzip readers see the layer's files, not the TOC (its end-of-archive comes first)
    out.seek(0)
    with (
        tarfile.open(fileobj=out, mode="r:gz") as tf,
        tarfile.open(fileobj=io.BytesIO(tar_bytes)) as orig,
    ):
        assert tf.getnames() == orig.getnames()


def test_system_tar_lists_the_files(tmp_path: pathlib.Path) -> None:
    if shutil.which("tar") is None:
        pytest.skip("no tar binary")
    path = tmp_path / "layer.tar.gz"
    with open(path, "wb") as f:
        write_estargz(io.BytesIO(_sample_tar()), f)
    listing = subprocess.run(
        ["tar", "-tzf", str(path)], check=True, capture_output=True, text=True
    ).stdout
    assert "dir/big.bin" in listing and "stargz.index.json" not in listing


@pytest.mark.parametrize("level", range(10))
def test_every_level_verifies(level: int) -> None:
    out = io.BytesIO()
    compress_stream(io.BytesIO(_sample_tar(300)), out, "estargz", level)
    out.seek(0)
    assert is_estargz(out)
    verify_estargz(out)
    for engine in GZIP_ENGINES:
        other = io.BytesIO()
        write_estargz(io.BytesIO(_sample_tar(300)), other, level, engine=engine)
        other.seek(0)
        verify_estargz(other)


def test_rejects_non_tar_and_toc_name_in_input() -> None:
    with pytest.raises(EStargzError, match="checksum"):
        write_estargz(io.BytesIO(b"x" * 1024), io.BytesIO())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("stargz.index.json")
        tf.addfile(info, io.BytesIO(b""))
    with pytest.raises(EStargzError, match="already contains"):
        write_estargz(io.BytesIO(buf.getvalue()), io.BytesIO())


def _mason_blob() -> bytes:
    out = io.BytesIO()
    write_estargz(io.BytesIO(_sample_tar()), out, chunk_size=1000)
    return out.getvalue()


def test_rejects_bad_footer() -> None:
    blob = bytearray(_mason_blob())
    blob[-15] ^= 0x01  # inside "STARGZ"
    with pytest.raises(EStargzError, match="bad footer") as info:
        verify_estargz(io.BytesIO(bytes(blob)))
    assert info.value.reference == "estargz-bad-footer"
    assert not is_estargz(io.BytesIO(bytes(blob)))
    with pytest.raises(EStargzError, match="bad footer"):
        verify_estargz(io.BytesIO(gzip.compress(_sample_tar())))  # plain gzip is not eStargz
    # an offset beyond the blob
    good = _mason_blob()
    with pytest.raises(EStargzError, match="beyond the blob"):
        verify_estargz(io.BytesIO(good[:-51] + footer_bytes(len(good) * 2)))


def test_rejects_toc_digest_mismatch() -> None:
    blob = _mason_blob()
    with pytest.raises(EStargzError, match="TOC digest mismatch") as info:
        verify_estargz(io.BytesIO(blob), expected_toc_digest="sha256:" + "0" * 64)
    assert "sha256:" + "0" * 64 in str(info.value)


def _with_toc(blob: bytes, edit: object) -> bytes:
    toc_offset, toc_json, _ = read_toc(io.BytesIO(blob))
    toc = json.loads(toc_json)
    edit(toc)  # type: ignore[operator]
    new_json = json.dumps(toc, indent="\t").encode()
    return blob[:toc_offset] + gzip_member(_toc_tar(new_json)) + footer_bytes(toc_offset)


def test_rejects_chunk_digest_mismatch() -> None:
    def corrupt(toc: dict[str, list[dict[str, str]]]) -> None:
        chunk = next(e for e in toc["entries"] if e["type"] == "chunk")
        chunk["chunkDigest"] = "sha256:" + "1" * 64

    blob = _with_toc(_mason_blob(), corrupt)
    with pytest.raises(
        EStargzError, match=r"chunk digest mismatch for 'dir/big\.bin' at file offset 1000"
    ) as info:
        verify_estargz(io.BytesIO(blob))
    assert info.value.reference == "estargz-chunk-digest-mismatch"


def test_rejects_offset_that_is_not_a_member_boundary() -> None:
    def shift(toc: dict[str, list[dict[str, object]]]) -> None:
        chunk = next(e for e in toc["entries"] if e["type"] == "chunk")
        chunk["offset"] = int(chunk["offset"]) + 1  # type: ignore[call-overload]

    with pytest.raises(EStargzError, match="not the start of a gzip member"):
        verify_estargz(io.BytesIO(_with_toc(_mason_blob(), shift)))


def test_rejects_corrupt_payload_member() -> None:
    blob = bytearray(_mason_blob())
    toc_offset, _ = parse_footer(bytes(blob[-51:]))
    blob[toc_offset // 2] ^= 0xFF
    with pytest.raises(EStargzError):
        verify_estargz(io.BytesIO(bytes(blob)))


def test_rejects_toc_that_disagrees_with_tar() -> None:
    def drop(toc: dict[str, list[dict[str, object]]]) -> None:
        toc["entries"] = [e for e in toc["entries"] if e["name"] != "dir/fifo"]

    with pytest.raises(EStargzError, match="does not match TOC entry"):
        verify_estargz(io.BytesIO(_with_toc(_mason_blob(), drop)))


class _Trickle(io.RawIOBase):
    """A source that hands out at most ``step`` bytes per read (like a pipe)."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__()
        self._data = memoryview(data)
        self._pos = 0
        self._step = step

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self._step if n < 0 else min(n, self._step)
        data = bytes(self._data[self._pos : self._pos + n])
        self._pos += len(data)
        return data


def _headers_tar(dirs: int, trailing: int) -> bytes:
    """Many directories (a long run of headers with no file data) and a file, then
    ``trailing`` bytes after the end-of-archive blocks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for i in range(dirs):
            d = tarfile.TarInfo(f"d/{i:05d}")
            d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tf.addfile(d)
        f = tarfile.TarInfo("d/file")
        f.size = 3000
        tf.addfile(f, io.BytesIO(bytes(range(250)) * 12))
    return buf.getvalue() + bytes(range(256)) * (trailing // 256)


def _member_spans(blob: bytes, end: int) -> list[tuple[int, bytes]]:
    """(compressed offset, decompressed bytes) of each gzip member in ``blob[:end]``."""
    spans = []
    pos = 0
    while pos < end:
        d = zlib.decompressobj(31)
        out = d.decompress(blob[pos:end])
        assert d.eof
        spans.append((pos, out))
        pos = end - len(d.unused_data)
    return spans


@pytest.mark.parametrize("engine", GZIP_ENGINES)
def test_bytes_do_not_depend_on_threads_or_read_sizes(engine: str) -> None:
    tar_bytes = _sample_tar(9000)
    runs = []
    for threads, step in ((1, 1 << 20), (4, 1 << 20), (3, 700), (2, 1)):
        out = io.BytesIO()
        src = _Trickle(tar_bytes, step) if step < (1 << 20) else io.BytesIO(tar_bytes)
        runs.append(
            (
                write_estargz(src, out, chunk_size=1000, engine=engine, threads=threads),
                out.getvalue(),
            )
        )  # type: ignore[arg-type]
    assert all(run == runs[0] for run in runs)
    out = io.BytesIO(runs[0][1])
    verify_estargz(
        out, expected_toc_digest=runs[0][0].toc_digest, expected_diff_id=runs[0][0].diff_id
    )


@pytest.mark.parametrize("engine", GZIP_ENGINES)
def test_every_chunk_is_one_member_and_header_runs_are_cut(engine: str) -> None:
    # ~1.6 MiB of directory headers and ~2.5 MiB after the end-of-archive: both
    # cut into 1 MiB members; the file's chunk stays one member at its TOC offset.
    tar_bytes = _headers_tar(3300, 5 << 19)
    out = io.BytesIO()
    result = write_estargz(io.BytesIO(tar_bytes), out, engine=engine, threads=2)
    blob = out.getvalue()
    spans = _member_spans(blob, result.toc_offset)
    assert len(spans) >= 5
    assert all(
        len(data) <= 1 << 20 for _, data in spans[:-1] if not data.startswith(bytes(range(250)))
    )
    starts = {offset: data for offset, data in spans}
    out.seek(0)
    info = verify_estargz(out, expected_diff_id=result.diff_id)
    (file_entry,) = [e for e in info.entries if e["name"] == "d/file"]
    chunk = starts[file_entry["offset"]]
    assert chunk.startswith(bytes(range(250)) * 12)
    with (
        tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tf,
        tarfile.open(fileobj=io.BytesIO(tar_bytes)) as orig,
    ):
        assert tf.getnames() == orig.getnames()
        member = tf.extractfile("d/file")
        assert member is not None and member.read() == bytes(range(250)) * 12
    rebuilt = io.BytesIO()
    estargz_to_tar(io.BytesIO(blob), rebuilt)
    assert rebuilt.getvalue() == tar_bytes


def test_empty_input_is_a_toc_only_blob() -> None:
    out = io.BytesIO()
    result = write_estargz(io.BytesIO(b""), out)
    assert result.toc_offset == 0
    out.seek(0)
    info = verify_estargz(out, expected_diff_id=result.diff_id)
    assert info.entries == () and info.tar_size == 0


@pytest.mark.parametrize("level", [1, 6, 9])
def test_default_engine_is_no_bigger_than_zlib_at_the_same_level(level: int) -> None:
    tar_bytes = _headers_tar(200, 0) + _sample_tar(300_000)
    sizes = {}
    for engine in ("libdeflate", "zlib"):
        sizes[engine] = write_estargz(
            io.BytesIO(tar_bytes), io.BytesIO(), level, engine=engine
        ).size
    assert write_estargz(io.BytesIO(tar_bytes), io.BytesIO(), level).size == sizes["libdeflate"]
    assert sizes["libdeflate"] <= sizes["zlib"]


def test_unknown_engine_is_refused() -> None:
    with pytest.raises(CompressionError, match="engine"):
        write_estargz(io.BytesIO(_sample_tar()), io.BytesIO(), engine="brotli")


def test_accepts_a_signed_header_checksum_and_rejects_a_wrong_one() -> None:
    # Old tar writers summed the header bytes as signed chars; a non-ASCII name tells them apart.
    tar = bytearray(_headers_tar(1, 0))
    tar[0:3] = "é/".encode()
    signed = sum(b - 256 if b > 127 else b for b in tar[:148] + b" " * 8 + tar[156:512])
    tar[148:156] = b"%06o\0 " % signed
    result = write_estargz(io.BytesIO(bytes(tar)), out := io.BytesIO())
    out.seek(0)
    assert verify_estargz(out).entries[0]["name"] == "é/0000/"  # "é/" took the place of "d/0"
    assert result.size == len(out.getvalue())
    tar[148:156] = b"%06o\0 " % (signed + 1)
    with pytest.raises(EStargzError, match="checksum"):
        write_estargz(io.BytesIO(bytes(tar)), io.BytesIO())
