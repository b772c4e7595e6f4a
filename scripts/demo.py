"""The demo (``bash scripts/demo.sh [--keep]`` runs this file).

1. start a local CNCF registry on a free loopback port;
2. build and push the busybox base image to it;
3. build ``examples/`` with ``--push`` and a ``mode=max`` registry cache;
4. wipe ``$MASON_ROOT`` (a temporary root) and build again: every step CACHED,
   the same image digest, no layer downloaded;
5. say how to build your own Dockerfile against that registry, and stop it
   (``--keep`` leaves it running for that).

It is a script of the checkout, not part of the installed ``mason``: the registry
starter and the busybox builder are the ones the tests and benches use
(``tests/support``, which needs no test extras for this), imported from the
repository this file is in.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.support, from this checkout

from tests.support.busybox import push_busybox  # noqa: E402
from tests.support.registry_server import RegistryServer, count_blob_gets, start_registry  # noqa: E402

from mason.registry.client import RegistryClient  # noqa: E402

MASON = Path(sys.executable).with_name("mason")


def _banner(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def _mason(args: list[str], root: Path) -> float:
    """Run ``mason ARGS`` on the state root ``root``; its progress goes to our stdout."""
    env = dict(os.environ, MASON_ROOT=str(root))
    t0 = time.monotonic()
    proc = subprocess.run([str(MASON), *args], env=env, text=True, capture_output=True)
    elapsed = time.monotonic() - t0
    sys.stdout.write(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"mason {' '.join(args)} failed with exit status {proc.returncode}")
    return elapsed


def _cache_flags(cache: str) -> list[str]:
    return [
        "--cache-to",
        f"type=registry,ref={cache},mode=max",
        "--cache-from",
        f"type=registry,ref={cache}",
    ]


def _build_twice(server: RegistryServer, work: Path) -> bool:
    """The cold build, a wiped root, the warm build: True when both give the same image."""
    root = work / "mason-root"
    base = f"{server.host}/base/busybox:latest"
    _banner(f"building the busybox base image and pushing it to {base}")
    with RegistryClient() as client:
        digest = push_busybox(client, base, work / "busybox")
    print(f"{base}@{digest}")
    app, cache = f"{server.host}/demo/app:latest", f"{server.host}/demo/app-cache"
    build_args = [
        "build", "--progress=plain", "--build-arg", f"BASE={base}", "-t", app, "--push",
        *_cache_flags(cache), "--metadata-file", str(work / "metadata.json"), str(REPO / "examples"),
    ]  # fmt: skip
    _banner(f"cold build of examples/ -> {app} (cache exported to {cache})")
    cold = _mason(build_args, root)
    first = (work / "metadata.json").read_text()
    _banner(f"wiping $MASON_ROOT ({root}): a fresh machine")
    shutil.rmtree(root)
    gets_before = count_blob_gets(server)
    _banner("the same build again, on the empty root, with the registry cache")
    warm = _mason(build_args, root)
    same = first == (work / "metadata.json").read_text()
    _banner("result")
    print(f"cold build: {cold:.2f} s; warm build on a fresh root: {warm:.2f} s")
    print(f"image digest identical: {'yes' if same else 'NO'}")
    print(
        f"blob GETs by the warm build: {count_blob_gets(server) - gets_before} (the base image's config "
        "and the cache config; no layer is downloaded: hits are pushed by cross-repository mount)"
    )
    return same


def _next_steps(server: RegistryServer, work: Path, kept: bool) -> None:
    """What a user does after the demo: their own Dockerfile, built against this registry."""
    reg = server.host if kept else "REG"
    _banner("next: build your own Dockerfile")
    if kept:
        print(
            f"The registry keeps running at http://{reg} (storage in {work}); stop it with:\n"
            f"  kill {server.process.pid} && rm -rf {work}"
        )
    else:
        print(
            "The registry stops now. Run `bash scripts/demo.sh --keep` to leave it running at a\n"
            "loopback address REG, which it prints; then, on this machine:"
        )
    print(f"""
  mkdir -p myapp && cat > myapp/Dockerfile <<'EOF'
  FROM {reg}/base/busybox:latest
  RUN echo "hello from mason" > /hello
  CMD ["cat", "/hello"]
  EOF
  {MASON} build --progress=plain -t {reg}/me/myapp --push \\
      --cache-to type=registry,ref={reg}/me/myapp-cache,mode=max \\
      --cache-from type=registry,ref={reg}/me/myapp-cache myapp

Build it twice: the second build says CACHED for every step. Add --explain-cache to see
why a step ran; `{MASON} imagetools inspect {reg}/me/myapp` shows the image and
`{MASON} cache inspect {reg}/me/myapp-cache` the cache. Registries on loopback may be
plain HTTP; for any other registry, log in as for docker (~/.docker/config.json).""")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="demo.sh", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the registry running afterwards (and its temporary directory)",
    )
    keep = parser.parse_args(argv).keep
    work = Path(tempfile.mkdtemp(prefix="mason-demo-"))
    _banner("starting a local registry (CNCF distribution)")
    server = start_registry(work / "registry", "plain")
    ok = False
    try:
        print(f"registry at http://{server.host}")
        ok = _build_twice(server, work)
        _next_steps(server, work, kept=keep)
    finally:
        if not (keep and ok):
            server.stop()
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
