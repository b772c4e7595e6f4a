"""Peak memory with a 1 GiB layer: mason vs buildah (and skopeo for the image copy).

Run: .venv/bin/python bench/bench_memory.py [--size-mib 1024] [--workdir DIR] [--only mason]

docs/architecture.md §7: "streaming everywhere — a 1 GiB layer never costs 1 GiB of RAM". A fresh CNCF
registry is started (``tests.support``) and the busybox base image pushed to it; then, in
order (each line one process per tool, its peak RSS as GNU time reports it: the process or
a child it waited for, whichever peaked highest — not their sum):

1. ``COPY file``      fresh builder, the context holds a 1 GiB random file: ``COPY big /big``;
2. ``RUN file``       fresh builder, ``RUN head -c SIZE /dev/urandom > /big`` (incompressible);
3. ``push``           same builder, the RUN image pushed (mason: cached rebuild with ``--push``;
                      buildah: ``buildah push``): the layer is compressed and uploaded;
4. ``cache export``   same builder, ``--cache-to type=registry,mode=max`` (buildah: ``--cache-to``);
5. ``cache import``   fresh builder, ``--cache-from`` the registry cache plus one ``RUN`` on top,
                      so the 1 GiB layer is downloaded and unpacked (buildah: ``--cache-from``);
6. ``image copy``     ``mason imagetools copy`` of the pushed image to a second registry
                      (peer: ``skopeo copy``; buildah has no copy of its own).

Random data is incompressible, so compressed and uncompressed sizes are the same: any step
that holds a layer in memory shows up as a peak near SIZE. Disk: about 6 x SIZE under
--workdir (default: a temp dir under /var/tmp), removed at the end. Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from bench.bench_cache import traffic  # noqa: E402
from bench.peers import Buildah, Mason  # noqa: E402
from tests.support.registry_server import RegistryServer, start_registry  # noqa: E402

__all__ = ["Measured", "main", "measure"]

SCENARIOS = ("COPY file", "RUN file", "push", "cache export", "cache import", "image copy")
SKOPEO = shutil.which("skopeo") or "/usr/bin/skopeo"
GNU_TIME = "/usr/bin/time"


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_mib: float


def measure(
    cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, log: Path
) -> Measured:
    """Run ``cmd``; wall time and peak RSS (``wait4``: the process or a waited-for descendant)."""
    # Linux records the parent's peak RSS in a child at fork+exec, so a child forked by this
    # (large) Python process never reports less than it: GNU time, small, forks the tool.
    rss_file = log.with_suffix(".rss")
    launcher = [GNU_TIME, "-f", "%M", "-o", str(rss_file)] if os.access(GNU_TIME, os.X_OK) else []
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*launcher, *cmd], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_bytes()[-3000:].decode(errors="replace")
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    kib = int(rss_file.read_text().split()[-1]) if launcher else usage.ru_maxrss  # KiB on Linux
    return Measured(elapsed, kib / 1024)


def _random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n


def _push_base(host: str, work: Path) -> str:
    from tests.support.busybox import push_busybox

    from mason.registry.client import RegistryClient

    ref = f"{host}/base/busybox:latest"
    with RegistryClient() as client:
        push_busybox(client, ref, work / "busybox")
    return ref


def _contexts(top: Path, size: int) -> dict[str, Path]:
    copy_ctx, run_ctx, import_ctx = top / "ctx-copy", top / "ctx-run", top / "ctx-import"
    for d in (copy_ctx, run_ctx, import_ctx):
        d.mkdir()
    _random_file(copy_ctx / "big", size)
    (copy_ctx / "Dockerfile").write_text("ARG BASE\nFROM $BASE\nCOPY big /big\n")
    run = f"ARG BASE\nFROM $BASE\nRUN head -c {size} /dev/urandom > /big\n"
    (run_ctx / "Dockerfile").write_text(run)
    # one step on top of the cached layer: its snapshot must be materialised to run it
    (import_ctx / "Dockerfile").write_text(run + "RUN ls -l /big > /listing\n")
    return {"copy": copy_ctx, "run": run_ctx, "import": import_ctx}


def _mason_plan(
    m: Mason, ctx: dict[str, Path], reg: str, other: str, base: str, logs: Path
) -> list[tuple[str, bool, Callable[[], Measured]]]:
    env = {**os.environ, "MASON_ROOT": str(m.root)}
    env.pop("SOURCE_DATE_EPOCH", None)
    img, cache = f"{reg}/app", f"{reg}/app-cache"

    def build(name: str, context: Path, *args: str) -> Callable[[], Measured]:
        cmd = [
            *m.command,
            "build",
            "--progress=plain",
            "--build-arg",
            f"BASE={base}",
            *args,
            str(context),
        ]
        return lambda: measure(cmd, env=env, cwd=_REPO, log=logs / f"mason-{name}.log")

    copy_cmd = [*m.command, "imagetools", "copy", img, f"{other}/app"]
    return [  # (scenario, fresh builder first, run)
        ("COPY file", True, build("copy", ctx["copy"])),
        ("RUN file", True, build("run", ctx["run"])),
        ("push", False, build("push", ctx["run"], "--push", "-t", img)),
        (
            "cache export",
            False,
            build("export", ctx["run"], "--cache-to", f"type=registry,ref={cache},mode=max"),
        ),
        (
            "cache import",
            True,
            build("import", ctx["import"], "--cache-from", f"type=registry,ref={cache}"),
        ),
        (
            "image copy",
            False,
            lambda: measure(copy_cmd, env=env, cwd=_REPO, log=logs / "mason-copy.log"),
        ),
    ]


def _buildah_plan(
    b: Buildah, ctx: dict[str, Path], reg: str, other: str, base: str, logs: Path
) -> list[tuple[str, bool, Callable[[], Measured]]]:
    img, cache = f"{reg}/app-b", f"{reg}/app-b-cache"
    common = [*b._base()]  # same storage flags as the peer's own runs

    def bud(name: str, context: Path, *args: str) -> Callable[[], Measured]:
        cmd = [
            *common,
            "bud",
            "--layers",
            "--runtime",
            "runc",
            "--tls-verify=false",
            "--build-arg",
            f"BASE={base}",
            *args,
            str(context),
        ]
        return lambda: measure(cmd, log=logs / f"buildah-{name}.log")

    push = [*common, "push", "--tls-verify=false", img, f"docker://{img}"]
    copy = [
        SKOPEO,
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        f"docker://{img}",
        f"docker://{other}/app-b",
    ]
    return [
        ("COPY file", True, bud("copy", ctx["copy"], "-t", f"{img}-copy")),
        ("RUN file", True, bud("run", ctx["run"], "-t", img)),
        ("push", False, lambda: measure(push, log=logs / "buildah-push.log")),
        ("cache export", False, bud("export", ctx["run"], "-t", img, "--cache-to", cache)),
        (
            "cache import",
            True,
            bud("import", ctx["import"], "-t", f"{img}-import", "--cache-from", cache),
        ),
        ("image copy", False, lambda: measure(copy, log=logs / "skopeo-copy.log")),
    ]


def _disk(path: Path) -> str:
    usage = shutil.disk_usage(path)
    return f"{usage.free / 2**30:.1f} GiB free"


def run_tool(
    tool: str,
    top: Path,
    ctx: dict[str, Path],
    registries: tuple[RegistryServer, RegistryServer],
    base: str,
    logs: Path,
    driver: str | None,
) -> dict[str, Measured]:
    results: dict[str, Measured] = {}
    builder: Mason | Buildah
    reg, other = (f"{r.host}/bench" for r in registries)
    if tool == "mason":
        builder = Mason(top / "mason")
        plan = _mason_plan(builder, ctx, reg, other, base, logs)
    else:
        builder = Buildah(top / "buildah", driver=driver)
        plan = _buildah_plan(builder, ctx, reg, other, base, logs)
    builder.fresh()
    try:
        for name, fresh, run in plan:
            if fresh:
                builder.fresh()
            marks = [len(r.access_log_lines()) for r in registries]
            results[name] = run()
            moved = [traffic(r, mark) for r, mark in zip(registries, marks, strict=True)]
            up, down = (
                sum(t.bytes_up for t in moved) / 2**20,
                sum(t.bytes_down for t in moved) / 2**20,
            )
            print(
                f"{tool:<8} {name:<13} {results[name].peak_mib:>8.0f} MiB {results[name].seconds:>7.1f} s"
                f"  registry up {up:.0f} MiB, down {down:.0f} MiB ({_disk(top)})",
                file=sys.stderr,
            )
    finally:
        builder.cleanup()
    return results


def print_table(results: dict[str, dict[str, Measured]], size: int, driver: str) -> None:
    print(
        f"\npeak RSS with a {size / 2**20:.0f} MiB incompressible layer (buildah storage driver {driver};"
        " image copy peer: skopeo)\n"
    )
    head = (
        f"{'scenario':<13} {'mason MiB':>10} {'peer MiB':>9} {'ratio':>6}  "
        f"{'mason s':>8} {'peer s':>7} {'ratio':>6}"
    )
    print(head)
    print("-" * len(head))
    for name in SCENARIOS:
        m, p = results.get("mason", {}).get(name), results.get("buildah", {}).get(name)
        if m is None:
            continue
        mem_ratio = f"{p.peak_mib / m.peak_mib:>5.1f}x" if p else f"{'-':>6}"
        time_ratio = f"{p.seconds / m.seconds:>5.1f}x" if p else f"{'-':>6}"
        print(
            f"{name:<13} {m.peak_mib:>10.0f} {(f'{p.peak_mib:.0f}' if p else '-'):>9} {mem_ratio}  "
            f"{m.seconds:>8.1f} {(f'{p.seconds:.1f}' if p else '-'):>7} {time_ratio}"
        )
    print("\nratio = peer / mason (higher: mason uses less memory / is faster). Peak RSS is the")
    print("largest single process (the tool or a child it waited for), from GNU time.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument(
        "--workdir", type=Path, default=Path("/var/tmp"), help="where the temp dir goes"
    )
    parser.add_argument("--only", choices=("mason", "buildah"), default=None)
    parser.add_argument(
        "--driver", choices=("overlay", "vfs"), default=None, help="buildah storage driver"
    )
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the tools' output here")
    args = parser.parse_args(argv)
    size = args.size_mib << 20
    need = 7 * size
    if shutil.disk_usage(args.workdir).free < need:
        print(f"need about {need / 2**30:.1f} GiB free under {args.workdir}", file=sys.stderr)
        return 1
    tools = [args.only] if args.only else ["mason", "buildah"]
    results: dict[str, dict[str, Measured]] = {}
    with tempfile.TemporaryDirectory(prefix="mason-bench-memory-", dir=args.workdir) as tmp:
        top = Path(tmp)
        logs = top / "logs"
        logs.mkdir()
        ctx = _contexts(top, size)
        driver = args.driver or ("-" if tools == ["mason"] else Buildah(top / "probe").driver)
        registries = (
            start_registry(top / "registry", "plain"),
            start_registry(top / "registry2", "plain"),
        )
        try:
            base = _push_base(registries[0].host, top)
            for tool in tools:
                results[tool] = run_tool(
                    tool, top, ctx, registries, base, logs, None if driver == "-" else driver
                )
        finally:
            for registry in registries:
                registry.stop()
            if args.keep_logs:
                with contextlib.suppress(OSError):
                    shutil.copytree(logs, args.keep_logs, dirs_exist_ok=True)
    print_table(results, size, driver)
    return 0


if __name__ == "__main__":
    sys.exit(main())
