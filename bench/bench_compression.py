"""Compression throughput on the same layer tar: gzip (ISA-L vs zlib), zstd, eStargz.

Run: .venv/bin/python bench/bench_compression.py [--size-mib 128] [--repeat 3]
Prints MB/s of uncompressed input (best of --repeat) and the compressed ratio.
Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import random
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from mason.compression import compress_stream
from mason.compression.estargz import write_estargz
from mason.compression.gzip import GzipWriter

_BASE = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "compression" / "estargz" / "blobs" / "sha256"
_BUSYBOX = _BASE / "d4d85e2edd83196bacd4264b08fa24335edfa7bb93f2bb27220cc111b78133fe"


def make_layer(size: int) -> bytes:
    """A layer-like tar: busybox binary copies, source-like text, some incompressible data."""
    rng = random.Random(42)
    busybox = b""
    if _BUSYBOX.exists():
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(_BUSYBOX.read_bytes()))) as tf:
            member = tf.extractfile("bin/busybox")
            busybox = member.read() if member else b""
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz_ (){};=\n") for _ in range(rng.randint(2, 12))) for _ in range(4000)]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        i = 0
        while buf.tell() < size:
            kind = i % 4
            if kind == 0 and busybox:
                data = busybox
            elif kind == 3:
                data = rng.randbytes(rng.randint(10_000, 2_000_000))
            else:
                data = b" ".join(rng.choice(words) for _ in range(rng.randint(1000, 200_000)))
            info = tarfile.TarInfo(f"usr/lib/pkg{i // 50}/file{i}")
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            tf.addfile(info, io.BytesIO(data))
            i += 1
    return buf.getvalue()


class _Null(io.RawIOBase):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        n = len(memoryview(b))  # type: ignore[arg-type]
        self.n += n
        return n


def _gzip(prefer_isal: bool, threads: int | None) -> Callable[[bytes, _Null], None]:
    def run(data: bytes, out: _Null) -> None:
        w = GzipWriter(out, None, threads=threads, prefer_isal=prefer_isal)  # type: ignore[arg-type]
        view = memoryview(data)
        for i in range(0, len(data), 1 << 20):
            w.write(view[i : i + (1 << 20)])
        w.close()

    return run


def _via(compression: str) -> Callable[[bytes, _Null], None]:
    def run(data: bytes, out: _Null) -> None:
        compress_stream(io.BytesIO(data), out, compression)  # type: ignore[arg-type]

    return run


def _estargz(data: bytes, out: _Null) -> None:
    write_estargz(io.BytesIO(data), out)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-zlib", action="store_true", help="skip the slow zlib rows")
    args = parser.parse_args()
    data = make_layer(args.size_mib << 20)
    cpus = len(os.sched_getaffinity(0))
    rows: list[tuple[str, Callable[[bytes, _Null], None]]] = [
        (f"gzip isal (level 6, {cpus} threads)", _gzip(True, None)),
        ("gzip isal (level 6, 1 thread)", _gzip(True, 1)),
    ]
    if not args.skip_zlib:
        rows += [
            (f"gzip zlib (level 6, {cpus} threads)", _gzip(False, None)),
            ("gzip zlib (level 6, 1 thread)", _gzip(False, 1)),
        ]
    rows += [
        ("zstd (level 3, libzstd workers)", _via("zstd")),
        ("estargz isal (level 6, 4 MiB chunks)", _estargz),
        ("uncompressed (copy)", _via("uncompressed")),
    ]
    print(f"input: {len(data) / 1e6:.1f} MB layer tar, {cpus} CPUs, best of {args.repeat}")
    print(f"{'compression':<40} {'MB/s':>9} {'ratio':>7}")
    for name, fn in rows:
        best = float("inf")
        size = 0
        for _ in range(args.repeat):
            out = _Null()
            start = time.perf_counter()
            fn(data, out)
            best = min(best, time.perf_counter() - start)
            size = out.n
        print(f"{name:<40} {len(data) / best / 1e6:>9.0f} {size / len(data):>7.3f}")


if __name__ == "__main__":
    main()
