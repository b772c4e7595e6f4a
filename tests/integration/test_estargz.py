"""Issue 6 acceptance: eStargz layers in registry and local caches and in image outputs,
end to end through the CLI with the real registry, runc, skopeo, umoci and GNU tar.

The helpers that run ``mason build`` and read registry documents and access logs come
from ``test_remote_cache`` (imported, not copied).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from tests.support.cachebuild import (
    EXAMPLES,
    UNCOMPRESSED,
    AccessLog,
    Builder,
    base_layers,
    cache_doc,
    registry_blob,
    skopeo_raw,
)
from tests.support.registry_server import RegistryServer

from mason.compression.estargz import estargz_to_tar, verify_estargz, write_estargz

pytestmark = pytest.mark.integration

TOC = "containerd.io/snapshot/stargz/toc.digest"
USIZE = "io.containers.estargz.uncompressed-size"
GZIP_TYPES = {
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
}


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _members(tar_bytes: bytes) -> dict[str, tuple[Any, ...]]:
    """What a layer tar holds, entry by entry (name, type, mode, owner, link, content digest)."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tf:
        for m in tf:
            f = tf.extractfile(m) if m.isfile() else None
            content = _sha(f.read()) if f is not None else None
            out[m.name] = (m.type, m.mode, m.uid, m.gid, m.linkname, m.size, content)
    return out


def _check_estargz_layer(desc: dict[str, Any], blob: bytes) -> bytes:
    """Every annotation is right and the blob verifies chunk by chunk; returns its layer tar."""
    ann = desc["annotations"]
    assert desc["mediaType"] in GZIP_TYPES, desc
    assert len(blob) == desc["size"] and _sha(blob) == desc["digest"]
    whole = gzip.decompress(blob)  # a plain gzip reader reads it: TOC included
    assert ann[UNCOMPRESSED] == _sha(whole), (
        "containerd.io/uncompressed is the digest of the whole stream"
    )
    assert ann[USIZE] == str(len(whole))
    tar_out = io.BytesIO()
    info = verify_estargz(
        io.BytesIO(blob),
        expected_toc_digest=ann[TOC],
        expected_diff_id=ann[UNCOMPRESSED],
        expected_uncompressed_size=int(ann[USIZE]),
        tar_out=tar_out,
    )
    assert info.toc_digest == ann[TOC]
    assert b"stargz.index.json" in whole and whole.startswith(tar_out.getvalue())
    return tar_out.getvalue()


def _tar_tzf(blob: bytes, tmp: Path) -> list[str]:
    path = tmp / "layer.tar.gz"
    path.write_bytes(blob)
    proc = subprocess.run(["tar", "-tzf", str(path)], capture_output=True, text=True, check=True)
    return [line for line in proc.stdout.splitlines() if line]


def _config(ref: str) -> dict[str, Any]:
    raw = subprocess.run(
        ["skopeo", "inspect", "--config", "--raw", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return dict(json.loads(raw))


def _examples(tmp: Path) -> Path:
    dest = tmp / "examples"
    shutil.copytree(EXAMPLES, dest)
    return dest


# ---------------------------------------------------------------------------- acceptance


def test_examples_as_estargz_cache_and_image(
    build: Builder, reg: str, registry: RegistryServer, tmp_path: Path, busybox_image: str
) -> None:
    """Cold build of examples/: a gzip image, eStargz images and an eStargz registry cache.
    Every eStargz layer verifies chunk by chunk and holds exactly the gzip layer's files; tar -tzf
    lists them; umoci unpacks the eStargz image; after a wipe every step hits. As in BuildKit's
    image exporter, the pulled (gzip) base layer stays gzip in an eStargz image unless
    force-compression=true, which converts it too."""
    ctx = _examples(tmp_path)
    cache = f"{reg}/cache"
    base = base_layers(busybox_image)
    cold = build(
        ctx,
        "--cache-to",
        f"type=registry,ref={cache},mode=max,compression=estargz",
        "--output",
        f"type=image,name={reg}/app-gz,push=true",
        "--output",
        f"type=image,name={reg}/app-esgz,push=true,compression=estargz",
        "--output",
        f"type=image,name={reg}/app-esgz-all,push=true,compression=estargz,force-compression=true",
    ).check()
    steps = cold.ran | cold.cached

    # gzip image: the layer tars by diff ID
    gz_manifest, _ = skopeo_raw(f"{reg}/app-gz")
    gz_tars: dict[str, bytes] = {}
    for d in gz_manifest["layers"]:  # type: ignore[index]
        data = gzip.decompress(
            registry_blob(registry, f"{reg.split('/', 1)[1]}/app-gz", d["digest"])
        )
        gz_tars[_sha(data)] = data
    assert set(gz_tars) == set(_config(f"{reg}/app-gz")["rootfs"]["diff_ids"])

    # the eStargz cache: every layer the build made is eStargz, annotated and verifiable
    doc = cache_doc(cache)
    repo = cache.split("/", 1)[1]
    estargz_layers = [d for d in doc.layers if TOC in d.get("annotations", {})]  # type: ignore[operator]
    assert len(estargz_layers) >= 5, (
        doc.layers
    )  # 2 COPY + 2 RUN in build, COPY/COPY/RUN in the final stage
    for d in doc.layers:
        assert d["mediaType"] in GZIP_TYPES and UNCOMPRESSED in d["annotations"], d  # type: ignore[index, operator]
    for d in estargz_layers:
        blob = registry_blob(registry, repo, str(d["digest"]))
        tar_bytes = _check_estargz_layer(d, blob)
        listed = _tar_tzf(blob, tmp_path)
        assert "stargz.index.json" not in listed
        assert [n.rstrip("/") for n in listed] == list(_members(tar_bytes))
        if _sha(tar_bytes) in gz_tars:  # a final-stage layer: the same files as in the gzip image
            assert _members(tar_bytes) == _members(gz_tars[_sha(tar_bytes)])

    # the eStargz images: mason's layers are eStargz (both images), the base layer only with
    # force-compression; diff IDs match the uncompressed streams, annotations present
    for image, forced in (("app-esgz", False), ("app-esgz-all", True)):
        es_manifest, _ = skopeo_raw(f"{reg}/{image}")
        es_config = _config(f"{reg}/{image}")
        diff_ids = []
        kept = []
        for d in es_manifest["layers"]:  # type: ignore[index]
            blob = registry_blob(registry, f"{reg.split('/', 1)[1]}/{image}", d["digest"])
            diff_ids.append(_sha(gzip.decompress(blob)))
            if d["digest"] in base:
                assert d["mediaType"] in GZIP_TYPES and TOC not in d.get("annotations", {}), d
                kept.append(d["digest"])
                continue
            assert TOC in d["annotations"] and USIZE in d["annotations"], d
            annotated = {**d, "annotations": {**d["annotations"], UNCOMPRESSED: diff_ids[-1]}}
            tar_bytes = _check_estargz_layer(annotated, blob)
            assert _members(tar_bytes) == _members(gz_tars[_sha(tar_bytes)])
        assert es_config["rootfs"]["diff_ids"] == diff_ids
        assert kept == ([] if forced else sorted(base)), (image, kept)
    layout = tmp_path / "oci"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "-q",
            "--src-tls-verify=false",
            f"docker://{reg}/app-esgz",
            f"oci:{layout}:img",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:img", str(bundle)],
        check=True,
        capture_output=True,
    )
    assert (
        (bundle / "rootfs" / "app" / "message.txt")
        .read_bytes()
        .startswith((ctx / "app" / "greeting.txt").read_bytes())
    )
    assert (bundle / "rootfs" / "usr" / "local" / "bin" / "run-app").stat().st_mode & 0o777 == 0o755

    # wipe, import: every step hits, and the image is the cold build's gzip image to the byte
    # (issue 13: a cache's compression never leaks into an image; the eStargz blobs are
    # converted back, so only those are read, the base layer is mounted)
    log = AccessLog(registry)
    warm = build(
        ctx, "--cache-from", f"type=registry,ref={cache}", "--push", "-t", f"{reg}/app-warm"
    ).check()
    assert warm.cached == steps, warm.ran
    _, warm_raw = skopeo_raw(f"{reg}/app-warm")
    _, gz_raw = skopeo_raw(f"{reg}/app-gz")
    assert warm_raw == gz_raw
    assert not set(base) & set(log.blob_gets()), "the base layer was downloaded instead of mounted"


def test_estargz_local_cache_round_trip_and_materialisation(
    build: Builder, small: Path, tmp_path: Path
) -> None:
    """Local cache in eStargz: full hits after a wipe; a filesystem output materialises every
    eStargz layer (verified) and gives the same files as a gzip build."""
    dest = tmp_path / "cache"
    cold = build(
        small,
        "--cache-to",
        f"type=local,dest={dest},mode=max,compression=estargz,compression-level=9",
        "--output",
        f"type=local,dest={tmp_path / 'fs-cold'}",
    ).check()
    index = json.loads((dest / "index.json").read_text())
    top = json.loads(
        (dest / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text()
    )
    layers = top.get("layers") or top["manifests"][:-1]
    made = [d for d in layers if TOC in d.get("annotations", {})]
    assert len(made) >= 2
    for d in made:
        _check_estargz_layer(
            d, (dest / "blobs" / "sha256" / d["digest"].split(":")[1]).read_bytes()
        )
    warm = build(
        small,
        "--cache-from",
        f"type=local,src={dest}",
        "--output",
        f"type=local,dest={tmp_path / 'fs-warm'}",
    ).check()
    assert warm.cached == cold.ran | cold.cached
    for rel in ("hello.txt", "data/rows.txt"):
        assert (tmp_path / "fs-warm" / rel).read_bytes() == (
            tmp_path / "fs-cold" / rel
        ).read_bytes()


def test_force_compression_converts_between_estargz_and_gzip_zstd(
    build: Builder, small: Path, reg: str, registry: RegistryServer
) -> None:
    """force-compression converts imported gzip blobs to eStargz, and eStargz blobs to zstd and
    gzip (their TOC stripped: the diff ID is the layer tar's again)."""
    cold = build(small, "--cache-to", f"type=registry,ref={reg}/gz").check()
    steps = cold.ran | cold.cached
    gz_doc = cache_doc(f"{reg}/gz")
    tar_ids = {str(d["annotations"][UNCOMPRESSED]) for d in gz_doc.layers}  # type: ignore[index]
    conv = build(
        small,
        "--cache-from",
        f"type=registry,ref={reg}/gz",
        "--cache-to",
        f"type=registry,ref={reg}/es,compression=estargz,force-compression=true",
    ).check()
    assert conv.cached == steps
    es_doc = cache_doc(f"{reg}/es")
    repo = f"{reg}/es".split("/", 1)[1]
    for d in es_doc.layers:
        tar_bytes = _check_estargz_layer(d, registry_blob(registry, repo, str(d["digest"])))
        assert _sha(tar_bytes) in tar_ids  # the same layer tar as the gzip blob it came from
    for target in ("zstd", "gzip"):
        back = build(
            small,
            "--cache-from",
            f"type=registry,ref={reg}/es",
            "--cache-to",
            f"type=registry,ref={reg}/{target},compression={target},force-compression=true",
        )
        assert back.check().cached == steps
        doc = cache_doc(f"{reg}/{target}")
        assert all(TOC not in d.get("annotations", {}) for d in doc.layers)  # type: ignore[operator]
        assert {str(d["annotations"][UNCOMPRESSED]) for d in doc.layers} == tar_ids  # type: ignore[index]
        warm = build(small, "--cache-from", f"type=registry,ref={reg}/{target}").check()
        assert warm.cached == steps


# ---------------------------------------------------------------------------- corrupt caches


def _rewrite(layout: Path, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` (same length) in the cache config and manifest of a local cache,
    re-storing both under their new digests and pointing index.json at the new manifest."""
    assert len(old) == len(new)
    blobs = layout / "blobs" / "sha256"

    def store(data: bytes) -> bytes:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return digest.encode()

    index = layout / "index.json"
    manifest_hex = json.loads(index.read_bytes())["manifests"][0]["digest"].split(":")[1].encode()
    manifest = (blobs / manifest_hex.decode()).read_bytes()
    config_hex = json.loads(manifest)["config"]["digest"].split(":")[1].encode()
    new_config_hex = store((blobs / config_hex.decode()).read_bytes().replace(old, new))
    new_manifest_hex = store(manifest.replace(old, new).replace(config_hex, new_config_hex))
    index.write_bytes(index.read_bytes().replace(manifest_hex, new_manifest_hex))


def _replace_blob(layout: Path, digest: str, data: bytes) -> None:
    blobs = layout / "blobs" / "sha256"
    old = digest.split(":")[1]
    new = hashlib.sha256(data).hexdigest()
    (blobs / new).write_bytes(data)
    _rewrite(layout, old.encode(), new.encode())


def _chunk_corrupted(blob: bytes) -> bytes:
    """The same blob with one byte of file content changed but the original TOC kept: written
    at level 0, both versions have identical member offsets, so only chunk digests disagree."""
    tar = io.BytesIO()
    info = estargz_to_tar(io.BytesIO(blob), tar)
    data = bytearray(tar.getvalue())
    pos = data.index(b"row 1")  # file content of data/rows.txt
    data[pos] = ord("R")
    out = io.BytesIO()
    write_estargz(io.BytesIO(bytes(data)), out, 0)
    forged = out.getvalue()
    return forged[: info.toc_offset] + blob[info.toc_offset :]


@pytest.mark.parametrize("damage", ["bad-footer", "toc-digest-mismatch", "chunk-digest-mismatch"])
def test_corrupt_estargz_cache_blob_is_rejected_when_materialised(
    build: Builder, small: Path, tmp_path: Path, damage: str
) -> None:
    dest = tmp_path / "cache"
    build(
        small,
        "--cache-to",
        f"type=local,dest={dest},mode=max,compression=estargz,compression-level=0",
    ).check()
    index = json.loads((dest / "index.json").read_text())
    top = json.loads(
        (dest / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text()
    )
    layers = top.get("layers") or top["manifests"][:-1]
    # the RUN layer (it holds data/rows.txt)
    victim = next(
        d
        for d in layers
        if TOC in d.get("annotations", {})
        and b"rows.txt"
        in gzip.decompress((dest / "blobs" / "sha256" / d["digest"][7:]).read_bytes())
    )
    blob = (dest / "blobs" / "sha256" / victim["digest"][7:]).read_bytes()
    if damage == "bad-footer":
        _replace_blob(dest, victim["digest"], blob[:-19] + blob[-19:].replace(b"STARGZ", b"STARGX"))
        expected = "footer"
    elif damage == "toc-digest-mismatch":
        toc = victim["annotations"][TOC]
        _rewrite(dest, toc.encode(), ("sha256:" + "0" * 64).encode())
        expected = "TOC digest mismatch"
    else:
        _replace_blob(dest, victim["digest"], _chunk_corrupted(blob))
        expected = "digest"
    res = build(
        small,
        "--cache-from",
        f"type=local,src={dest}",
        "--output",
        f"type=local,dest={tmp_path / 'fs'}",
    )
    assert res.returncode != 0, res.output
    assert "eStargz" in res.output and expected in res.output, res.output[-3000:]
    assert not (tmp_path / "fs" / "data" / "rows.txt").exists()


def test_unchanged_estargz_cache_re_exports_identically(
    build: Builder, small: Path, reg: str, registry: RegistryServer
) -> None:
    """Warm build from an eStargz cache, exporting to the same ref: nothing uploaded, the same
    manifest (the eStargz annotations of the reused blobs are kept)."""
    ref = f"{reg}/c"
    build(small, "--cache-to", f"type=registry,ref={ref},mode=max,compression=estargz").check()
    before = skopeo_raw(ref)[1]
    log = AccessLog(registry)
    warm = build(
        small,
        "--cache-from",
        f"type=registry,ref={ref}",
        "--cache-to",
        f"type=registry,ref={ref},mode=max,compression=estargz",
    ).check()
    assert not warm.ran, warm.ran
    assert skopeo_raw(ref)[1] == before
    assert not log.uploads()
