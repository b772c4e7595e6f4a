"""``--cache-to type=registry,…,cache-mounts=true``: a RUN --mount=type=cache directory travels
with the registry cache to a fresh machine, is restored only when a RUN that mounts it runs,
and is not uploaded again when unchanged (issue 15 item 4)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support.cli import mason, mason_build
from tests.support.registry_server import RegistryServer, count_requests

# a package manager in miniature: every run is logged, the download only when the cache lacks it
_RUN = (
    "RUN --mount=type=cache,target=/var/cache/pkg,id=pkgs sh -c '"
    "echo run >> /var/cache/pkg/log; "
    "[ -f /var/cache/pkg/pkg.bin ] || { echo download >> /var/cache/pkg/log; "
    "head -c 100000 /dev/urandom > /var/cache/pkg/pkg.bin; }; "
    "cp /var/cache/pkg/log /fetched'"
)


def _context(tmp_path: Path, base: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base}\nARG V=1\nRUN echo $V > /v\n{_RUN}\n")
    return ctx


def _build(tmp_path: Path, root: str, ctx: Path, version: str, *flags: str) -> str:
    out = tmp_path / f"out-{root}-{version}"
    proc = mason_build(
        tmp_path / root,
        "--build-arg",
        f"V={version}",
        "-o",
        f"type=local,dest={out}",
        *flags,
        str(ctx),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return (out / "fetched").read_text() + "\n--log--\n" + proc.stderr + proc.stdout


def test_a_cache_mount_is_full_on_a_fresh_machine(
    registry: RegistryServer, busybox_image: str, tmp_path: Path
) -> None:
    ref = f"{registry.host}/cachemounts/app-cache"
    cache_to = f"type=registry,ref={ref},mode=max,cache-mounts=true"
    ctx = _context(tmp_path, busybox_image)
    first = _build(tmp_path, "root-1", ctx, "1", "--cache-to", cache_to)
    assert first.startswith("run\ndownload\n\n--log--")

    manifest = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}:latest"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    kinds = [layer["mediaType"] for layer in manifest["layers"]]
    assert "application/vnd.mason.cachemounts.v1+json" in kinds
    [mount_blob] = [
        layer["digest"]
        for layer in manifest["layers"]
        if layer.get("annotations", {}).get("dev.mason.cache-mount.id") == "pkgs"
    ]

    # a fresh machine and a changed step above: the RUN runs again, its cache is already full
    second = _build(tmp_path, "root-2", ctx, "2", "--cache-from", ref, "--cache-to", cache_to)
    assert second.startswith("run\ndownload\nrun\n\n--log--"), second[:200]
    assert "cache mount 'pkgs' restored from registry" in second

    # nothing ran, nothing changed: the mount is not uploaded again
    uploads = count_requests(registry, "POST", r"^/v2/cachemounts/app-cache/blobs/uploads/")
    _build(tmp_path, "root-2", ctx, "2", "--cache-from", ref, "--cache-to", cache_to)
    assert count_requests(registry, "POST", r"^/v2/cachemounts/app-cache/blobs/uploads/") == uploads

    # a fresh machine where every step is a hit: the mount is never downloaded
    blob_gets = rf"^/v2/cachemounts/app-cache/blobs/{mount_blob}$"
    gets = count_requests(registry, "GET", blob_gets)
    assert gets >= 1, "the second build downloaded the mount to restore it"
    cached = _build(tmp_path, "root-3", ctx, "2", "--cache-from", ref)
    assert "restored" not in cached
    assert count_requests(registry, "GET", blob_gets) == gets

    # the index and mount layers in the manifest are not layers of the cache's records
    inspect = mason(tmp_path / "root-3", "cache", "inspect", ref)
    assert inspect.returncode == 0, inspect.stderr
    assert "cannot be used" not in inspect.stdout + inspect.stderr
