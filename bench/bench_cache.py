"""Registry build cache: mason vs BuildKit and ``buildah bud --layers --cache-to/--cache-from``.

Run: .venv/bin/python bench/bench_cache.py [--context examples|two-step|DIR] [--repeat 5]
     [--change app/names.txt] [--skip-buildah] [--src OTHER/src]

BuildKit runs beside them when ``BUILDKITD``/``BUILDCTL`` name its binaries (``bench.peers``):
``buildctl build`` with ``--export-cache/--import-cache type=registry`` and ``--output
type=image,push=true`` or ``type=oci``; its daemon is restarted on an empty root before each
scenario, untimed. ``--context two-step`` is a generated ``RUN`` + ``COPY`` build on the base.

For each repetition and each builder, a fresh CNCF registry is started (``tests.support``)
and the busybox base image is built and pushed to it; then five scenarios run in order,
each on an empty builder state (a fresh machine):

1. ``cold+export``   build, push the image, export the cache (mason: ``mode=max``;
                     buildah pushes one cache image per step);
2. ``warm push``     rebuild from the registry cache, push the image;
3. ``warm oci``      rebuild from the registry cache into an OCI tarball;
4. ``re-export``     rebuild from the cache and export it again, nothing changed;
5. ``1-file change`` one context file changed: rebuild from the cache, export, push.

Wall time is the median over the repetitions (process start-up included). Registry traffic
comes from the registry's access log for the scenario: requests, bytes served by GETs,
bytes of completed blob uploads (sizes from the registry's storage), blob uploads and
manifest PUTs. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from bench.peers import Buildah, BuildKit, Mason, RunResult, buildkit_binaries  # noqa: E402
from tests.support.registry_server import RegistryServer, start_registry  # noqa: E402

__all__ = ["Traffic", "main"]

_ACCESS = re.compile(
    r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) (?P<size>\d+|-)'
)
_UPLOAD_DIGEST = re.compile(r"[?&]digest=sha256(?:%3A|:)(?P<hex>[0-9a-f]{64})")
SCENARIOS = ("cold+export", "warm push", "warm oci", "re-export", "1-file change")


@dataclass(frozen=True)
class Traffic:
    requests: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    blob_gets: int = 0
    blob_uploads: int = 0
    manifest_puts: int = 0


def traffic(registry: RegistryServer, start: int) -> Traffic:
    """What the registry saw from access-log line ``start`` on."""
    blobs = registry.storage_dir / "docker" / "registry" / "v2" / "blobs" / "sha256"
    requests = down = up = gets = uploads = puts = 0
    for line in registry.access_log_lines()[start:]:
        m = _ACCESS.search(line)
        if not m:
            continue
        requests += 1
        method, path, status = m["method"], m["path"], int(m["status"])
        size = int(m["size"]) if m["size"] != "-" else 0
        if method == "GET" and status < 400:
            down += size
            if "/blobs/sha256:" in path:
                gets += 1
        if method == "PUT" and "/blobs/uploads/" in path and status == 201:
            uploads += 1
            d = _UPLOAD_DIGEST.search(path)
            if d:
                data = blobs / d["hex"][:2] / d["hex"] / "data"
                up += data.stat().st_size if data.exists() else 0
        if method == "PUT" and "/manifests/" in path:
            puts += 1
    return Traffic(requests, down, up, gets, uploads, puts)


@dataclass
class Samples:
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    traffic: list[Traffic] = field(default_factory=list)
    cached: list[int] = field(default_factory=list)


def _cached_steps(tool: str, output: str) -> int:
    if tool in ("mason", "buildkit"):
        return sum(1 for ln in output.splitlines() if re.match(r"^#\d+ CACHED$", ln))
    return output.count("Using cache")


def _push_base(registry: RegistryServer, work: Path) -> str:
    from tests.support.busybox import push_busybox

    from mason.registry.client import RegistryClient

    ref = f"{registry.host}/base/busybox:latest"
    with RegistryClient() as client:
        push_busybox(client, ref, work / "busybox")
    return ref


def _changed_context(context: Path, change: str, dest: Path) -> Path:
    shutil.copytree(context, dest)
    target = dest / change
    target.write_text(target.read_text() + "one more line for the bench\n")
    return dest


def _scenarios_mason(
    m: Mason, ctx: Path, changed: Path, reg: str, base: str, out: Path
) -> dict[str, Callable[[], RunResult]]:
    args = {"BASE": base}
    img, cache = f"{reg}/app", f"{reg}/app-cache"
    to = f"type=registry,ref={cache},mode=max"
    frm = f"type=registry,ref={cache}"
    return {
        "cold+export": lambda: m.build(ctx, "--push", "-t", img, "--cache-to", to, build_args=args),
        "warm push": lambda: m.build(
            ctx, "--push", "-t", img, "--cache-from", frm, build_args=args
        ),
        "warm oci": lambda: m.build(
            ctx,
            "--output",
            f"type=oci,dest={out / 'mason.tar'}",
            "--cache-from",
            frm,
            build_args=args,
        ),
        "re-export": lambda: m.build(ctx, "--cache-from", frm, "--cache-to", to, build_args=args),
        "1-file change": lambda: m.build(
            changed, "--push", "-t", img, "--cache-from", frm, "--cache-to", to, build_args=args
        ),
    }


def _scenarios_buildah(
    b: Buildah, ctx: Path, changed: Path, reg: str, base: str, out: Path
) -> dict[str, Callable[[], RunResult]]:
    args = {"BASE": base}
    img, cache = f"{reg}/app", f"{reg}/app-cache"

    def both(*steps: Callable[[], RunResult]) -> RunResult:
        results = [s() for s in steps]
        return RunResult(
            sum(r.seconds for r in results),
            "".join(r.output for r in results),
            sum(r.cpu for r in results),
        )

    return {
        "cold+export": lambda: both(
            lambda: b.bud(ctx, tag=img, build_args=args, cache_to=cache),
            lambda: b.push(img, f"docker://{img}"),
        ),
        "warm push": lambda: both(
            lambda: b.bud(ctx, tag=img, build_args=args, cache_from=cache),
            lambda: b.push(img, f"docker://{img}"),
        ),
        "warm oci": lambda: both(
            lambda: b.bud(ctx, tag=img, build_args=args, cache_from=cache),
            lambda: b.push(img, f"oci-archive:{out / 'buildah.tar'}"),
        ),
        "re-export": lambda: b.bud(ctx, tag=img, build_args=args, cache_from=cache, cache_to=cache),
        "1-file change": lambda: both(
            lambda: b.bud(changed, tag=img, build_args=args, cache_from=cache, cache_to=cache),
            lambda: b.push(img, f"docker://{img}"),
        ),
    }


def _scenarios_buildkit(
    bk: BuildKit, ctx: Path, changed: Path, reg: str, base: str, out: Path
) -> dict[str, Callable[[], RunResult]]:
    args = {"BASE": base}
    img, cache = f"{reg}/app", f"{reg}/app-cache"
    to = ("--export-cache", f"type=registry,ref={cache},mode=max")
    frm = ("--import-cache", f"type=registry,ref={cache}")
    push = ("--output", f"type=image,name={img},push=true")
    oci = ("--output", f"type=oci,dest={out / 'buildkit.tar'}")
    return {
        "cold+export": lambda: bk.build(ctx, *push, *to, build_args=args),
        "warm push": lambda: bk.build(ctx, *push, *frm, build_args=args),
        "warm oci": lambda: bk.build(ctx, *oci, *frm, build_args=args),
        "re-export": lambda: bk.build(ctx, *frm, *to, build_args=args),
        "1-file change": lambda: bk.build(changed, *push, *frm, *to, build_args=args),
    }


def _builder(
    tool: str, work: Path, registry: RegistryServer, driver: str | None, src: Path | None = None
) -> tuple[Mason | Buildah | BuildKit, Callable[..., dict[str, Callable[[], RunResult]]]]:
    if tool == "mason":
        return Mason(work / "mason", src=src), _scenarios_mason
    if tool == "buildkit":
        binaries = buildkit_binaries()
        assert binaries is not None
        return BuildKit(work / "buildkit", registry.host, binaries), _scenarios_buildkit
    return Buildah(work / "buildah", driver=driver), _scenarios_buildah


def run_rep(
    tool: str,
    work: Path,
    context: Path,
    changed: Path,
    samples: dict[str, Samples],
    driver: str | None,
    src: Path | None = None,
) -> None:
    registry = start_registry(work / "registry", "plain")
    try:
        base = _push_base(registry, work)
        out = work / "out"
        out.mkdir()
        builder, scenarios = _builder(tool, work, registry, driver, src)
        plan = scenarios(builder, context, changed, f"{registry.host}/bench", base, out)
        for name in SCENARIOS:
            builder.fresh()
            mark = len(registry.access_log_lines())
            result = plan[name]()
            s = samples[name]
            s.seconds.append(result.seconds)
            s.cpu.append(result.cpu)
            s.traffic.append(traffic(registry, mark))
            s.cached.append(_cached_steps(tool, result.output))
        builder.cleanup()
    finally:
        registry.stop()


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _median_traffic(ts: list[Traffic]) -> Traffic:
    def med(attr: str) -> int:
        return int(statistics.median(getattr(t, attr) for t in ts))

    return Traffic(
        *(
            med(a)
            for a in (
                "requests",
                "bytes_down",
                "bytes_up",
                "blob_gets",
                "blob_uploads",
                "manifest_puts",
            )
        )
    )


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def print_table(
    results: dict[str, dict[str, Samples]], repeat: int, context: Path, note: str
) -> None:
    tools = list(results)
    print(f"\nregistry build cache: {context.name}, median of {repeat}, {note}\n")
    head = f"{'scenario':<14}" + "".join(f" {t + ' s':>10}" for t in tools)
    head += f" {'mason/BuildKit':>15} {'buildah/mason':>14}"
    print(head)
    print("-" * len(head))
    for name in SCENARIOS:
        secs = {t: statistics.median(results[t][name].seconds) for t in tools}
        row = f"{name:<14}" + "".join(f" {secs[t]:>10.2f}" for t in tools)
        row += f" {_ratio(secs.get('mason'), secs.get('buildkit')):>15}"
        row += f" {_ratio(secs.get('buildah'), secs.get('mason')):>14}"
        print(row)
    totals = {t: sum(statistics.median(results[t][n].seconds) for n in SCENARIOS) for t in tools}
    print(
        f"{'total':<14}"
        + "".join(f" {totals[t]:>10.2f}" for t in tools)
        + f" {_ratio(totals.get('mason'), totals.get('buildkit')):>15}"
        + f" {_ratio(totals.get('buildah'), totals.get('mason')):>14}"
    )
    print("\nmason/BuildKit < 1: mason faster; buildah/mason > 1: mason faster.")
    print("\nCPU seconds (user + system; BuildKit: buildctl and its daemon), median:")
    for name in [*SCENARIOS, "total"]:
        names = SCENARIOS if name == "total" else (name,)
        cpu = {t: sum(statistics.median(results[t][n].cpu) for n in names) for t in tools}
        cells = "".join(f" {cpu[t]:>10.2f}" for t in tools)
        print(f"{name:<14}{cells} {_ratio(cpu.get('mason'), cpu.get('buildkit')):>15}")
    print(
        "\nregistry traffic (median): blob bytes up / bytes served by GETs, requests, steps cached"
    )
    for name in SCENARIOS:
        cells = []
        for t in tools:
            tr = _median_traffic(results[t][name].traffic)
            cached = min(results[t][name].cached)
            moved = f"{_size(tr.bytes_up)} / {_size(tr.bytes_down)}"
            cells.append(f"{t} {moved:>21} {tr.requests:>4} req {cached:>2} cached")
        print(f"  {name:<14} " + "   ".join(cells))
    print("\nblob uploads / blob GETs / manifest PUTs (median):")
    for name in SCENARIOS:
        cells = []
        for t in tools:
            tr = _median_traffic(results[t][name].traffic)
            cells.append(f"{t} {tr.blob_uploads:>3} / {tr.blob_gets:>3} / {tr.manifest_puts:>3}")
        print(f"  {name:<14} " + "    ".join(cells))


def _two_step(dest: Path) -> Path:
    """A ``RUN`` + ``COPY`` build on the base (the smallest real build)."""
    dest.mkdir()
    (dest / "Dockerfile").write_text(
        "ARG BASE\nFROM ${BASE}\nRUN echo one > /one\nCOPY a.txt /a.txt\n"
    )
    (dest / "a.txt").write_text("a\n")
    return dest


def _timed_build(root: Path, context: Path, base: str) -> float:
    """One ``mason build`` in this process (its output dropped); wall seconds."""
    import contextlib
    import io
    import os
    import time

    from mason.cli.main import main as mason_main

    os.environ["MASON_ROOT"] = str(root)
    start = time.perf_counter()
    out = io.TextIOWrapper(io.BytesIO())  # mason writes an image to stdout's buffer
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = mason_main(
            ["build", "--progress=plain", "--build-arg", f"BASE={base}", str(context)]
        )
    if code != 0:
        out.flush()
        text = out.buffer.getvalue().decode(errors="replace")  # type: ignore[attr-defined]
        raise RuntimeError(f"mason build failed ({code}):\n{text[-2000:]}")
    return time.perf_counter() - start


#: runs ``mason`` with (argv[1] == "1") or without BuildKit's keys, as a process of its own;
#: the builder is patched when mason imports it, not before: mason's start-up pings its
#: registries before it imports the engine, and so must both sides here
_KEYS_WRAPPER = """
import importlib.util, sys
class Patch:
    def find_spec(self, name, path=None, target=None):
        if name != "mason.engine.builder":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            if sys.argv[1] == "0":
                module._buildkit_keys = lambda *a: None
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, Patch())
from mason.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def _process_build(
    root: Path, context: Path, base: str, keys: bool, extra: Sequence[str] = ()
) -> float:
    """One ``mason build`` as a process (start-up and imports included); wall seconds."""
    import os
    import subprocess
    import time

    argv = ["build", "--progress=plain", "--build-arg", f"BASE={base}", *extra, str(context)]
    env = {**os.environ, "MASON_ROOT": str(root)}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", _KEYS_WRAPPER, "1" if keys else "0", *argv],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def key_overhead(context: Path, repeat: int) -> None:
    """Warm build (every step a local hit) with BuildKit's keys against mason's own keys alone:
    what computing BuildKit's keys (the LLB plan, the context's content checksums, the chain
    keys) adds to a warm build. Each sample: a cold build, then the timed warm build, on a
    fresh root. Then the warm phase of this bench as a process: a fresh root, the registry
    cache the same mode exported, ``--push``."""
    import mason.engine.builder as builder

    keyed = builder._buildkit_keys
    modes = ("buildkit keys", "mason keys only")
    times: dict[str, list[float]] = {m: [] for m in modes}
    procs: dict[str, list[float]] = {m: [] for m in modes}
    pushes: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="mason-bench-keys-") as tmp:
        top = Path(tmp)
        registry = start_registry(top / "registry")
        try:
            base = _push_base(registry, top)
            warm: dict[str, list[str]] = {}
            for mode in modes:
                cache, tag = (f"{registry.host}/keys-{mode.split()[0]}{s}" for s in ("-cache", ""))
                cold = ["--cache-to", f"type=registry,ref={cache},mode=max"]
                _process_build(
                    top / f"cold-{mode.split()[0]}", context, base, mode == modes[0], cold
                )
                warm[mode] = ["--cache-from", f"type=registry,ref={cache}", "--push", "-t", tag]
            for rep in range(repeat):
                for mode in modes:
                    builder._buildkit_keys = keyed if mode == modes[0] else (lambda *a: None)  # type: ignore[assignment]
                    root = top / f"root-{mode.split()[0]}-{rep}"
                    root.mkdir()
                    _timed_build(root, context, base)
                    times[mode].append(_timed_build(root, context, base))
                    procs[mode].append(_process_build(root, context, base, mode == modes[0]))
                    fresh = top / f"fresh-{mode.split()[0]}-{rep}"
                    pushes[mode].append(
                        _process_build(fresh, context, base, mode == modes[0], warm[mode])
                    )
        finally:
            builder._buildkit_keys = keyed  # type: ignore[assignment]
            registry.stop()
    # the minimum as well: on a shared machine it is the steadier estimate of the work itself
    for what, samples in (
        ("in-process", times),
        ("as a process", procs),
        ("from the registry cache on a fresh root, pushed, as a process", pushes),
    ):
        for stat, name in ((statistics.median, "median"), (min, "min")):
            with_keys = stat(samples["buildkit keys"])
            without = stat(samples["mason keys only"])
            print(
                f"warm build {what}, {name} of {repeat}: buildkit keys {with_keys * 1000:.1f} ms, "
                f"mason keys only {without * 1000:.1f} ms, "
                f"overhead {100 * (with_keys / without - 1):+.1f}%"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--context", default=str(_REPO / "examples"), help="a directory, or two-step"
    )
    parser.add_argument("--change", default=None, help="context file the 1-file scenario changes")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--driver", choices=("overlay", "vfs"), default=None, help="buildah storage driver"
    )
    parser.add_argument("--skip-buildah", action="store_true")
    parser.add_argument(
        "--src", type=Path, default=None, help="another checkout's src/ for mason (before/after)"
    )
    parser.add_argument(
        "--key-overhead",
        action="store_true",
        help="only measure what BuildKit's keys add to a warm mason build",
    )
    args = parser.parse_args(argv)
    if args.key_overhead:
        with tempfile.TemporaryDirectory(prefix="mason-bench-keys-ctx-") as tmp:
            two = args.context == "two-step"
            ctx = _two_step(Path(tmp) / "two-step") if two else Path(args.context).resolve()
            key_overhead(ctx, args.repeat)
        return 0
    tools = ["mason"] + (["buildkit"] if buildkit_binaries() else [])
    tools += [] if args.skip_buildah else ["buildah"]
    results: dict[str, dict[str, Samples]] = {t: {s: Samples() for s in SCENARIOS} for t in tools}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="mason-bench-cache-") as tmp:
        top = Path(tmp)
        two_step = args.context == "two-step"
        context = _two_step(top / "two-step") if two_step else Path(args.context).resolve()
        change = args.change or ("a.txt" if two_step else "app/names.txt")
        changed = _changed_context(context, change, top / "changed-context")
        driver = "-" if args.skip_buildah else (args.driver or Buildah(top / "probe").driver)
        for rep in range(args.repeat):
            for tool in tools:
                work = top / f"{tool}-{rep}"
                work.mkdir()
                run_rep(tool, work, context, changed, results[tool], driver, args.src)
                load.append(os.getloadavg()[0])
            print(f"repetition {rep + 1}/{args.repeat} done", file=sys.stderr)
    note = (
        f"buildah storage driver {driver}, 1-min load average {min(load):.1f}-{max(load):.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    print_table(results, args.repeat, context, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
