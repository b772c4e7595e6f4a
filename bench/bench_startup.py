"""Start-up and fixed per-build work: a 2-step Dockerfile built warm from a registry cache.

Run: .venv/bin/python bench/bench_startup.py [--runs 7] [--src DIR]

A plain-HTTP CNCF registry is started (``tests.support``), the busybox base is pushed and a
2-step build (``RUN`` + ``COPY``) exports its cache (``mode=max``). Then, ``--runs`` times, on
a fresh ``$MASON_ROOT`` each:

- ``first request``: time from spawning ``mason build --cache-from ... --push`` to its first
  socket connect (an audit hook in the child notes the monotonic clock, which is one clock
  for both processes), and the child's CPU time by then (steadier on a shared machine);
- ``warm build``: the same process's whole wall time and CPU time (with its children);
- ``imports``: ``python -X importtime -m mason.cli.main build --help``, the sum of top-level
  imports (what the interpreter spends importing, its own start-up excluded).

Bytecode is cached under ``$TMPDIR/mason-bench-pycache`` (``PYTHONDONTWRITEBYTECODE`` is
dropped for the children), as an installed mason has its ``.pyc`` files; the seeding build
fills it.

``--src DIR`` measures another checkout's ``src`` with this venv (``git archive HEAD~1 |
tar -x -C DIR`` gives a "before"). The deny-listed modules loaded at the first request
are listed (see tests/unit/cli/test_import_budget.py). Medians; not a test.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from bench.peers import remove_tree  # noqa: E402
from tests.support.registry_server import start_registry  # noqa: E402

__all__ = ["main"]

_PYCACHE = Path(tempfile.gettempdir()) / "mason-bench-pycache"

# Runs in the child: note the clocks and the loaded modules at the first socket connect.
_PROBE = """
import sys, time
out, argv = sys.argv[1], sys.argv[2:]
def hook(event, args):
    if event == "socket.connect" and not hook.done:
        hook.done = True
        with open(out, "w") as f:
            f.write(f"{time.monotonic()} {time.process_time()}\\n" + "\\n".join(sorted(sys.modules)))
hook.done = False
sys.addaudithook(hook)
from mason.cli.main import main
sys.exit(main(argv))
"""
_WATCH = (
    "httpx",
    "http.client",
    "ssl",
    "rich",
    "click",
    "certifi",
    "sqlite3",
    "zstandard",
    "mason.compression.estargz",
)
_IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| {1}(\S+)")


def _env(src: Path | None, root: Path | None = None) -> dict[str, str]:
    # bytecode cached (outside the tree), as an installed mason has it: compiling every
    # module from source on each start would dwarf what is measured
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(_PYCACHE / str(src or _REPO / "src").replace("/", "_"))
    if src is not None:
        env["PYTHONPATH"] = str(src)
    if root is not None:
        env["MASON_ROOT"] = str(root)
    return env


def _setup(work: Path, host: str, src: Path | None) -> Path:
    from tests.support.busybox import push_busybox

    from mason.registry.client import RegistryClient

    with RegistryClient() as client:
        push_busybox(client, f"{host}/base/busybox:latest", work / "busybox")
    ctx = work / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {host}/base/busybox:latest\nRUN echo one > /one\nCOPY a.txt /a.txt\n"
    )
    (ctx / "a.txt").write_text("hello\n")
    cmd = [sys.executable, "-m", "mason.cli.main", "build", "--progress=plain"]
    cmd += ["--cache-to", f"type=registry,ref={host}/cache,mode=max", str(ctx)]
    subprocess.run(cmd, env=_env(src, work / "seed"), check=True, capture_output=True)
    return ctx


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _warm(
    work: Path, host: str, ctx: Path, src: Path | None
) -> tuple[float, float, float, float, str]:
    """(ms to the first connect, CPU ms by then, wall ms of the build, its CPU ms, modules
    at the first connect)."""
    root, mark = work / "root", work / "first-connect"
    remove_tree(root)
    cmd = [sys.executable, "-c", _PROBE, str(mark), "build", "--progress=plain"]
    cmd += ["--cache-from", f"type=registry,ref={host}/cache", "--push", "-t", f"{host}/app"]
    cpu0, start = _children_cpu(), time.monotonic()
    subprocess.run([*cmd, str(ctx)], env=_env(src, root), check=True, capture_output=True)
    wall, cpu_all = time.monotonic() - start, _children_cpu() - cpu0
    first, _, modules = mark.read_text().partition("\n")
    at, cpu = (float(x) for x in first.split())
    return (at - start) * 1e3, cpu * 1e3, wall * 1e3, cpu_all * 1e3, modules


def _imports_ms(src: Path | None) -> float:
    cmd = [sys.executable, "-X", "importtime", "-m", "mason.cli.main", "build", "--help"]
    proc = subprocess.run(cmd, env=_env(src), capture_output=True, text=True, check=True)
    return sum(int(m[1]) for m in map(_IMPORT_LINE.match, proc.stderr.splitlines()) if m) / 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--src", type=Path, help="a checkout's src/ to measure instead of this one")
    args = ap.parse_args(argv)
    src = args.src.resolve() if args.src else None
    with tempfile.TemporaryDirectory(prefix="mason-bench-startup-") as tmp:
        work = Path(tmp)
        registry = start_registry(work / "registry", "plain")
        try:
            ctx = _setup(work, registry.host, src)
            runs = [_warm(work, registry.host, ctx, src) for _ in range(args.runs)]
        finally:
            registry.stop()
            remove_tree(work / "root")
            remove_tree(work / "seed")
    imports = [_imports_ms(src) for _ in range(args.runs + 1)][1:]  # the first fills the cache
    loaded = set(runs[-1][4].split("\n"))
    print(f"\nstart-up, 2-step warm build from a registry cache, median of {args.runs}")
    print(f"  source: {src or _REPO / 'src'}, load {os.getloadavg()[0]:.1f}")
    labels = (
        "first request (wall)",
        "first request (CPU)",
        "warm build (wall)",
        "warm build (CPU)",
    )
    for i, label in enumerate(labels):
        print(f"  {label:<22} {statistics.median(r[i] for r in runs):8.1f} ms")
    print(f"  {'imports, build --help':<22} {statistics.median(imports):8.1f} ms")
    print(f"  loaded at first request: {', '.join(m for m in _WATCH if m in loaded) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
