"""Issue 12 acceptance: mason and BuildKit v0.32.2 share one cache (BuildKit's keys).

For each golden build of ``tests/data/buildkit-keys`` (BuildKit's own exported caches):
the golden base image is pushed with its digests to the real registry, the case's context
is staged as BuildKit's was, and ``mason build --cache-from type=local`` of BuildKit's cache
on a fresh ``$MASON_ROOT`` gets every step CACHED without reading a layer blob (no output is
asked for, so no layer is needed). Then mason's own cold export of the case, under BuildKit's
record digests, holds every record of BuildKit's cache (content roots included).
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.cachebuild import Build
from tests.support.cli import mason_build
from tests.support.registry_server import RegistryServer

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "buildkit-keys"
GOLDEN_REGISTRY = "127.0.0.1:6040"
GOLDEN_HTTP = "127.0.0.1:6042"
CASES = sorted(p.name for p in DATA.iterdir() if (p / "cache" / "index.json").exists())


@pytest.fixture(scope="module")
def golden_base(registry: RegistryServer) -> str:
    """The golden base image at ``REG/golden/busybox:latest``, digests preserved (not the
    session's ``base/busybox``, which other tests build on; the name enters no key)."""
    ref = f"{registry.host}/golden/busybox:latest"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            f"oci:{DATA / 'base-busybox'}:latest",
            f"docker://{ref}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return ref


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    """Case 14's download, served over HTTP on a free loopback port."""
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(DATA / "14-add-url" / "served")
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _stage(case: str, tmp: Path, registry_host: str, http_host: str) -> tuple[Path, Path]:
    """The case's context as BuildKit got it, and its Dockerfile with our hosts."""
    ctx = tmp / "context"
    subprocess.run(
        ["sh", str(DATA / "stage-context.sh"), str(DATA / case), str(ctx)],
        check=True,
        capture_output=True,
    )
    dockerfile = tmp / "Dockerfile"
    text = (DATA / case / "Dockerfile").read_text()
    dockerfile.write_text(
        text.replace(f"{GOLDEN_REGISTRY}/base/", f"{registry_host}/golden/").replace(
            GOLDEN_HTTP, http_host
        )
    )
    return ctx, dockerfile


def _golden_cache(case: str, dest: Path) -> Path:
    """BuildKit's exported cache for ``case`` with the base layer put back (tests/data keeps it
    once, in base-busybox)."""
    shutil.copytree(DATA / case / "cache", dest)
    base_blobs = DATA / "base-busybox" / "blobs" / "sha256"
    for blob in base_blobs.iterdir():
        target = dest / "blobs" / "sha256" / blob.name
        if not target.exists():
            shutil.copyfile(blob, target)
    return dest


def _build_args(case: str) -> list[str]:
    info = json.loads((DATA / case / "build.json").read_text())
    args: list[str] = []
    for k, v in info["buildArgs"].items():
        args += ["--build-arg", f"{k}={v}"]
    if info["target"]:
        args += ["--target", info["target"]]
    for s in info["secrets"]:
        args += ["--secret", f"id={s['id']},src={DATA / case / s['src']}"]
    return args


def _mason(root: Path, ctx: Path, dockerfile: Path, case: str, *args: str) -> Build:
    proc = mason_build(root, "-f", str(dockerfile), *_build_args(case), *args, str(ctx))
    return Build(proc.returncode, proc.stdout + proc.stderr)


def _records(cache: Path) -> dict[str, dict[str, object]]:
    index = json.loads((cache / "index.json").read_text())
    manifest = json.loads(
        (cache / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text()
    )
    config = json.loads((cache / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_text())
    return {str(r["digest"]): r for r in config["records"]}


def _layer_blobs(cache: Path) -> set[str]:
    blobs = cache / "blobs" / "sha256"
    return {f"sha256:{p.name}" for p in blobs.iterdir()}


@pytest.mark.parametrize("case", CASES)
def test_buildkit_cache_hits_every_step_and_our_export_has_its_records(
    case: str, tmp_path: Path, golden_base: str, served: str
) -> None:
    registry_host = golden_base.split("/", 1)[0]
    ctx, dockerfile = _stage(case, tmp_path, registry_host, served)
    golden = _golden_cache(case, tmp_path / "golden-cache")

    root = tmp_path / "root-warm"
    warm = _mason(root, ctx, dockerfile, case, "--cache-from", f"type=local,src={golden}")
    warm.check()
    assert warm.steps, warm.output
    assert warm.ran == set(), f"{case}: steps not CACHED from BuildKit's cache: {warm.ran}"
    stored = {f"sha256:{p.name}" for p in (root / "blobs" / "sha256").glob("*")}
    read = stored & (_layer_blobs(golden) - _layer_blobs(DATA / "base-busybox"))
    assert read == set(), f"{case}: layer blobs read although no output needs them: {read}"

    ours = tmp_path / "mason-cache"
    cold = _mason(
        tmp_path / "root-cold",
        ctx,
        dockerfile,
        case,
        "--cache-to",
        f"type=local,dest={ours},mode=max",
    )
    cold.check()
    theirs = _records(golden)
    mine = _records(ours)
    assert any(r.get("layers") for r in theirs.values()), case
    missing = sorted(set(theirs) - set(mine))
    assert missing == [], f"{case}: BuildKit's records that mason did not write"
