"""Compression throughput on the same layer tar: gzip (ISA-L vs zlib), zstd, eStargz.

Run: .venv/bin/python bench/bench_compression.py [--size-mib 128] [--repeat 3] [--no-cli]
Prints MB/s of uncompressed input (best of --repeat) and the compressed ratio.

DESIGN §7 asks for gzip and zstd throughput at least BuildKit's at the same level. BuildKit
compresses with Go (compress/gzip, single-threaded; klauspost zstd with one encoder per
CPU); no Go toolchain is assumed here, so the baselines are the command-line tools on the
same bytes, run from a file to /dev/null-like output: ``gzip -6`` (zlib-class, one thread:
the Go stdlib deflate is no faster), ``pigz -6`` (every CPU) and ``zstd -3`` (one thread
and ``-T0``). Missing ``pigz``/``zstd`` are installed with apt when running as root.
The last table gives mason / baseline throughput. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
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


def _ensure_tools(names: list[str]) -> None:
    """apt-get install the missing command-line baselines (root only; otherwise they are skipped)."""
    packages = {"gzip": "gzip", "pigz": "pigz", "zstd": "zstd"}
    missing = [packages[n] for n in names if shutil.which(n) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], capture_output=True, check=False)


def _cli_rows(cpus: int) -> list[tuple[str, list[str]]]:
    _ensure_tools(["gzip", "pigz", "zstd"])
    rows = [
        ("cli gzip -6 (1 thread)", ["gzip", "-6", "-c"]),
        (f"cli pigz -6 ({cpus} threads)", ["pigz", "-6", "-c", "-p", str(cpus)]),
        ("cli zstd -3 (1 thread)", ["zstd", "-3", "-c", "-q", "-T1"]),
        (f"cli zstd -3 (-T0, {cpus} threads)", ["zstd", "-3", "-c", "-q", "-T0"]),
    ]
    return [(name, cmd) for name, cmd in rows if shutil.which(cmd[0])]


def _cli(cmd: list[str], data_file: Path) -> Callable[[], tuple[float, int]]:
    """Wall time of ``cmd < data_file > tmpfile`` and the output size."""

    def run() -> tuple[float, int]:
        with tempfile.TemporaryFile() as out, open(data_file, "rb") as src:
            start = time.perf_counter()
            subprocess.run(cmd, stdin=src, stdout=out, check=True)
            return time.perf_counter() - start, os.fstat(out.fileno()).st_size

    return run


def _in_process(fn: Callable[[bytes, _Null], None], data: bytes) -> Callable[[], tuple[float, int]]:
    def run() -> tuple[float, int]:
        out = _Null()
        start = time.perf_counter()
        fn(data, out)
        return time.perf_counter() - start, out.n

    return run


# (mason row, baseline row): compared in the last table
_PAIRS = (
    ("gzip isal (level 6, 1 thread)", "cli gzip -6 (1 thread)"),
    ("gzip isal (level 6, {cpus} threads)", "cli pigz -6 ({cpus} threads)"),
    ("gzip zlib (level 6, 1 thread)", "cli gzip -6 (1 thread)"),
    ("zstd (level 3, libzstd workers)", "cli zstd -3 (-T0, {cpus} threads)"),
    ("zstd (level 3, libzstd workers)", "cli zstd -3 (1 thread)"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-zlib", action="store_true", help="skip the slow zlib rows")
    parser.add_argument("--no-cli", action="store_true", help="skip the command-line baselines")
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
    print(f"input: {len(data) / 1e6:.1f} MB layer tar, {cpus} CPUs, best of {args.repeat} (rounds interleave "
          "every row, so load from other processes hits all rows alike)")
    with contextlib.ExitStack() as stack:
        timed: list[tuple[str, Callable[[], tuple[float, int]]]] = [(name, _in_process(fn, data)) for name, fn in rows]
        if not args.no_cli:
            tmp = stack.enter_context(tempfile.NamedTemporaryFile(prefix="mason-bench-layer-"))
            tmp.write(data)
            tmp.flush()
            timed += [(name, _cli(cmd, Path(tmp.name))) for name, cmd in _cli_rows(cpus)]
        best: dict[str, float] = {}
        sizes: dict[str, int] = {}
        for _ in range(args.repeat):
            for name, run in timed:
                seconds, sizes[name] = run()
                best[name] = min(best.get(name, float("inf")), seconds)
    print(f"{'compression':<40} {'MB/s':>9} {'ratio':>7}")
    speed = {name: len(data) / seconds / 1e6 for name, seconds in best.items()}
    for name, _ in timed:
        print(f"{name:<40} {speed[name]:>9.0f} {sizes[name] / len(data):>7.3f}")
    if args.no_cli:
        return
    print("\nmason vs command-line baseline (throughput ratio, higher: mason faster)")
    for ours, theirs in _PAIRS:
        ours, theirs = ours.format(cpus=cpus), theirs.format(cpus=cpus)
        if ours in speed and theirs in speed:
            print(f"  {ours:<38} vs {theirs:<32} {speed[ours] / speed[theirs]:>5.2f}x")
    print("(the cli rows include process start-up and file I/O: a few ms on this input)")


if __name__ == "__main__":
    main()
