"""Issue 5 acceptance: registry, inline and local build caches, end to end through the CLI.

Every build runs ``mason build`` as a subprocess with a fresh ``$MASON_ROOT`` (so "wipe"
is "use a new directory"), the real CNCF registry from ``tests.support`` and real runc.
Evidence comes from outside mason: ``--progress=plain`` lines (``#N CACHED``), the
registry's access log (blob GETs, uploads), ``skopeo inspect --raw`` and the
``--metadata-file`` digest.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support.cachebuild import (
    CACHECONFIG,
    EXAMPLES,
    UNCOMPRESSED,
    AccessLog,
    Builder,
    base_layers,
    cache_doc,
    copy_context,
    registry_blob,
    skopeo_raw,
)
from tests.support.registry_server import RegistryServer, free_port

pytestmark = pytest.mark.integration


LAYER_TYPES = {
    ("uncompressed", True): "application/vnd.oci.image.layer.v1.tar",
    ("gzip", True): "application/vnd.oci.image.layer.v1.tar+gzip",
    ("zstd", True): "application/vnd.oci.image.layer.v1.tar+zstd",
    ("uncompressed", False): "application/vnd.docker.image.rootfs.diff.tar",
    ("gzip", False): "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ("zstd", False): "application/vnd.docker.image.rootfs.diff.tar.zstd",
}
TOP_TYPES = {
    (True, True): "application/vnd.oci.image.manifest.v1+json",
    (True, False): "application/vnd.oci.image.index.v1+json",
    (False, False): "application/vnd.docker.distribution.manifest.list.v2+json",
}


# ---------------------------------------------------------------------------- helpers


def _manifest_digest(ref: str) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(skopeo_raw(ref)[1]).hexdigest()


def _base_diff_ids(base: str) -> set[str]:
    raw = subprocess.run(
        ["skopeo", "inspect", "--config", "--raw", "--tls-verify=false", f"docker://{base}"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return set(json.loads(raw)["rootfs"]["diff_ids"])


# ---------------------------------------------------------------------------- fixtures


# ---------------------------------------------------------------------------- acceptance


@pytest.mark.parametrize("context_name", ["multistage", "examples"])
def test_cold_export_then_fresh_root_hits_everything_without_layer_downloads(
    build: Builder,
    context_name: str,
    tmp_path: Path,
    reg: str,
    registry: RegistryServer,
    busybox_image: str,
) -> None:
    if context_name == "examples":  # the project's example app (two stages)
        multistage = tmp_path / "ctx-examples"
        shutil.copytree(EXAMPLES, multistage)
    else:
        multistage = copy_context(context_name, tmp_path)
    cold = build(
        multistage,
        "--push",
        "-t",
        f"{reg}/app",
        "--cache-to",
        f"type=registry,ref={reg}/app-cache,mode=max",
    ).check()
    steps = cold.steps
    # FROM is one vertex shared by all stages, plus the stages' RUN/COPY/WORKDIR steps
    assert len(steps) >= 8, steps
    assert not cold.cached, f"a cold build on an empty registry cached {cold.cached}"
    cache = cache_doc(f"{reg}/app-cache:latest")
    cache_layers = {str(d["digest"]) for d in cache.layers}
    image_doc, _ = skopeo_raw(f"{reg}/app:latest")
    image_layers = {str(d["digest"]) for d in image_doc["layers"]}  # type: ignore[attr-defined]
    assert image_layers <= cache_layers | base_layers(busybox_image)

    log = AccessLog(registry)
    warm = build(
        multistage,
        "--push",
        "-t",
        f"{reg}/app",
        "--cache-from",
        f"type=registry,ref={reg}/app-cache",
    ).check()
    assert set(warm.steps) == set(steps)
    assert warm.cached == set(steps), f"steps not CACHED: {warm.ran}"
    assert len([ln for ln in warm.output.splitlines() if ln.endswith(" CACHED")]) == len(steps)
    gets = log.blob_gets()
    layer_gets = [d for d in gets if d in cache_layers | image_layers | base_layers(busybox_image)]
    assert layer_gets == [], f"layer blobs downloaded on a fully cached build: {layer_gets}"
    assert warm.digest == cold.digest, "a fully cached rebuild pushed a different image"
    assert _manifest_digest(f"{reg}/app:latest") == warm.digest


def test_one_file_change_reruns_exactly_the_dependent_steps(
    build: Builder, multistage: Path, reg: str
) -> None:
    cache_from = f"type=registry,ref={reg}/cache"
    cache_to = f"{cache_from},mode=max"
    cold = build(multistage, "--push", "-t", f"{reg}/app", "--cache-to", cache_to).check()
    (multistage / "src" / "app.txt").write_text("application code v2\n")
    changed = build(
        multistage, "--push", "-t", f"{reg}/app", "--cache-from", cache_from, "--cache-to", cache_to
    ).check()
    assert set(changed.steps) == set(cold.steps)

    def pick(*fragments: str) -> set[str]:
        found = {t for t in cold.steps if any(f in t for f in fragments)}
        assert len(found) == len(fragments), (fragments, found)
        return found

    # src/app.txt enters at build's COPY; everything downstream of it runs again
    expected_ran = pick(
        "COPY src/app.txt",
        "RUN cat /src/app.txt",
        "COPY --from=build",
        "COPY src/run.sh",
        "RUN chmod 755",
    )
    assert changed.ran == expected_ran, (
        f"ran {sorted(changed.ran)}, expected {sorted(expected_ran)}"
    )
    assert changed.cached == set(cold.steps) - expected_ran
    assert changed.digest != cold.digest


def test_mode_min_versus_max(build: Builder, multistage: Path, reg: str) -> None:
    results = {}
    for mode in ("min", "max"):
        cold = build(
            multistage,
            "--push",
            "-t",
            f"{reg}/app-{mode}",
            "--cache-to",
            f"type=registry,ref={reg}/cache-{mode},mode={mode}",
        ).check()
        warm = build(
            multistage,
            "--push",
            "-t",
            f"{reg}/app-{mode}",
            "--cache-from",
            f"type=registry,ref={reg}/cache-{mode}",
        ).check()
        results[mode] = (cold, warm, cache_doc(f"{reg}/cache-{mode}:latest"))
    cold_steps = results["max"][0].steps
    froms = {t for t in cold_steps if "] FROM " in t}
    intermediate = {t for t in cold_steps if t.startswith(("[deps ", "[build "))} - froms
    final = {t for t in cold_steps if t.startswith("[stage-2 ")} - froms
    assert len(intermediate) == 8 and len(final) == 3, cold_steps
    # max: everything hits, intermediate stages included
    assert results["max"][1].cached == set(cold_steps)
    # min: the exported image's steps hit, the intermediate stages' steps do not
    min_warm = results["min"][1]
    assert final <= min_warm.cached, (
        f"final stage steps not cached with min: {final - min_warm.cached}"
    )
    assert not (intermediate & min_warm.cached), (
        f"min cache served intermediate steps {intermediate & min_warm.cached}"
    )
    min_size, max_size = results["min"][2].total_size, results["max"][2].total_size
    min_layers, max_layers = len(results["min"][2].layers), len(results["max"][2].layers)
    print(
        f"cache size: min {min_size} B in {min_layers} layers, max {max_size} B in {max_layers} layers"
    )
    assert min_layers < max_layers
    assert min_size < max_size


MATRIX = [
    (compression, oci, image_manifest)
    for compression in ("uncompressed", "gzip", "zstd")
    for oci, image_manifest in ((True, True), (True, False), (False, False))
]


def test_compression_mediatypes_manifest_matrix(
    build: Builder, small: Path, reg: str, busybox_image: str
) -> None:
    base_diff_ids = _base_diff_ids(busybox_image)

    def ref(c: str, oci: bool, im: bool) -> str:
        return f"{reg}/cache-{c}-oci{int(oci)}-im{int(im)}"

    # one cold build writes every combination (several --cache-to are allowed)
    cache_to = []
    for c, oci, im in MATRIX:
        cache_to += [
            "--cache-to",
            f"type=registry,ref={ref(c, oci, im)},compression={c},"
            f"oci-mediatypes={str(oci).lower()},image-manifest={str(im).lower()}",
        ]
    cold = build(small, *cache_to).check()
    steps = set(cold.steps)
    for c, oci, im in MATRIX:
        doc = cache_doc(ref(c, oci, im))
        assert doc.media_type == TOP_TYPES[(oci, im)], (c, oci, im, doc.media_type)
        made = [
            d for d in doc.layers if d.get("annotations", {}).get(UNCOMPRESSED) not in base_diff_ids
        ]  # type: ignore[attr-defined]
        assert len(made) == 2, (c, oci, im, doc.layers)
        for d in doc.layers:
            assert UNCOMPRESSED in d.get("annotations", {}), d  # type: ignore[operator]
            # a pulled gzip base layer may stay gzip (BuildKit keeps it); its flavour follows oci-mediatypes
            allowed = {LAYER_TYPES[(c, oci)], LAYER_TYPES[("gzip", oci)]}
            assert d["mediaType"] in allowed, (c, oci, im, d)
        for d in made:
            assert d["mediaType"] == LAYER_TYPES[(c, oci)], (c, oci, im, d)
    # each form round-trips to full hits on a fresh root (detected from what is stored)
    for c, oci, im in MATRIX:
        warm = build(small, "--cache-from", f"type=registry,ref={ref(c, oci, im)}").check()
        assert warm.cached == steps, (c, oci, im, warm.ran)


def test_docker_mediatypes_with_image_manifest_is_refused(
    build: Builder, small: Path, reg: str
) -> None:
    res = build(
        small, "--cache-to", f"type=registry,ref={reg}/c,oci-mediatypes=false,image-manifest=true"
    )
    assert res.returncode == 2, res.output
    assert "OCI mediatypes are required for image-manifest" in res.output


def test_estargz_cache_level_out_of_range_is_a_usage_error(
    build: Builder, small: Path, reg: str
) -> None:
    # compression=estargz is supported (tests/integration/test_estargz.py); its levels are gzip's 0-9
    res = build(
        small, "--cache-to", f"type=registry,ref={reg}/c,compression=estargz,compression-level=10"
    )
    assert res.returncode == 2, res.output
    assert "compression-level" in res.output and "estargz" in res.output


def test_force_compression_converts_gzip_blobs_to_zstd(
    build: Builder, small: Path, reg: str, registry: RegistryServer
) -> None:
    cold = build(small, "--cache-to", f"type=registry,ref={reg}/gz").check()
    assert all(d["mediaType"].endswith("+gzip") for d in cache_doc(f"{reg}/gz").layers)  # type: ignore[union-attr]
    # fresh root: every layer is known only as the gzip blob of the imported cache
    conv = build(
        small,
        "--cache-from",
        f"{reg}/gz",
        "--cache-to",
        f"type=registry,ref={reg}/zs,compression=zstd,force-compression=true",
    ).check()
    assert conv.cached == set(cold.steps)
    doc = cache_doc(f"{reg}/zs")
    assert doc.layers
    repo = f"{reg}/zs".split("/", 1)[1]
    for d in doc.layers:
        assert d["mediaType"] == LAYER_TYPES[("zstd", True)], d
        head = registry_blob(registry, repo, str(d["digest"]))[:4]
        assert head == b"\x28\xb5\x2f\xfd", f"{d['digest']} is not a zstd frame"
    warm = build(small, "--cache-from", f"{reg}/zs").check()
    assert warm.cached == set(cold.steps)


def test_without_force_compression_imported_gzip_blobs_are_kept(
    build: Builder, small: Path, reg: str, registry: RegistryServer
) -> None:
    """BuildKit (and the seed page): force-compression exists to re-compress layers imported
    from a previous cache; without it they are exported as they are, and a fully cached
    rebuild need not download them to re-compress."""
    cold = build(small, "--cache-to", f"type=registry,ref={reg}/gz").check()
    log = AccessLog(registry)
    keep = build(
        small,
        "--cache-from",
        f"{reg}/gz",
        "--cache-to",
        f"type=registry,ref={reg}/zs-keep,compression=zstd",
    ).check()
    assert keep.cached == set(cold.steps)
    gz_layers = {str(d["digest"]) for d in cache_doc(f"{reg}/gz").layers}
    doc = cache_doc(f"{reg}/zs-keep")
    assert {str(d["digest"]) for d in doc.layers} == gz_layers, [d["mediaType"] for d in doc.layers]
    assert not set(log.blob_gets()) & gz_layers, (
        "imported layers were downloaded to be re-compressed"
    )


def test_unchanged_reexport_uploads_nothing_and_keeps_the_manifest(
    build: Builder, multistage: Path, reg: str, registry: RegistryServer
) -> None:
    cache_from = f"type=registry,ref={reg}/cache"
    cache_to = f"{cache_from},mode=max"
    build(multistage, "--cache-to", cache_to).check()
    before = _manifest_digest(f"{reg}/cache")
    log = AccessLog(registry)
    again = build(
        multistage, "--cache-from", cache_from, "--cache-to", cache_to
    ).check()  # a fresh root
    assert again.cached == set(again.steps)
    assert log.uploads() == [], f"re-export of an unchanged cache uploaded: {log.uploads()}"
    assert len(log.manifest_puts()) <= 1
    assert _manifest_digest(f"{reg}/cache") == before


def test_missing_cache_ref_is_one_quiet_line_and_builds(
    build: Builder, small: Path, reg: str
) -> None:
    # a first build: nothing at the ref yet is normal, not an error (issue 13, defect 7)
    res = build(small, "--cache-from", f"type=registry,ref={reg}/does-not-exist").check()
    assert res.warnings == []
    assert "ERROR" not in res.output, res.output
    said = [
        ln for ln in res.output.splitlines() if "does-not-exist" in ln and "importing" not in ln
    ]
    assert len(said) == 1 and f"no cache at {reg}/does-not-exist:latest yet" in said[0], res.output
    assert not res.cached


def test_missing_local_cache_dir_is_one_quiet_line(
    build: Builder, small: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "never-written"
    res = build(small, "--cache-from", f"type=local,src={cache}").check()
    assert res.warnings == [] and "ERROR" not in res.output, res.output
    assert sum(f"no cache at {cache} yet" in ln for ln in res.output.splitlines()) == 1, res.output


@pytest.mark.parametrize("variant", ["tls-basic", "token"])
def test_wrong_password_warns_once_and_builds(
    build: Builder, small: Path, variant: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server: RegistryServer = request.getfixturevalue(
        "registry_tls_basic" if variant == "tls-basic" else "registry_token"
    )
    assert server.username and server.password
    insecure = (
        ",registry.insecure=true" if variant == "tls-basic" else ""
    )  # self-signed certificate
    cache = f"type=registry,ref={server.host}/auth/cache{insecure}"

    def docker_config(password: str, name: str) -> dict[str, str]:
        cfg = tmp_path / name
        cfg.mkdir()
        auth = base64.b64encode(f"{server.username}:{password}".encode()).decode()
        (cfg / "config.json").write_text(json.dumps({"auths": {server.host: {"auth": auth}}}))
        return {"DOCKER_CONFIG": str(cfg)}

    # with the right password the cache works: the warning below is about the password alone
    good = docker_config(server.password, "good")
    cold = build(small, "--cache-to", cache, env=good).check()
    assert build(small, "--cache-from", cache, env=good).check().cached == set(cold.steps)
    wrong = "wrong-" + "x" * 8
    res = build(small, "--cache-from", cache, env=docker_config(wrong, "bad")).check()
    assert len(res.warnings) == 1, res.warnings
    assert server.host in res.warnings[0]
    assert not res.cached
    assert wrong not in res.output and server.password not in res.output


def test_corrupt_cache_config_warns_once_and_builds(
    build: Builder, small: Path, reg: str, registry: RegistryServer
) -> None:
    from mason.digest import sha256_bytes
    from mason.oci import mediatypes as mt
    from mason.oci.descriptor import Descriptor
    from mason.oci.manifest import build_manifest
    from mason.oci.reference import Reference
    from mason.registry.client import RegistryClient

    ref = Reference.parse(f"{reg}/corrupt:latest")
    bad = b'{"layers": [{"blob": "sha256:nope", "parent": 7}], "records": [{"digest": 42'
    config = Descriptor(CACHECONFIG, sha256_bytes(bad), len(bad))
    manifest = build_manifest(config, (), media_type=mt.OCI_MANIFEST)
    with RegistryClient() as client:
        import io

        client.push_blob(ref, config, lambda: io.BytesIO(bad))
        client.put_manifest(ref, manifest.raw, mt.OCI_MANIFEST)
    res = build(small, "--cache-from", f"type=registry,ref={ref}").check()
    assert len(res.warnings) == 1, res.warnings
    assert "corrupt" in res.warnings[0]
    assert not res.cached


def test_unreachable_cache_to_fails_unless_ignore_error(build: Builder, small: Path) -> None:
    dead = f"127.0.0.1:{free_port()}/nobody/cache"
    failed = build(small, "--cache-to", f"type=registry,ref={dead}")
    assert failed.returncode == 1, failed.output
    assert dead.split("/")[0] in failed.output
    ok = build(small, "--cache-to", f"type=registry,ref={dead},ignore-error=true").check()
    assert len(ok.warnings) == 1, ok.warnings
    assert dead.split("/")[0] in ok.warnings[0]


def test_inline_cache_round_trips(build: Builder, small: Path, reg: str) -> None:
    cold = build(small, "--push", "-t", f"{reg}/app", "--cache-to", "type=inline").check()
    config_ref = f"{reg}/app:latest"
    raw = subprocess.run(
        ["skopeo", "inspect", "--config", "--raw", "--tls-verify=false", f"docker://{config_ref}"],
        capture_output=True,
        check=True,
    ).stdout
    assert "moby.buildkit.cache.v0" in json.loads(raw), (
        "inline cache metadata missing from the image config"
    )
    # the usual CI pair: keep writing inline metadata while reading it back
    warm = build(
        small, "--push", "-t", f"{reg}/app", "--cache-to", "type=inline", "--cache-from", config_ref
    ).check()
    assert warm.cached == set(cold.steps), warm.ran
    assert warm.digest == cold.digest


def test_no_lock_file_in_tarballs_or_local_caches(
    build: Builder, small: Path, tmp_path: Path
) -> None:
    # index.json.lock, the file that serialised index.json updates, was shipped inside oci and
    # docker tarballs and left in local cache directories (issue 13, defect 8)
    import tarfile

    oci, docker, cache = tmp_path / "oci.tar", tmp_path / "docker.tar", tmp_path / "cache"
    build(
        small,
        "-t",
        "lockless:latest",
        "-o",
        f"type=oci,dest={oci}",
        "-o",
        f"type=docker,dest={docker}",
        "--cache-to",
        f"type=local,dest={cache},mode=max",
    ).check()
    for tarball in (oci, docker):
        with tarfile.open(tarball) as tar:
            names = tar.getnames()
        assert "index.json" in names and not [n for n in names if n.endswith(".lock")], names
    assert sorted(p.name for p in cache.iterdir()) == ["blobs", "index.json", "oci-layout"]


def test_inline_cache_gives_the_same_image_on_a_base_with_history_times(
    build: Builder, reg: str, tmp_path: Path, busybox_image: str
) -> None:
    # the base image's history has real times (it was built just now): the cold build wrote the
    # FROM record's createdAt as 1970 and the cache-imported one as the base's time, so the two
    # images differed (issue 13, defect 3)
    base, app = tmp_path / "base-context", tmp_path / "app-context"
    base.mkdir()
    (base / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo base > /base.txt\n")
    build(base, "--push", "-t", f"{reg}/base").check()
    app.mkdir()
    (app / "Dockerfile").write_text(f"FROM {reg}/base\nRUN echo app > /app.txt\n")
    args = ("--push", "-t", f"{reg}/app", "--cache-to", "type=inline")
    cold = build(app, *args).check()
    warm = build(app, *args, "--cache-from", f"{reg}/app:latest").check()  # a fresh root
    assert warm.cached == set(cold.steps), warm.ran
    assert warm.digest == cold.digest


def test_local_cache_round_trips(build: Builder, multistage: Path, tmp_path: Path) -> None:
    dest = tmp_path / "local-cache"
    cold = build(multistage, "--cache-to", f"type=local,dest={dest},mode=max").check()
    assert json.loads((dest / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    index = json.loads((dest / "index.json").read_text())
    assert any(
        m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "latest"
        for m in index["manifests"]
    )
    warm = build(multistage, "--cache-from", f"type=local,src={dest}").check()
    assert warm.cached == set(cold.steps), warm.ran


def test_several_cache_from_are_tried_in_order_and_hits_name_their_source(
    build: Builder, small: Path, reg: str
) -> None:
    good = f"{reg}/cache"
    cold = build(small, "--cache-to", f"type=registry,ref={good}").check()
    res = build(
        small,
        "--cache-from",
        f"type=registry,ref={reg}/missing",
        "--cache-from",
        f"type=registry,ref={good}",
    ).check()
    assert res.cached == set(cold.steps)
    assert res.warnings == [] and f"no cache at {reg}/missing:latest yet" in res.output, res.output
    hits = [ln for ln in res.output.splitlines() if "cache hit from" in ln]
    assert len(hits) == len(cold.steps), res.output
    assert all(f"{good}:latest" in ln for ln in hits), hits


def test_cache_ref_equal_to_the_image_ref_is_refused(build: Builder, small: Path, reg: str) -> None:
    res = build(
        small, "--push", "-t", f"{reg}/app:v1", "--cache-to", f"type=registry,ref={reg}/app:v1"
    )
    assert res.returncode == 2, res.output
    assert f"{reg}/app:v1" in res.output


# ---------------------------------------------------------------------------- cheap export across repositories


_DIGEST_PARAM = re.compile(r"[?&]digest=(sha256(?::|%3A)[0-9a-f]{64})")
_MOUNT_PARAM = re.compile(r"[?&]mount=(sha256(?::|%3A)[0-9a-f]{64})")
_REPO_OF_UPLOAD = re.compile(r"^/v2/(?P<repo>.+)/blobs/uploads/")


@dataclass(frozen=True)
class Transfers:
    """Per blob, the repositories it was uploaded to (a completing PUT with ``digest=``; the
    bytes went over the wire) and mounted into (a mount POST the registry answered 201)."""

    uploaded: dict[str, list[str]]
    mounted: dict[str, list[str]]

    @staticmethod
    def since(log: AccessLog) -> Transfers:
        uploaded: dict[str, list[str]] = {}
        mounted: dict[str, list[str]] = {}
        for method, path, status in log.requests():
            repo = _REPO_OF_UPLOAD.match(path)
            if repo is None or status >= 400:
                continue
            if method == "PUT" and (m := _DIGEST_PARAM.search(path)):
                uploaded.setdefault(m[1].replace("%3A", ":"), []).append(repo["repo"])
            elif method == "POST" and status == 201 and (m := _MOUNT_PARAM.search(path)):
                mounted.setdefault(m[1].replace("%3A", ":"), []).append(repo["repo"])
        return Transfers(uploaded, mounted)

    def upload_count(self, digests: set[str]) -> int:
        return sum(len(self.uploaded.get(d, ())) for d in digests)


def _layers_of(ref: str) -> set[str]:
    doc, _ = skopeo_raw(ref)
    return {str(d["digest"]) for d in doc["layers"]}  # type: ignore[attr-defined]


def _config_digest(ref: str) -> str:
    doc, _ = skopeo_raw(ref)
    return str(doc["config"]["digest"])  # type: ignore[index]


def test_a_layer_the_image_push_and_the_cache_export_both_need_is_uploaded_once(
    build: Builder, small: Path, reg: str, registry: RegistryServer, busybox_image: str
) -> None:
    """One push of each layer per registry: the image push and the cache export run side by
    side, and whichever puts a fresh layer second mounts it from where the first uploaded it
    (the base layers from the base repository) instead of sending it again."""
    log = AccessLog(registry)
    build(
        small,
        "--push",
        "-t",
        f"{reg}/app",
        "--cache-to",
        f"type=registry,ref={reg}/app-cache,mode=max",
    ).check()
    moved = Transfers.since(log)
    base = base_layers(busybox_image)
    made = _layers_of(f"{reg}/app") - base
    cached = {str(d["digest"]) for d in cache_doc(f"{reg}/app-cache").layers}
    assert made and made <= cached
    app, cache = f"{reg}/app".split("/", 1)[1], f"{reg}/app-cache".split("/", 1)[1]
    for digest in made:
        uploads = moved.uploaded.get(digest, [])
        assert len(uploads) == 1 and uploads[0] in (app, cache), f"{digest} uploaded to {uploads}"
        first = uploads[0]
        other = cache if first == app else app
        assert moved.mounted.get(digest) == [other], (
            f"{digest} uploaded to {first}, mounted into {moved.mounted.get(digest)}"
        )
    for digest in base:
        assert digest not in moved.uploaded, (
            f"base layer {digest} uploaded to {moved.uploaded[digest]}"
        )
        assert sorted(moved.mounted.get(digest, ())) == sorted([app, cache])


def test_image_push_mounts_fresh_layers_the_cache_export_pushed_first(
    build: Builder,
    small: Path,
    reg: str,
    registry: RegistryServer,
    busybox_image: str,
    tmp_path: Path,
) -> None:
    """The other order: the layers reach the cache repository first (a build exporting only
    its cache), then an image push from the same root mounts them from there."""
    root = build.root()
    build(small, "--cache-to", f"type=registry,ref={reg}/cache-first,mode=max", root=root).check()
    log = AccessLog(registry)
    again = build(small, "--push", "-t", f"{reg}/app", root=root).check()
    assert again.cached == set(again.steps)
    moved = Transfers.since(log)
    made = _layers_of(f"{reg}/app") - base_layers(busybox_image)
    cache = f"{reg}/cache-first".split("/", 1)[1]
    assert made and made <= {str(d["digest"]) for d in cache_doc(f"{reg}/cache-first").layers}
    assert moved.upload_count(made) == 0, f"layers uploaded again: {moved.uploaded}"
    app = f"{reg}/app".split("/", 1)[1]
    for digest in made:
        assert moved.mounted.get(digest) == [app], (digest, cache, moved.mounted)


def test_a_declined_mount_uploads_in_the_session_the_registry_opened(
    build: Builder, small: Path, reg: str, registry: RegistryServer, busybox_image: str
) -> None:
    """A location mason remembers but the registry no longer backs: the mount POST gets an
    upload session (202) and the layer is uploaded in it -- no cancelled session, no second POST."""
    from mason.engine.blobs import Blobs
    from mason.engine.state import StateRoot
    from mason.oci.reference import Reference

    root = build.root()
    build(small, root=root).check()  # layers made locally, nothing pushed
    base = base_layers(busybox_image)
    with StateRoot.open(root) as st:
        blobs = Blobs(st)
        made = [
            info
            for info, _ in st.meta.blobs()
            if "layer" in info.media_type and info.digest not in base
        ]
        for info in made:
            blobs.note_stored(
                info.digest, Reference.parse(f"{reg}/nowhere"), info.media_type, info.size
            )
    assert made
    log = AccessLog(registry)
    build(small, "--push", "-t", f"{reg}/app", root=root).check()
    requests = log.requests()
    app = f"{reg}/app".split("/", 1)[1]
    for info in made:
        mounts = [
            (p, s)
            for m, p, s in requests
            if m == "POST" and f"mount={info.digest}" in p.replace("%3A", ":")
        ]
        assert [s for _, s in mounts] == [202], mounts
    assert Transfers.since(log).upload_count({i.digest for i in made}) == len(made)
    assert not [r for r in requests if r[0] == "DELETE"], "a declined mount's session was cancelled"
    plain_posts = [
        p
        for m, p, _ in requests
        if m == "POST" and "mount=" not in p and p.startswith(f"/v2/{app}/")
    ]
    assert len(plain_posts) == 1, plain_posts  # the image config only


def test_the_config_uploads_take_the_sessions_opened_ahead_and_none_is_left(
    build: Builder, small: Path, reg: str, registry: RegistryServer
) -> None:
    """A mode=max export keeps one upload session open in the cache's repository while the
    build goes on (``RegistryClient.keep_upload_ahead``), and the push of a new image opens one
    in its repository when the export begins (``exporters.open_pushes_ahead``), so that
    neither config waits for a POST: every session opened is used by one upload, and the
    real registry holds no upload left open."""
    log = AccessLog(registry)
    cache_to = f"type=registry,ref={reg}/ahead-cache,mode=max"
    build(small, "--cache-to", cache_to, "--push", "-t", f"{reg}/ahead-app").check()
    for name, config in (
        ("ahead-cache", str(cache_doc(f"{reg}/ahead-cache").config["digest"])),
        ("ahead-app", _config_digest(f"{reg}/ahead-app")),
    ):
        repo = f"{reg}/{name}".split("/", 1)[1]
        paths = [(m, p) for m, p, _ in log.requests() if p.startswith(f"/v2/{repo}/blobs/uploads")]
        opened = [p for m, p in paths if m == "POST" and "mount=" not in p]
        finished = [p.replace("%3A", ":") for m, p in paths if m == "PUT"]
        assert any(config in p for p in finished), (name, finished)
        assert len(opened) == len(finished), (name, paths)
        assert not [m for m, _ in paths if m == "DELETE"], (name, paths)
        uploads = registry.storage_dir / "docker/registry/v2/repositories" / repo / "_uploads"
        assert not uploads.exists() or not any(uploads.iterdir()), name
