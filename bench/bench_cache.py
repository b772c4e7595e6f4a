"""Registry build cache: mason vs ``buildah bud --layers --cache-to/--cache-from`` on one registry.

Run: .venv/bin/python bench/bench_cache.py [--context examples] [--repeat 5] [--change app/names.txt]

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
import re
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from bench.peers import Buildah, Mason, RunResult  # noqa: E402
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
    traffic: list[Traffic] = field(default_factory=list)
    cached: list[int] = field(default_factory=list)


def _cached_steps(tool: str, output: str) -> int:
    if tool == "mason":
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
        return RunResult(sum(r.seconds for r in results), "".join(r.output for r in results))

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


def run_rep(
    tool: str,
    work: Path,
    context: Path,
    changed: Path,
    samples: dict[str, Samples],
    driver: str | None,
) -> None:
    registry = start_registry(work / "registry", "plain")
    try:
        base = _push_base(registry, work)
        out = work / "out"
        out.mkdir()
        builder: Mason | Buildah
        if tool == "mason":
            builder = Mason(work / "mason")
            plan = _scenarios_mason(builder, context, changed, f"{registry.host}/bench", base, out)
        else:
            builder = Buildah(work / "buildah", driver=driver)
            plan = _scenarios_buildah(
                builder, context, changed, f"{registry.host}/bench", base, out
            )
        for name in SCENARIOS:
            builder.fresh()
            mark = len(registry.access_log_lines())
            result = plan[name]()
            s = samples[name]
            s.seconds.append(result.seconds)
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


def print_table(
    results: dict[str, dict[str, Samples]], repeat: int, context: Path, driver: str
) -> None:
    print(
        f"\nregistry build cache: {context.name}, median of {repeat}, buildah storage driver {driver}\n"
    )
    head = (
        f"{'scenario':<14} {'mason s':>8} {'buildah s':>10} {'ratio':>6}  "
        f"{'mason up/down':>21} {'req':>4} {'cached':>6}  {'buildah up/down':>21} {'req':>4} {'cached':>6}"
    )
    print(head)
    print("-" * len(head))
    for name in SCENARIOS:
        m, b = results["mason"][name], results["buildah"][name]
        ms, bs = statistics.median(m.seconds), statistics.median(b.seconds)
        mt, bt = _median_traffic(m.traffic), _median_traffic(b.traffic)
        print(
            f"{name:<14} {ms:>8.2f} {bs:>10.2f} {bs / ms:>5.1f}x  "
            f"{_size(mt.bytes_up) + ' / ' + _size(mt.bytes_down):>21} {mt.requests:>4} {min(m.cached):>6}  "
            f"{_size(bt.bytes_up) + ' / ' + _size(bt.bytes_down):>21} {bt.requests:>4} {min(b.cached):>6}"
        )
    print(
        "\nratio = buildah time / mason time (higher: mason faster). up/down = blob bytes uploaded /"
    )
    print(
        "bytes served by GETs (blobs and manifests); req = registry requests; cached = steps reported"
    )
    print("cached (mason '#N CACHED', buildah 'Using cache').")
    print("\nblob uploads / blob GETs / manifest PUTs (median):")
    for name in SCENARIOS:
        mt = _median_traffic(results["mason"][name].traffic)
        bt = _median_traffic(results["buildah"][name].traffic)
        print(
            f"  {name:<14} mason {mt.blob_uploads:>3} / {mt.blob_gets:>3} / {mt.manifest_puts:>3}    "
            f"buildah {bt.blob_uploads:>3} / {bt.blob_gets:>3} / {bt.manifest_puts:>3}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=Path, default=_REPO / "examples")
    parser.add_argument(
        "--change", default="app/names.txt", help="context file the 1-file scenario changes"
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--driver", choices=("overlay", "vfs"), default=None, help="buildah storage driver"
    )
    args = parser.parse_args(argv)
    context = args.context.resolve()
    results: dict[str, dict[str, Samples]] = {
        t: {s: Samples() for s in SCENARIOS} for t in ("mason", "buildah")
    }
    with tempfile.TemporaryDirectory(prefix="mason-bench-cache-") as tmp:
        top = Path(tmp)
        changed = _changed_context(context, args.change, top / "changed-context")
        driver = args.driver or Buildah(top / "probe").driver
        for rep in range(args.repeat):
            for tool in ("mason", "buildah"):
                work = top / f"{tool}-{rep}"
                work.mkdir()
                run_rep(tool, work, context, changed, results[tool], driver)
            print(f"repetition {rep + 1}/{args.repeat} done", file=sys.stderr)
    print_table(results, args.repeat, context, driver)
    return 0


if __name__ == "__main__":
    sys.exit(main())
