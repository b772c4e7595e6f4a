"""Issue 9, items 5 to 9: a hostile or stale registry cache costs at most its hits, never the
build, and never a wrong image.

Each test damages a real cache in the real registry the way the issue describes (a
200k-layer chain, a deleted blob, an unknown or relabelled media type, a relabelled diff ID),
then runs ``mason build`` through the CLI. Evidence: the exit code, ``#N CACHED`` lines and
WARNING lines from ``--progress=plain``, and, for images, ``umoci unpack`` (which checks every
layer's media type and diff ID) on a ``skopeo copy`` of what mason pushed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.support.cachebuild import UNCOMPRESSED, Builder, base_layers, cache_doc, skopeo_raw
from tests.support.registry_server import RegistryServer

pytestmark = pytest.mark.integration

_ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
RUN = "RUN mkdir -p /data"
COPY = "COPY hello.txt"


# ---------------------------------------------------------------------------- helpers


def _repo(ref: str) -> str:
    return ref.split("/", 1)[1].rsplit(":", 1)[0]


def _request(
    registry: RegistryServer,
    method: str,
    path: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, str]:
    req = urllib.request.Request(
        f"{registry.url}{path}", data=data, method=method, headers=headers or {}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.status, resp.read(), resp.headers.get("Content-Type", "")


def _delete_blob(registry: RegistryServer, repo: str, digest: str) -> None:
    status, _, _ = _request(registry, "DELETE", f"/v2/{repo}/blobs/{digest}")
    assert status == 202
    with pytest.raises(urllib.error.HTTPError):
        _request(registry, "HEAD", f"/v2/{repo}/blobs/{digest}")


def _edit_cache_layers(
    registry: RegistryServer, repo: str, edit: Callable[[list[dict[str, Any]]], None]
) -> None:
    """Rewrite the layer descriptors of the cache manifest at ``repo:latest`` (image-manifest form)."""
    _, raw, media_type = _request(
        registry, "GET", f"/v2/{repo}/manifests/latest", headers={"Accept": _ACCEPT}
    )
    doc = json.loads(raw)
    edit(doc["layers"])
    body = json.dumps(doc).encode()
    status, _, _ = _request(
        registry,
        "PUT",
        f"/v2/{repo}/manifests/latest",
        data=body,
        headers={"Content-Type": media_type},
    )
    assert status == 201


def _push_blob(registry: RegistryServer, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    req = urllib.request.Request(
        f"{registry.url}/v2/{repo}/blobs/uploads/", data=b"", method="POST"
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        location = resp.headers["Location"]
    sep = "&" if "?" in location else "?"
    url = location if location.startswith("http") else f"{registry.url}{location}"
    put = urllib.request.Request(
        f"{url}{sep}digest={digest}",
        data=data,
        method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(put, timeout=120) as resp:
        assert resp.status == 201
    return digest


def _umoci_unpack(ref: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """``skopeo copy`` the image into an OCI layout, then ``umoci unpack`` it (checks media types
    and diff IDs of every layer)."""
    if shutil.which("umoci") is None:
        pytest.skip("umoci is not installed")
    layout = tmp / f"oci-{hashlib.sha256(ref.encode()).hexdigest()[:8]}"
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:img"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return subprocess.run(
        [
            "umoci",
            "unpack",
            "--rootless",
            "--image",
            f"{layout}:img",
            str(tmp / f"{layout.name}-b"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _cold(build: Builder, small: Path, reg: str) -> tuple[str, list[str]]:
    """A cold build pushed to ``reg/app`` with a mode=max cache at ``reg/cache``; returns the
    cache ref and the image's layer digests (base first, the RUN layer last)."""
    cache = f"{reg}/cache"
    build(
        small, "--push", "-t", f"{reg}/app", "--cache-to", f"type=registry,ref={cache},mode=max"
    ).check()
    doc, _ = skopeo_raw(f"{reg}/app:latest")
    return cache, [str(d["digest"]) for d in doc["layers"]]  # type: ignore[attr-defined]


def _titles(build_steps: dict[str, str], fragment: str) -> str:
    [title] = [t for t in build_steps if fragment in t]
    return title


# ---------------------------------------------------------------------------- item 5


def _chain_config(n: int) -> bytes:
    layers: list[dict[str, Any]] = [
        {"blob": "sha256:" + hashlib.sha256(str(i).encode()).hexdigest(), "parent": i - 1}
        for i in range(n)
    ]
    layers[0]["parent"] = -1
    top = "sha256:" + hashlib.sha256(b"top").hexdigest()
    return json.dumps(
        {"layers": layers, "records": [{"digest": top, "layers": [{"layer": n - 1}]}]}
    ).encode()


@pytest.mark.timeout(240)
def test_a_cache_with_a_200k_layer_chain_is_refused_with_a_warning(
    build: Builder, small: Path, reg: str, registry: RegistryServer
) -> None:
    """An 18 MB config (under the 64 MiB cap) with one 200k-layer chain kept the build busy past
    600 s (quadratic validation). Now the import is refused at once with a warning naming the
    bound, and the build goes on without the cache."""
    repo = f"{_repo(reg)}/deep-cache"
    raw = _chain_config(200_000)
    assert 16 << 20 < len(raw) < 64 << 20
    digest = _push_blob(registry, repo, raw)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.buildkit.cacheconfig.v0",
            "digest": digest,
            "size": len(raw),
        },
        "layers": [],
    }
    _request(
        registry,
        "PUT",
        f"/v2/{repo}/manifests/latest",
        data=json.dumps(manifest).encode(),
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    out = build(small, "--cache-from", f"type=registry,ref={registry.host}/{repo}").check()
    assert any("more than 4096 layers" in w for w in out.warnings), out.output[-3000:]
    assert not out.cached


# ---------------------------------------------------------------------------- item 6


def test_a_hit_whose_blob_is_gone_is_a_miss_and_the_step_runs(
    build: Builder, small: Path, reg: str, registry: RegistryServer, tmp_path: Path
) -> None:
    """Every step was CACHED, then the push got 404 and the build exited 1. Now the hit whose
    blob is gone is a miss: a warning names the step and the blob, the step runs, the push works."""
    cache, layers = _cold(build, small, reg)
    gone = layers[-1]  # the RUN layer
    _delete_blob(registry, _repo(cache), gone)
    warm = build(
        small, "--push", "-t", f"{reg}/app-warm", "--cache-from", f"type=registry,ref={cache}"
    )
    warm.check()
    run = _titles(warm.steps, RUN)
    assert warm.steps[run] == "DONE", warm.output[-3000:]
    assert warm.steps[_titles(warm.steps, COPY)] == "CACHED"  # its blob is still there
    [warning] = [w for w in warm.warnings if gone in w]
    assert RUN in warning and "missing" in warning
    assert _umoci_unpack(f"{reg}/app-warm:latest", tmp_path).returncode == 0


# ---------------------------------------------------------------------------- item 7


def test_an_unknown_layer_media_type_makes_only_its_results_unusable(
    build: Builder, small: Path, reg: str, registry: RegistryServer, tmp_path: Path
) -> None:
    """An unknown layer media type raised an uncaught ValueError (exit 70). Now the results on
    that layer are not used (one warning); the rest of the cache still is."""
    cache, layers = _cold(build, small, reg)
    odd = "application/vnd.example.unknown.layer"

    def relabel(descs: list[dict[str, Any]]) -> None:
        for d in descs:
            if d["digest"] == layers[-1]:
                d["mediaType"] = odd

    _edit_cache_layers(registry, _repo(cache), relabel)
    warm = build(
        small, "--push", "-t", f"{reg}/app-warm", "--cache-from", f"type=registry,ref={cache}"
    )
    warm.check()
    [warning] = [w for w in warm.warnings if odd in w]
    assert layers[-1] in warning
    assert warm.steps[_titles(warm.steps, COPY)] == "CACHED"
    assert warm.steps[_titles(warm.steps, RUN)] == "DONE"
    assert _umoci_unpack(f"{reg}/app-warm:latest", tmp_path).returncode == 0


# ---------------------------------------------------------------------------- item 8


def test_a_relabelled_media_type_is_caught_before_it_goes_into_an_image(
    build: Builder, small: Path, reg: str, registry: RegistryServer, tmp_path: Path
) -> None:
    """A cache that calls a gzip layer zstd made mason push an image umoci rejects, exit 0.
    Now the first bytes of the blob (a ranged read, no download) show the lie: the hit is a
    miss, the step runs, and the pushed image unpacks."""
    cache, layers = _cold(build, small, reg)

    def relabel(descs: list[dict[str, Any]]) -> None:
        for d in descs:
            if d["digest"] == layers[-1]:
                d["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"

    _edit_cache_layers(registry, _repo(cache), relabel)
    warm = build(
        small, "--push", "-t", f"{reg}/app-warm", "--cache-from", f"type=registry,ref={cache}"
    )
    warm.check()
    assert warm.steps[_titles(warm.steps, RUN)] == "DONE", warm.output[-3000:]
    [warning] = [w for w in warm.warnings if layers[-1] in w]
    assert "zstd" in warning and "gzip data" in warning
    doc, _ = skopeo_raw(f"{reg}/app-warm:latest")
    assert all(str(d["mediaType"]).endswith("gzip") for d in doc["layers"])  # type: ignore[attr-defined]
    unpacked = _umoci_unpack(f"{reg}/app-warm:latest", tmp_path)
    assert unpacked.returncode == 0, unpacked.stderr


def test_a_relabelled_diff_id_of_a_base_layer_is_caught(
    build: Builder,
    small: Path,
    reg: str,
    registry: RegistryServer,
    tmp_path: Path,
    busybox_image: str,
) -> None:
    """A cache that gives a base layer another diff ID made mason push an image whose
    rootfs.diff_ids umoci rejects, exit 0. The base image's config says what the diff ID is:
    the hits on that layer are misses, the steps run, the image unpacks."""
    cache, _ = _cold(build, small, reg)
    [base] = base_layers(busybox_image)
    bogus = "sha256:" + "0" * 64

    def relabel(descs: list[dict[str, Any]]) -> None:
        found = [d for d in descs if d["digest"] == base]
        assert found, "the mode=max cache holds the base layer"
        for d in found:
            d["annotations"][UNCOMPRESSED] = bogus

    _edit_cache_layers(registry, _repo(cache), relabel)
    warm = build(
        small, "--push", "-t", f"{reg}/app-warm", "--cache-from", f"type=registry,ref={cache}"
    )
    warm.check()
    assert warm.steps[_titles(warm.steps, RUN)] == "DONE", warm.output[-3000:]
    assert any(bogus in w and base in w for w in warm.warnings), warm.warnings
    config = json.loads(
        subprocess.run(
            [
                "skopeo",
                "inspect",
                "--config",
                "--raw",
                "--tls-verify=false",
                f"docker://{reg}/app-warm:latest",
            ],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    )
    assert bogus not in config["rootfs"]["diff_ids"]
    unpacked = _umoci_unpack(f"{reg}/app-warm:latest", tmp_path)
    assert unpacked.returncode == 0, unpacked.stderr


# ---------------------------------------------------------------------------- item 9


def test_a_blob_deleted_from_the_cache_repository_is_stored_again_on_export(
    build: Builder, small: Path, reg: str, registry: RegistryServer, busybox_image: str
) -> None:
    """The export skipped every blob the current cache manifest lists; once one was deleted,
    every export failed with MANIFEST_BLOB_UNKNOWN (and a hint about media types), build after
    build. Now listed blobs are HEADed and the missing one is stored again."""
    cache = f"{reg}/cache"
    args = [
        "--cache-from",
        f"type=registry,ref={cache}",
        "--cache-to",
        f"type=registry,ref={cache},mode=max",
    ]
    root = build.root()
    build(small, *args, root=root).check()  # cold: the base layer is in this root's store
    [gone] = base_layers(busybox_image)
    assert gone in {str(d["digest"]) for d in cache_doc(f"{cache}:latest").layers}
    _delete_blob(registry, _repo(cache), gone)
    (small / "hello.txt").write_text("changed\n")  # a new manifest, still on the base layer
    for _ in range(2):  # not just once: build after build
        again = build(small, *args, root=root)
        again.check()
        assert "MANIFEST_BLOB_UNKNOWN" not in again.output
        assert "may not accept" not in again.output
        _request(registry, "HEAD", f"/v2/{_repo(cache)}/blobs/{gone}")  # back (raises on 404)
        for d in cache_doc(f"{cache}:latest").layers:
            _request(registry, "HEAD", f"/v2/{_repo(cache)}/blobs/{d['digest']}")
        (small / "hello.txt").write_text("changed again\n")
