"""Compression throughput on the same layer tar: gzip engines (libdeflate, ISA-L, zlib), zstd, eStargz.

Run: .venv/bin/python bench/bench_compression.py [--size-mib 128] [--input TAR] [--repeat 3] [--no-cli]
Prints MB/s of uncompressed input (best of --repeat) and the compressed ratio.

DESIGN §7 asks for gzip and zstd throughput at least BuildKit's at the same level. BuildKit
compresses gzip with Go's compress/gzip (single-threaded) and zstd with one encoder per
CPU. Baselines on the same bytes, run from a file to a temporary file: Go's compress/gzip
itself (``go gzip -6``: a 20-line program built here when a Go toolchain is installed),
``gzip -6`` (zlib, one thread), ``pigz -6`` (every CPU) and ``zstd -3`` (one thread and
``-T0``). Missing tools are installed with apt when running as root (golang-go, pigz, zstd).
The last table gives mason / baseline throughput and size. Not a test: numbers depend on
the machine, and on a shared machine use several rounds (the best one counts).
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


def _gzip(engine: str, threads: int | None) -> Callable[[bytes, _Null], None]:
    def run(data: bytes, out: _Null) -> None:
        w = GzipWriter(out, None, threads=threads, engine=engine)  # type: ignore[arg-type]
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


_GO_GZIP = """package main

import (
	"bufio"
	"compress/gzip"
	"io"
	"os"
	"strconv"
)

func main() {
	level, _ := strconv.Atoi(os.Args[1])
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	w, err := gzip.NewWriterLevel(out, level)
	if err != nil {
		panic(err)
	}
	if _, err := io.Copy(w, bufio.NewReaderSize(os.Stdin, 1<<20)); err != nil {
		panic(err)
	}
	if err := w.Close(); err != nil {
		panic(err)
	}
	if err := out.Flush(); err != nil {
		panic(err)
	}
}
"""


def _go_gzip(workdir: Path) -> Path | None:
    """Build the Go compress/gzip baseline (stdlib only, no module download); None without Go."""
    if shutil.which("go") is None:
        return None
    (workdir / "main.go").write_text(_GO_GZIP)
    (workdir / "go.mod").write_text("module gogzip\n\ngo 1.19\n")
    env = {**os.environ, "GOCACHE": str(workdir / "cache"), "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    done = subprocess.run(["go", "build", "-o", "gogzip", "."], cwd=workdir, env=env, capture_output=True, check=False)
    return workdir / "gogzip" if done.returncode == 0 else None


def _ensure_tools(names: list[str]) -> None:
    """apt-get install the missing command-line baselines (root only; otherwise they are skipped)."""
    packages = {"gzip": "gzip", "pigz": "pigz", "zstd": "zstd", "go": "golang-go"}
    missing = [packages[n] for n in names if shutil.which(n) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], capture_output=True, check=False)


def _cli_rows(cpus: int, workdir: Path) -> list[tuple[str, list[str]]]:
    _ensure_tools(["gzip", "pigz", "zstd", "go"])
    go = _go_gzip(workdir)
    rows = [
        ("go compress/gzip -6 (1 thread)", [str(go) if go else "missing-go", "6"]),
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
    ("gzip libdeflate (level 6, 1 thread)", "go compress/gzip -6 (1 thread)"),
    ("gzip libdeflate (level 6, {cpus} threads)", "go compress/gzip -6 (1 thread)"),
    ("gzip libdeflate (level 6, {cpus} threads)", "cli pigz -6 ({cpus} threads)"),
    ("gzip isal (level 6, {cpus} threads)", "go compress/gzip -6 (1 thread)"),
    ("gzip zlib (level 6, 1 thread)", "cli gzip -6 (1 thread)"),
    ("zstd (level 3, libzstd workers)", "cli zstd -3 (-T0, {cpus} threads)"),
    ("zstd (level 3, libzstd workers)", "cli zstd -3 (1 thread)"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--input", type=Path, help="compress this tar instead of the generated one")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-zlib", action="store_true", help="skip the slow zlib rows")
    parser.add_argument("--no-cli", action="store_true", help="skip the command-line baselines")
    args = parser.parse_args()
    data = args.input.read_bytes() if args.input else make_layer(args.size_mib << 20)
    cpus = len(os.sched_getaffinity(0))
    rows: list[tuple[str, Callable[[bytes, _Null], None]]] = [
        (f"gzip libdeflate (level 6, {cpus} threads)", _gzip("libdeflate", None)),
        ("gzip libdeflate (level 6, 1 thread)", _gzip("libdeflate", 1)),
        (f"gzip isal (level 6, {cpus} threads)", _gzip("isal", None)),
        ("gzip isal (level 6, 1 thread)", _gzip("isal", 1)),
    ]
    if not args.skip_zlib:
        rows += [
            (f"gzip zlib (level 6, {cpus} threads)", _gzip("zlib", None)),
            ("gzip zlib (level 6, 1 thread)", _gzip("zlib", 1)),
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
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mason-bench-go-")))
            timed += [(name, _cli(cmd, Path(tmp.name))) for name, cmd in _cli_rows(cpus, workdir)]
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
    print("\nmason vs baseline (speed: higher is mason faster; size: below 1 is mason smaller)")
    for ours, theirs in _PAIRS:
        ours, theirs = ours.format(cpus=cpus), theirs.format(cpus=cpus)
        if ours in speed and theirs in speed:
            print(f"  {ours:<40} vs {theirs:<32} speed {speed[ours] / speed[theirs]:>5.2f}x"
                  f"  size {sizes[ours] / sizes[theirs]:.3f}")
    print("(the cli rows include process start-up and file I/O: a few ms on this input)")


if __name__ == "__main__":
    main()
