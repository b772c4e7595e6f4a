"""The demo (``scripts/demo.sh`` runs ``python -m mason.cli.demo``).

1. start a local CNCF registry on a free loopback port (tests/support's starter);
2. build and push the busybox base image (tests/support's builder);
3. build ``examples/`` with ``--push`` and a ``mode=max`` registry cache;
4. wipe ``$MASON_ROOT`` (a temporary root) and build again: every step CACHED,
   the same image digest, no layer downloaded;
5. stop the registry.

The registry helpers live in the repository's ``tests/support`` package, so the
demo needs a checkout (it finds the repository root from this file or the cwd).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main"]


def _repo_root() -> Path:
    for candidate in (Path(__file__).resolve().parents[3], Path.cwd()):
        if (candidate / "tests" / "support" / "registry_server.py").is_file():
            return candidate
    raise SystemExit("mason demo: run it from a mason checkout (tests/support is needed)")


def _banner(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def _mason(args: list[str], root: Path) -> tuple[float, str]:
    env = dict(os.environ, MASON_ROOT=str(root))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "mason.cli.main", *args], env=env, text=True,
                          capture_output=True)
    elapsed = time.monotonic() - t0
    sys.stdout.write(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"mason {' '.join(args)} failed with exit status {proc.returncode}")
    return elapsed, proc.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mason-demo", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.parse_args(argv)
    repo = _repo_root()
    sys.path.insert(0, str(repo))
    # Imported by name: tests/support is not part of the installed package (and not type-checked with it).
    import importlib

    busybox = importlib.import_module("tests.support.busybox")
    registry_server = importlib.import_module("tests.support.registry_server")
    push_busybox, count_blob_gets, start_registry = (
        busybox.push_busybox, registry_server.count_blob_gets, registry_server.start_registry)

    from mason.registry.client import RegistryClient

    work = Path(tempfile.mkdtemp(prefix="mason-demo-"))
    root = work / "mason-root"
    _banner("starting a local registry (CNCF distribution)")
    server = start_registry(work / "registry", "plain")
    try:
        print(f"registry at http://{server.host}")
        base = f"{server.host}/base/busybox:latest"
        _banner(f"building the busybox base image and pushing it to {base}")
        with RegistryClient() as client:
            digest = push_busybox(client, base, work / "busybox")
        print(f"{base}@{digest}")
        app = f"{server.host}/demo/app:latest"
        cache = f"{server.host}/demo/app-cache"
        build_args = [
            "build", "--progress=plain", "--build-arg", f"BASE={base}", "-t", app, "--push",
            "--cache-to", f"type=registry,ref={cache},mode=max", "--cache-from", f"type=registry,ref={cache}",
            "--metadata-file", str(work / "metadata.json"), str(repo / "examples"),
        ]
        _banner(f"cold build of examples/ -> {app} (cache exported to {cache})")
        cold, _ = _mason(build_args, root)
        first = (work / "metadata.json").read_text()
        _banner(f"wiping $MASON_ROOT ({root}): a fresh machine")
        shutil.rmtree(root)
        gets_before = count_blob_gets(server)
        _banner("the same build again, on the empty root, with the registry cache")
        warm, _ = _mason(build_args, root)
        second = (work / "metadata.json").read_text()
        downloaded = count_blob_gets(server) - gets_before
        _banner("result")
        same = first == second
        print(f"cold build: {cold:.2f} s; warm build on a fresh root: {warm:.2f} s")
        print(f"image digest identical: {'yes' if same else 'NO'}")
        print(f"blob GETs by the warm build: {downloaded} (the base image's config and the cache config; "
              "no layer is downloaded: hits are pushed by cross-repository mount)")
        runc = shutil.which("runc")
        if runc:
            print("run the image: skopeo copy + umoci unpack + runc run (see tests/integration/test_build.py)")
        return 0 if same else 1
    finally:
        server.stop()
        if not parser.parse_args(argv).keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
