"""Build times of examples/: mason vs BuildKit (when ``BUILDKITD``/``BUILDCTL`` name its
binaries) and ``buildah bud --layers --runtime runc``, same machine, same local registry (not
a test; numbers depend on the machine).

Scenarios (median of --runs each, wall time including process start-up):

- cold: empty builder, build and push;
- warm: same builder again (every step cached), push;
- one-file change: a context file read by the first stage changes, build and push;
- registry cache, fresh builder: cache exported by a cold build (mason: ``--cache-to
  type=registry,mode=max``; buildah: ``--cache-to REPO``), builder state wiped, the same build
  with ``--cache-from``, image pushed.

BuildKit's daemon is (re)started on an empty root before each cold or fresh-builder run,
untimed; its warm and one-file-change runs reuse the running daemon, as mason's reuse the root.

``--files N`` adds a ``data/`` directory of N small files to the context and a ``COPY data/
/data/`` before ``COPY app/`` in the first stage: the one-file change then re-keys the big COPY
(it stays cached) beside the changed one -- a partial build of a large context. ``--src
OTHER/src`` runs another checkout's mason (before/after).

Run: .venv/bin/python bench/bench_build.py [--runs 3] [--skip-buildah] [--files 5000] [--src DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO))
sys.path.insert(0, str(_REPO / "bench"))

from peers import Buildah, BuildKit, Mason, buildkit_binaries  # noqa: E402
from tests.support.busybox import push_busybox  # noqa: E402
from tests.support.registry_server import count_blob_gets, start_registry  # noqa: E402

from mason.registry.client import RegistryClient  # noqa: E402


def _median(fn: Callable[[int], float], runs: int) -> float:
    return statistics.median(fn(i) for i in range(runs))


def _buildkit(
    work: Path, host: str, ctx: Path, bargs: dict[str, str], counter: list[int], runs: int
) -> list[float | None]:
    """BuildKit's five numbers (None each without its binaries), in the rows' order."""
    binaries = buildkit_binaries()
    if binaries is None:
        return [None] * 5
    bk = BuildKit(work / "buildkit", host, binaries)
    cache = f"type=registry,ref={host}/bench/k-cache"

    def push(tag: str) -> tuple[str, ...]:
        return ("--output", f"type=image,name={host}/bench/k:{tag},push=true")

    def cold(i: int) -> float:
        bk.fresh()
        return bk.build(ctx, *push(f"cold{i}"), build_args=bargs).seconds

    def warm(i: int) -> float:
        return bk.build(ctx, *push("warm"), build_args=bargs).seconds

    def change(i: int) -> float:
        counter[0] += 1
        (ctx / "app" / "names.txt").write_text(f"change {counter[0]}\n")
        return bk.build(ctx, *push("chg"), build_args=bargs).seconds

    def remote(i: int) -> float:
        bk.fresh()
        flags = ("--import-cache", cache, "--export-cache", f"{cache},mode=max")
        return bk.build(ctx, *push("remote"), *flags, build_args=bargs).seconds

    try:
        numbers: list[float | None] = [_median(cold, runs), _median(warm, runs)]
        numbers.append(_median(change, runs))
        bk.fresh()
        numbers.append(
            bk.build(
                ctx, *push("remote"), "--export-cache", f"{cache},mode=max", build_args=bargs
            ).seconds
        )
        numbers.append(_median(remote, runs))
        return numbers
    finally:
        bk.cleanup()


def _add_files(ctx: Path, count: int) -> None:
    """``data/`` with ``count`` files of 1-4 KiB in 50 directories, copied by the first stage."""
    for i in range(count):
        d = ctx / "data" / f"d{i % 50:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.txt").write_bytes(
            os.urandom(512 * (2 + i % 7)).hex().encode()[: 1024 * (1 + i % 4)]
        )
    df = ctx / "Dockerfile"
    df.write_text(df.read_text().replace("COPY app/ ./", "COPY data/ /data/\nCOPY app/ ./", 1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-buildah", action="store_true")
    ap.add_argument("--files", type=int, default=0, help="add a data/ dir of N files, COPY'd")
    ap.add_argument("--src", type=Path, default=None, help="another checkout's src/ for mason")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="mason-bench-build-"))
    load = [os.getloadavg()[0]]
    server = start_registry(work / "registry", "plain")
    try:
        base = f"{server.host}/base/busybox:latest"
        with RegistryClient() as client:
            push_busybox(client, base, work / "busybox")
        ctx = work / "ctx"
        shutil.copytree(_REPO / "examples", ctx)
        if args.files:
            _add_files(ctx, args.files)
        bargs = {"BASE": base}
        rows: list[tuple[str, float, float | None, str]] = []

        mason = Mason(work / "mason", src=args.src)
        counter = [0]

        def m_cold(i: int) -> float:
            mason.fresh()
            return mason.build(
                ctx, "-t", f"{server.host}/bench/m:cold{i}", "--push", build_args=bargs
            ).seconds

        def m_warm(i: int) -> float:
            return mason.build(
                ctx, "-t", f"{server.host}/bench/m:warm", "--push", build_args=bargs
            ).seconds

        def m_change(i: int) -> float:
            counter[0] += 1
            (ctx / "app" / "names.txt").write_text(f"change {counter[0]}\n")
            return mason.build(
                ctx, "-t", f"{server.host}/bench/m:chg", "--push", build_args=bargs
            ).seconds

        cache = f"{server.host}/bench/m-cache"

        def m_remote(i: int) -> float:
            mason.fresh()
            return mason.build(
                ctx,
                "-t",
                f"{server.host}/bench/m:remote",
                "--push",
                "--cache-from",
                cache,
                "--cache-to",
                f"type=registry,ref={cache},mode=max",
                build_args=bargs,
            ).seconds

        mc, mw, mch = (
            _median(m_cold, args.runs),
            _median(m_warm, args.runs),
            _median(m_change, args.runs),
        )
        mason.fresh()
        m_export = mason.build(
            ctx,
            "-t",
            f"{server.host}/bench/m:remote",
            "--push",
            "--cache-to",
            f"type=registry,ref={cache},mode=max",
            build_args=bargs,
        ).seconds
        gets = count_blob_gets(server)
        mr = _median(m_remote, args.runs)
        m_gets = (count_blob_gets(server) - gets) / args.runs

        bc = bw = bch = br = None
        b_export = None
        if not args.skip_buildah and shutil.which("buildah"):
            buildah = Buildah(work / "buildah")

            def b_cold(i: int) -> float:
                buildah.fresh()
                t = buildah.bud(ctx, tag="bench-b", build_args=bargs).seconds
                return (
                    t + buildah.push("bench-b", f"docker://{server.host}/bench/b:cold{i}").seconds
                )

            def b_warm(i: int) -> float:
                t = buildah.bud(ctx, tag="bench-b", build_args=bargs).seconds
                return t + buildah.push("bench-b", f"docker://{server.host}/bench/b:warm").seconds

            def b_change(i: int) -> float:
                counter[0] += 1
                (ctx / "app" / "names.txt").write_text(f"change {counter[0]}\n")
                t = buildah.bud(ctx, tag="bench-b", build_args=bargs).seconds
                return t + buildah.push("bench-b", f"docker://{server.host}/bench/b:chg").seconds

            bcache = f"{server.host}/bench/b-cache"

            def b_remote(i: int) -> float:
                buildah.fresh()
                t = buildah.bud(
                    ctx, tag="bench-b", build_args=bargs, cache_from=bcache, cache_to=bcache
                ).seconds
                return t + buildah.push("bench-b", f"docker://{server.host}/bench/b:remote").seconds

            bc, bw, bch = (
                _median(b_cold, args.runs),
                _median(b_warm, args.runs),
                _median(b_change, args.runs),
            )
            buildah.fresh()
            b_export = buildah.bud(ctx, tag="bench-b", build_args=bargs, cache_to=bcache).seconds
            br = _median(b_remote, args.runs)
            buildah.cleanup()

        bk = _buildkit(work, server.host, ctx, bargs, counter, args.runs)
        load.append(os.getloadavg()[0])
        rows = [
            ("cold build + push", mc, bk[0], bc, ""),
            ("warm (same root) + push", mw, bk[1], bw, ""),
            ("one-file change + push", mch, bk[2], bch, ""),
            ("cold + registry cache export", m_export, bk[3], b_export, ""),
            (
                "fresh root, registry cache hit + push",
                mr,
                bk[4],
                br,
                f"mason blob GETs/run: {m_gets:.0f}",
            ),
        ]
        print(
            f"examples/ build{f' with {args.files} more files' if args.files else ''}, median of {args.runs} runs, seconds (lower is better); "
            f"1-min load average {min(load):.1f}-{max(load):.1f} on {os.cpu_count()} CPUs"
        )
        print(
            f"{'scenario':<40} {'mason':>8} {'BuildKit':>9} {'buildah':>8} "
            f"{'mason/BuildKit':>15} {'buildah/mason':>14}  note"
        )
        for name, m, k, b, note in rows:
            kcell, bcell = (f"{k:.2f}" if k else "-"), (f"{b:.2f}" if b else "-")
            print(
                f"{name:<40} {m:>8.2f} {kcell:>9} {bcell:>8} "
                f"{(f'{m / k:.2f}' if k else '-'):>15} {(f'{b / m:.2f}' if b else '-'):>14}  {note}"
            )
        mason.cleanup()
        return 0
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
