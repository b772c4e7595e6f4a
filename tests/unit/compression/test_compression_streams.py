from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import subprocess
import zlib

import pytest
import zstandard

import mason.compression.gzip as gzip_module
from mason.compression import CompressionError
from mason.compression.gzip import GZIP_ENGINES, GzipWriter, default_gzip_engine, gzip_backend
from mason.compression.streams import (
    check_level,
    compress_stream,
    detect_compression,
    open_compressor,
    open_decompressed,
)

# Compressible and incompressible parts, larger than one 1 MiB gzip block.
_rng = random.Random(7)
DATA = bytes(_rng.getrandbits(8) for _ in range(300_000)) + b"layer bytes " * 250_000


def _compress(data: bytes, compression: str, level: int | None = None) -> bytes:
    out = io.BytesIO()
    compress_stream(io.BytesIO(data), out, compression, level)
    return out.getvalue()


@pytest.mark.parametrize(
    ("compression", "level"),
    [
        ("gzip", None),
        ("gzip", 0),
        ("gzip", 1),
        ("gzip", 9),
        ("zstd", None),
        ("zstd", 0),
        ("zstd", 1),
        ("zstd", 19),
        ("uncompressed", None),
    ],
)
def test_round_trip(compression: str, level: int | None) -> None:
    blob = _compress(DATA, compression, level)
    with open_decompressed(io.BytesIO(blob), compression) as reader:
        assert reader.read() == DATA
    assert detect_compression(blob[:8]) == compression
    if compression != "uncompressed":
        assert len(blob) < len(DATA) or level == 0


def test_gzip_is_standard_and_deterministic() -> None:
    blob = _compress(DATA, "gzip")
    assert gzip.decompress(blob) == DATA  # stdlib reader
    assert blob[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0, OS 255
    assert _compress(DATA, "gzip") == blob


@pytest.mark.parametrize("engine", GZIP_ENGINES)
def test_gzip_bytes_do_not_depend_on_threads_or_write_sizes(engine: str) -> None:
    digests = set()
    for threads in (1, 3):
        for write_size in (1, 4096, 3 << 20):
            out = io.BytesIO()
            w = GzipWriter(out, 6, threads=threads, engine=engine, block_size=64 << 10)
            view = DATA[:200_000] if write_size == 1 else DATA
            if write_size == 1:
                for i in range(0, len(view), 997):  # many tiny writes
                    w.write(view[i : i + 997])
            else:
                for i in range(0, len(view), write_size):
                    w.write(view[i : i + write_size])
            w.close()
            assert gzip.decompress(out.getvalue()) == view  # every member
            digests.add((write_size == 1, hashlib.sha256(out.getvalue()).hexdigest()))
    assert len(digests) == 2  # one digest per input, whatever the threads and write sizes


def test_gzip_readable_by_system_gzip(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "x.gz")
    with open(path, "wb") as f:
        compress_stream(io.BytesIO(DATA), f, "gzip")
    out = subprocess.run(["gzip", "-dc", path], check=True, capture_output=True).stdout
    assert out == DATA


def test_zstd_is_one_frame_with_checksum() -> None:
    blob = _compress(DATA, "zstd")
    params = zstandard.get_frame_parameters(blob)
    assert params.has_checksum
    d = zstandard.ZstdDecompressor().decompressobj()
    assert d.decompress(blob) == DATA
    assert d.unused_data == b""  # nothing after the first frame
    assert _compress(DATA, "zstd") == blob  # deterministic
    assert (
        params.content_size == zstandard.CONTENTSIZE_UNKNOWN
    )  # never written: it would depend on the caller


def test_zstd_bytes_do_not_depend_on_threads_or_write_sizes() -> None:
    """libzstd's multi-threaded mode cuts jobs by level, not by workers or writes: larger
    than one job (8 MiB at level 3) so several jobs run, each worker count gives one blob."""
    data = DATA * 3 + _text_like(6_000_000)
    blobs = set()
    for threads, write_size in ((1, 1 << 20), (2, 65_537), (4, 9 << 20), (None, 3_000_001)):
        out = io.BytesIO()
        w = open_compressor(out, "zstd", 3, threads=threads)
        for i in range(0, len(data), write_size):
            w.write(data[i : i + write_size])
        w.close()
        blobs.add(out.getvalue())
    assert len(blobs) == 1
    assert zstandard.ZstdDecompressor().decompressobj().decompress(blobs.pop()) == data


def test_open_compressor_leaves_destination_open() -> None:
    for compression in ("gzip", "zstd", "uncompressed"):
        dst = io.BytesIO()
        w = open_compressor(dst, compression)
        w.write(b"hello")
        w.close()
        assert not dst.closed
        assert open_decompressed(io.BytesIO(dst.getvalue()), "auto").read() == b"hello"


def test_detection() -> None:
    assert detect_compression(b"\x1f\x8b\x08\x00") == "gzip"
    assert detect_compression(b"\x28\xb5\x2f\xfd") == "zstd"
    assert detect_compression(b"\x50\x2a\x4d\x18") == "zstd"  # skippable frame
    assert detect_compression(b"BZh91AY") == "bzip2"
    assert detect_compression(b"\xfd7zXZ\x00") == "xz"
    assert detect_compression(b"ustar or anything") == "uncompressed"
    assert detect_compression(b"") == "uncompressed"


def test_levels_validated() -> None:
    assert check_level("gzip", None) == 6
    assert check_level("zstd", 0) == 3
    assert check_level("zstd", 22) == 22
    assert check_level("uncompressed", 5) is None
    for compression, level in (("gzip", 10), ("gzip", -1), ("zstd", 23), ("estargz", 11)):
        with pytest.raises(CompressionError, match="level"):
            check_level(compression, level)
    with pytest.raises(CompressionError, match="unknown compression"):
        check_level("brotli", None)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_corrupt_data_raises_compression_error(compression: str) -> None:
    blob = bytearray(_compress(DATA, compression))
    blob[len(blob) // 2] ^= 0xFF
    blob[len(blob) // 2 + 1] ^= 0xFF
    with pytest.raises(CompressionError, match=f"corrupt {compression}"):
        open_decompressed(io.BytesIO(bytes(blob)), compression, what="blob X").read()


def test_truncated_gzip_raises_compression_error() -> None:
    blob = _compress(DATA, "gzip")
    with pytest.raises(CompressionError, match="corrupt gzip"):
        open_decompressed(io.BytesIO(blob[: len(blob) // 2]), "gzip").read()


def test_backend_reported() -> None:
    assert gzip_backend() in ("isal", "zlib")
    assert gzip_backend(prefer_isal=False) == "zlib"
    assert default_gzip_engine() == "libdeflate"  # a declared dependency
    with pytest.raises(CompressionError, match="gzip engine 'pigz' is not available"):
        GzipWriter(io.BytesIO(), 6, engine="pigz")


def _gzip_size(data: bytes, level: int, engine: str) -> int:
    out = io.BytesIO()
    w = GzipWriter(out, level, threads=2, engine=engine)
    w.write(data)
    w.close()
    assert gzip.decompress(out.getvalue()) == data
    return len(out.getvalue())


def _text_like(size: int) -> bytes:
    """Source-like text: words with repeats at all distances (where matchers differ)."""
    rng = random.Random(11)
    words = [
        bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz_(){};=") for _ in range(rng.randint(2, 10)))
        for _ in range(3000)
    ]
    return b" ".join(rng.choice(words) for _ in range(size // 6))[:size]


@pytest.mark.parametrize("level", [1, 6, 9])
def test_default_gzip_engine_is_no_bigger_than_zlib_at_the_same_level(level: int) -> None:
    """The level promise: "the same level" as Go's compress/gzip (zlib-class) gives no larger
    blobs (multi-member framing included), unlike ISA-L, which trades size for speed."""
    data = _text_like(2_500_000)
    zlib_size = len(zlib.compress(data, level, wbits=31))
    assert _gzip_size(data, level, "libdeflate") <= zlib_size
    if level == 6:
        assert _gzip_size(data, level, "isal") > zlib_size  # the documented trade-off


def test_libdeflate_gzip_is_one_member_per_block_with_go_headers() -> None:
    out = io.BytesIO()
    w = GzipWriter(out, 6, engine="libdeflate", block_size=1 << 20)
    w.write(DATA)
    w.close()
    blob = out.getvalue()
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    assert blob.count(header) == -(-len(DATA) // (1 << 20))  # one member per started MiB
    d = zlib.decompressobj(31)
    assert d.decompress(blob) == DATA[: 1 << 20] and d.unused_data.startswith(header)


@pytest.mark.parametrize("engine", GZIP_ENGINES)
def test_gzip_empty_input_is_one_valid_member(engine: str) -> None:
    out = io.BytesIO()
    GzipWriter(out, 6, engine=engine).close()
    assert gzip.decompress(out.getvalue()) == b""
    assert out.getvalue().startswith(b"\x1f\x8b\x08")


def test_gzip_input_ending_on_a_block_boundary_has_no_empty_member() -> None:
    out = io.BytesIO()
    w = GzipWriter(out, 6, engine="libdeflate", block_size=64 << 10)
    w.write(DATA[: 128 << 10])
    w.close()
    assert out.getvalue().count(b"\x1f\x8b\x08\x00") == 2
    assert gzip.decompress(out.getvalue()) == DATA[: 128 << 10]


def _libdeflate_gzip(data: bytes) -> bytes:
    out = io.BytesIO()
    w = GzipWriter(out, 6, engine="libdeflate", block_size=1 << 20, threads=1)
    w.write(data)
    w.close()
    return out.getvalue()


def test_an_incompressible_block_is_stored_not_deflated() -> None:
    """Random bytes (or an already compressed file) cost libdeflate ~10 ms/MiB for nothing:
    the member holds stored deflate blocks, 5 bytes of header per 64 KiB - 1 of data."""
    data = random.Random(7).randbytes(1 << 20)
    blob = _libdeflate_gzip(data)
    stored_body = len(data) + 5 * -(-len(data) // 0xFFFF)
    assert len(blob) == 10 + stored_body + 8
    assert gzip.decompress(blob) == data


def test_a_block_compressible_between_its_probes_is_still_deflated() -> None:
    """Random bytes where the cheap probes look (every 128 KiB of a 1 MiB block) must not
    make a block of text go out stored: the whole block is checked before storing it."""
    rng = random.Random(8)
    block = bytearray(_text_like(1 << 20))
    for offset in range(0, 1 << 20, 1 << 17):
        block[offset : offset + 4096] = rng.randbytes(4096)
    blob = _libdeflate_gzip(bytes(block))
    assert len(blob) < len(block) * 0.6
    assert gzip.decompress(blob) == bytes(block)


def test_read_ahead_gzip_gives_the_same_bytes_in_blocks() -> None:
    """A read-ahead reader (decompressing in a thread) gives every byte, in order, and each
    read returns once a block is there, not when all that was asked is."""
    blob = _compress(DATA, "gzip")
    with open_decompressed(io.BytesIO(blob), "gzip", ahead=True) as reader:
        first = reader.read(10240)
        rest = reader.read()
    assert first + rest == DATA


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_read_ahead_gzip_reports_bad_data_to_its_reader(damage: str) -> None:
    blob = bytearray(_compress(DATA, "gzip"))
    if damage == "flipped":
        blob[len(blob) // 2 : len(blob) // 2 + 2] = bytes(
            b ^ 0xFF for b in blob[len(blob) // 2 : len(blob) // 2 + 2]
        )
    else:
        del blob[len(blob) // 2 :]
    reader = open_decompressed(io.BytesIO(bytes(blob)), "gzip", what="blob X", ahead=True)
    with reader, pytest.raises(CompressionError, match="blob X: corrupt gzip"):
        reader.read()


def test_read_ahead_gzip_stops_its_thread_when_closed_early() -> None:
    import threading

    before = set(threading.enumerate())
    reader = open_decompressed(io.BytesIO(_compress(DATA * 4, "gzip")), "gzip", ahead=True)
    assert reader.read(100) == DATA[:100]
    assert set(threading.enumerate()) - before  # its thread reads ahead
    reader.close()
    assert not set(threading.enumerate()) - before


@pytest.mark.parametrize(
    ("size", "pools"), [(10_000, 0), ((64 << 10) - 1, 0), (3 * (64 << 10) + 5, 1)]
)
def test_a_stream_of_one_block_is_compressed_without_a_thread_pool(
    monkeypatch: pytest.MonkeyPatch, size: int, pools: int
) -> None:
    """Most layers are one block: a pool would only add a thread's start and two GIL handoffs
    (5 ms beside a busy thread); blocks of a bigger stream still go to the threads."""
    made: list[object] = []

    class CountedPool(gzip_module.ThreadPoolExecutor):
        def __init__(self, *args: object, **kwargs: object) -> None:
            made.append(self)
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gzip_module, "ThreadPoolExecutor", CountedPool)
    data = random.Random(size).randbytes(size)
    out = io.BytesIO()
    w = GzipWriter(out, 6, threads=2, block_size=64 << 10)
    w.write(data)
    w.close()
    assert len(made) == pools
    assert gzip.decompress(out.getvalue()) == data
