"""Compression throughput on the same layer tar: gzip engines (libdeflate, ISA-L, zlib), zstd, eStargz.

Run: .venv/bin/python bench/bench_compression.py [--size-mib 128] [--input TAR] [--repeat 3] [--no-cli]
Prints MB/s of uncompressed input (best of --repeat) and the compressed ratio.

Real layers (issue 6: eStargz write throughput next to gzip and zstd on the same layers):
.venv/bin/python bench/bench_compression.py --real [--examples] [--layer PATH ...]
compresses each of these layers with every gzip engine, zstd, eStargz (per engine) and Go's
compress/gzip and prints MB/s and size per layer: the busybox base layer of tests/support,
tars of /usr/lib/python3*, with ``--examples`` the layers of the examples/
build (mason builds it against a local docker-registry holding the busybox base, output
``type=oci,tar=false,compression=uncompressed``), and each ``--layer`` (a layer tar, an OCI
layout directory: its layers, or a directory: tarred).

docs/architecture.md §7 asks for gzip and zstd throughput at least BuildKit's at the same level. BuildKit
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

from mason.compression.estargz import write_estargz
from mason.compression.gzip import GzipWriter
from mason.compression.streams import compress_stream, open_decompressed

_REPO = Path(__file__).resolve().parents[1]

# the busybox base layer BuildKit exported (tests/data/compression/README.md)
_BASE = _REPO / "tests" / "data" / "compression" / "estargz" / "blobs" / "sha256"
_BUSYBOX = _BASE / "d4d85e2edd83196bacd4264b08fa24335edfa7bb93f2bb27220cc111b78133fe"


def make_layer(size: int) -> bytes:
    """A layer-like tar: busybox binary copies, source-like text, some incompressible data."""
    rng = random.Random(42)
    busybox = b""
    if _BUSYBOX.exists():
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(_BUSYBOX.read_bytes()))) as tf:
            member = tf.extractfile("bin/busybox")
            busybox = member.read() if member else b""
    words = [
        bytes(
            rng.choice(b"abcdefghijklmnopqrstuvwxyz_ (){};=\n") for _ in range(rng.randint(2, 12))
        )
        for _ in range(4000)
    ]
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


def _estargz(
    engine: str | None = None, threads: int | None = None
) -> Callable[[bytes, _Null], None]:
    def run(data: bytes, out: _Null) -> None:
        write_estargz(io.BytesIO(data), out, engine=engine, threads=threads)  # type: ignore[arg-type]

    return run


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
    env = {
        **os.environ,
        "GOCACHE": str(workdir / "cache"),
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
    }
    done = subprocess.run(
        ["go", "build", "-o", "gogzip", "."], cwd=workdir, env=env, capture_output=True, check=False
    )
    return workdir / "gogzip" if done.returncode == 0 else None


def _ensure_tools(names: list[str]) -> None:
    """apt-get install the missing command-line baselines (root only; otherwise they are skipped)."""
    packages = {"gzip": "gzip", "pigz": "pigz", "zstd": "zstd", "go": "golang-go"}
    missing = [packages[n] for n in names if shutil.which(n) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", *missing], capture_output=True, check=False
        )


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


def _best_of(
    timed: list[tuple[str, Callable[[], tuple[float, int]]]], repeat: int
) -> tuple[dict[str, float], dict[str, int]]:
    """Best seconds and output size of each row; rounds interleave every row, so load
    from other processes hits all rows alike."""
    best: dict[str, float] = {}
    sizes: dict[str, int] = {}
    for _ in range(repeat):
        for name, run in timed:
            seconds, sizes[name] = run()
            best[name] = min(best.get(name, float("inf")), seconds)
    return best, sizes


# (mason row, baseline row): compared in the last table
_PAIRS = (
    ("gzip libdeflate (level 6, 1 thread)", "go compress/gzip -6 (1 thread)"),
    ("gzip libdeflate (level 6, {cpus} threads)", "go compress/gzip -6 (1 thread)"),
    ("gzip libdeflate (level 6, {cpus} threads)", "cli pigz -6 ({cpus} threads)"),
    ("gzip isal (level 6, {cpus} threads)", "go compress/gzip -6 (1 thread)"),
    ("gzip zlib (level 6, 1 thread)", "cli gzip -6 (1 thread)"),
    ("estargz libdeflate (level 6, 1 thread)", "go compress/gzip -6 (1 thread)"),
    ("estargz libdeflate (level 6, {cpus} threads)", "go compress/gzip -6 (1 thread)"),
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
    parser.add_argument(
        "--real", action="store_true", help="real layers, a table per layer (see above)"
    )
    parser.add_argument(
        "--examples", action="store_true", help="with --real: add the examples/ build's layers"
    )
    parser.add_argument(
        "--layer", type=Path, action="append", default=[], help="with --real: add this layer"
    )
    args = parser.parse_args()
    if args.real:
        real_layers_table(args)
        return
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
        (f"estargz libdeflate (level 6, {cpus} threads)", _estargz()),
        ("estargz libdeflate (level 6, 1 thread)", _estargz(threads=1)),
        (f"estargz isal (level 6, {cpus} threads)", _estargz("isal")),
        ("uncompressed (copy)", _via("uncompressed")),
    ]
    print(
        f"input: {len(data) / 1e6:.1f} MB layer tar, {cpus} CPUs, best of {args.repeat} (rounds interleave "
        "every row, so load from other processes hits all rows alike)"
    )
    with contextlib.ExitStack() as stack:
        timed: list[tuple[str, Callable[[], tuple[float, int]]]] = [
            (name, _in_process(fn, data)) for name, fn in rows
        ]
        if not args.no_cli:
            tmp = stack.enter_context(tempfile.NamedTemporaryFile(prefix="mason-bench-layer-"))
            tmp.write(data)
            tmp.flush()
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="mason-bench-go-"))
            )
            timed += [(name, _cli(cmd, Path(tmp.name))) for name, cmd in _cli_rows(cpus, workdir)]
        best, sizes = _best_of(timed, args.repeat)
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
            print(
                f"  {ours:<40} vs {theirs:<32} speed {speed[ours] / speed[theirs]:>5.2f}x"
                f"  size {sizes[ours] / sizes[theirs]:.3f}"
            )
    print("(the cli rows include process start-up and file I/O: a few ms on this input)")


# -- real layers ----------------------------------------------------------------------


def _tar_dir(root: Path) -> bytes:
    """A layer-like tar of ``root`` (sorted, owner root), unreadable files left out."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in [*sorted(dirnames), *sorted(filenames)]:
                path = Path(dirpath, name)
                try:
                    info = tf.gettarinfo(str(path), str(path.relative_to(root.parent)))
                    info.uid = info.gid = 0
                    info.uname = info.gname = "root"
                    if info.isfile():
                        with open(path, "rb") as f:
                            tf.addfile(info, f)
                    elif info.isdir() or info.issym():
                        tf.addfile(info)
                except OSError:
                    continue
    return buf.getvalue()


def _decompressed(path: Path) -> bytes:
    with open(path, "rb") as f, open_decompressed(f, "auto", what=str(path)) as r:  # type: ignore[arg-type]
        return r.read()


def _layout_layers(layout: Path) -> list[tuple[str, bytes]]:
    """The layers of every image manifest of an OCI layout directory, decompressed."""
    import json

    def blob(digest: str) -> Path:
        algo, hexdigest = digest.split(":", 1)
        return layout / "blobs" / algo / hexdigest

    layers: dict[str, bytes] = {}
    todo = [m["digest"] for m in json.loads((layout / "index.json").read_bytes())["manifests"]]
    while todo:
        doc = json.loads(blob(todo.pop()).read_bytes())
        todo += [m["digest"] for m in doc.get("manifests", [])]
        for i, layer in enumerate(doc.get("layers", [])):
            layers.setdefault(layer["digest"], _decompressed(blob(layer["digest"])))
            layers[f"{layout.name} layer {i}"] = layers.pop(layer["digest"])
    return list(layers.items())


def _examples_layers(workdir: Path) -> list[tuple[str, bytes]]:
    """Build examples/ with mason against a local registry holding the busybox base."""
    import sys

    sys.path.insert(0, str(_REPO))
    from tests.support.busybox import push_busybox
    from tests.support.registry_server import start_registry

    from mason.registry.client import RegistryClient

    server = start_registry(workdir / "registry", "plain")
    try:
        base = f"{server.host}/base/busybox:latest"
        with RegistryClient() as client:
            push_busybox(client, base, workdir / "busybox")
        out = workdir / "examples-oci"
        mason = Path(sys.executable).parent / "mason"
        subprocess.run(
            [str(mason), "build", "--progress=plain", "--build-arg", f"BASE={base}",
             "--output", f"type=oci,dest={out},tar=false,compression=uncompressed", str(_REPO / "examples")],
            check=True, capture_output=True, env={**os.environ, "MASON_ROOT": str(workdir / "root")},
        )  # fmt: skip
    finally:
        server.stop()
    return [(f"examples {name.split(' ', 1)[1]}", data) for name, data in _layout_layers(out)]


def _real_layers(args: argparse.Namespace, workdir: Path) -> list[tuple[str, bytes]]:
    import sys

    sys.path.insert(0, str(_REPO))
    from tests.support.busybox import build_busybox_image

    busybox = build_busybox_image(workdir / "busybox-base")
    layers = [("busybox base", _decompressed(busybox.layer_path))]
    # the system Python's library: many small files, the eStargz worst case (a member per file)
    layers += [
        (f"tar of {p}", _tar_dir(p))
        for p in sorted(Path("/usr/lib").glob("python3*"))
        if p.is_dir()
    ]
    if args.examples:
        layers += _examples_layers(workdir)
    for path in args.layer:
        if (path / "index.json").exists():
            layers += _layout_layers(path)
        elif path.is_dir():
            layers.append((f"tar of {path}", _tar_dir(path)))
        else:
            layers.append((str(path), _decompressed(path)))
    return layers


def real_layers_table(args: argparse.Namespace) -> None:
    cpus = len(os.sched_getaffinity(0))
    rows: list[tuple[str, Callable[[bytes, _Null], None]]] = [
        (f"gzip libdeflate ({cpus} threads)", _gzip("libdeflate", None)),
        ("gzip libdeflate (1 thread)", _gzip("libdeflate", 1)),
        (f"gzip isal ({cpus} threads)", _gzip("isal", None)),
    ]
    if not args.skip_zlib:
        rows.append(("gzip zlib (1 thread)", _gzip("zlib", 1)))
    rows += [
        ("zstd -3 (libzstd workers)", _via("zstd")),
        (f"estargz libdeflate ({cpus} threads)", _estargz()),
        ("estargz libdeflate (1 thread)", _estargz(threads=1)),
        (f"estargz isal ({cpus} threads)", _estargz("isal")),
    ]
    go_name = "go compress/gzip (1 thread)"
    with tempfile.TemporaryDirectory(prefix="mason-bench-real-") as tmp:
        work = Path(tmp)
        layers = _real_layers(args, work)
        go = None
        if not args.no_cli:
            _ensure_tools(["go"])
            (work / "go").mkdir()
            go = _go_gzip(work / "go")
        print(
            f"gzip and eStargz at level 6, zstd at 3; {cpus} CPUs; best of {args.repeat}; "
            f"size ratio vs {go_name if go else 'the input (no Go toolchain: no Go baseline)'}"
        )
        print(
            f"{'layer':<34} {'compression':<32} {'MB/s':>7} {'bytes':>11} {'ratio':>6} {'vs Go':>6}"
        )
        for label, data in layers:
            timed = [(name, _in_process(fn, data)) for name, fn in rows]
            if go is not None:
                path = work / "layer.tar"
                path.write_bytes(data)
                timed.append((go_name, _cli([str(go), "6"], path)))
            best, sizes = _best_of(timed, args.repeat)
            label = f"{label[:24]} ({len(data) / 1e6:.1f} MB)"
            for name, _ in timed:
                vs_go = f"{sizes[name] / sizes[go_name]:>6.3f}" if go_name in sizes else f"{'-':>6}"
                print(
                    f"{label:<34} {name:<32} {len(data) / best[name] / 1e6:>7.0f} {sizes[name]:>11} "
                    f"{sizes[name] / len(data):>6.3f} {vs_go}"
                )
                label = ""


if __name__ == "__main__":
    main()
