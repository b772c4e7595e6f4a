"""`mason build` end to end: real runc, real overlayfs, real registry, skopeo, umoci.

The builds here are small on purpose (busybox base, a handful of steps) so the
module runs in seconds; each test says which invariant of the builder it holds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from tests.support.cli import mason, mason_build, mason_cmd, mason_env
from tests.support.registry_server import RegistryServer, count_blob_gets

from mason.cache.options import parse_cache_from, parse_cache_to
from mason.engine.builder import build
from mason.engine.options import BuildOptions, parse_output
from mason.progress import RecordingSink

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (overlayfs, runc)")


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (bash scripts/setup.sh installs it)")


def _build(root: Path, context: Path, **kw: Any) -> tuple[Any, RecordingSink]:
    sink = RecordingSink()
    outcome = build(BuildOptions(context=context, **kw), root=root, progress=sink)
    return outcome, sink


def _step_states(sink: RecordingSink) -> dict[str, str]:
    """name -> final status of every Dockerfile step ([stage i/n] ...)."""
    states: dict[str, str] = {}
    for e in sink.events:
        if (
            e.name.startswith("[")
            and not e.name.startswith("[internal]")
            and e.status in ("cached", "done", "error")
        ):
            states[e.name] = e.status
    return states


def _unpack(registry: RegistryServer, ref: str, dest: Path) -> Path:
    """skopeo copy to an OCI layout, then umoci unpack: returns the bundle (rootfs/ + config.json)."""
    layout = dest / "oci"
    subprocess.run(
        ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:img"],
        check=True,
        capture_output=True,
    )
    bundle = dest / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:img", str(bundle)],
        check=True,
        capture_output=True,
    )
    return bundle


def _runc_run(bundle: Path) -> str:
    """Run the unpacked image's configured process (its CMD) with runc; return its output."""
    cfg_path = bundle / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["process"]["terminal"] = False
    cfg_path.write_text(json.dumps(cfg))
    name = f"mason-test-{os.getpid()}-{time.monotonic_ns()}"
    proc = subprocess.run(
        ["runc", "--root", "/run/mason/test-runc", "run", "--bundle", str(bundle), name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    subprocess.run(
        ["runc", "--root", "/run/mason/test-runc", "delete", "--force", name], capture_output=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def example_build(
    registry: RegistryServer, busybox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The examples/ app built once, cold, with a mode=max registry cache; shared by several tests."""
    _need("runc")
    root = tmp_path_factory.mktemp("root")
    ref = f"{registry.host}/it/example:latest"
    cache = f"{registry.host}/it/example-cache"
    opts: dict[str, Any] = {
        "build_args": {"BASE": busybox_image},
        "tags": (ref,),
        "push": True,
        "cache_to": tuple(parse_cache_to(f"type=registry,ref={cache},mode=max")),
        "cache_from": tuple(parse_cache_from(cache)),
    }
    outcome, sink = _build(root, EXAMPLES, **opts)
    return {
        "root": root,
        "ref": ref,
        "cache": cache,
        "opts": opts,
        "outcome": outcome,
        "sink": sink,
    }


def test_example_pushed_image_inspects_unpacks_and_runs(
    example_build: dict[str, Any], registry: RegistryServer, tmp_path: Path
) -> None:
    """The pushed example passes skopeo inspect, unpacks with umoci, holds what the Dockerfile says
    and prints its CMD output under runc."""
    _need("skopeo")
    _need("umoci")
    ref = example_build["ref"]
    info = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert info["Digest"] == example_build["outcome"].image_digest
    assert "APP_MODE=demo" in info["Env"]
    raw = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    config = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--config", "--tls-verify=false", f"docker://{ref}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert config["config"]["Cmd"] == ["/usr/local/bin/run-app"]
    assert config["config"]["WorkingDir"] == "/app"
    assert config["config"]["User"] == "app"
    layer_steps = [h for h in config["history"] if not h.get("empty_layer")]
    assert len(layer_steps) == len(config["rootfs"]["diff_ids"])
    assert any(
        h["created_by"] == 'CMD ["/usr/local/bin/run-app"]' and h["empty_layer"]
        for h in config["history"]
    )
    bundle = _unpack(registry, ref, tmp_path)
    rootfs = bundle / "rootfs"
    assert (
        rootfs / "app" / "message.txt"
    ).read_text() == "Hello from mason!\nbuilt without a daemon\n"
    assert os.readlink(rootfs / "app" / "latest.txt") == "message.txt"
    assert sorted(p.name for p in (rootfs / "app").glob("gen_*.txt")) == [
        f"gen_{i}.txt" for i in range(5)
    ]
    run_app = rootfs / "usr" / "local" / "bin" / "run-app"
    assert stat.S_IMODE(run_app.stat().st_mode) == 0o755
    assert (run_app.stat().st_uid, run_app.stat().st_gid) == (0, 0)
    assert not (rootfs / "src").exists()  # the build stage's sources stay in the build stage
    out = _runc_run(bundle)
    assert "Hello from mason!" in out and "mode: demo" in out


def test_second_build_on_same_root_is_all_cached_with_same_digest(
    example_build: dict[str, Any],
) -> None:
    """Building the same inputs again on the same $MASON_ROOT runs nothing and gives the same digest."""
    outcome, sink = _build(example_build["root"], EXAMPLES, **example_build["opts"])
    states = _step_states(sink)
    assert states and all(s == "cached" for s in states.values()), states
    assert outcome.image_digest == example_build["outcome"].image_digest


def test_registry_cache_after_wipe_hits_everything_without_downloading_layers(
    example_build: dict[str, Any], registry: RegistryServer, tmp_path: Path
) -> None:
    """Export -> wipe -> import: every step CACHED from the registry, same digest, no layer GETs."""
    before = count_blob_gets(registry)
    outcome, sink = _build(tmp_path / "fresh-root", EXAMPLES, **example_build["opts"])
    states = _step_states(sink)
    assert states and all(s == "cached" for s in states.values()), states
    assert any("cache hit from registry" in e.text for e in sink.events)
    assert outcome.image_digest == example_build["outcome"].image_digest
    assert outcome.downloaded_blobs == []
    # only documents: the base image config and the cache config
    assert count_blob_gets(registry) - before <= 2


def test_changed_context_file_reruns_only_dependent_steps(
    example_build: dict[str, Any], tmp_path: Path
) -> None:
    """Changing one file reruns the COPY of it and what follows; earlier steps stay CACHED."""
    ctx = tmp_path / "ctx"
    shutil.copytree(EXAMPLES, ctx)
    (ctx / "app" / "names.txt").write_text("a changed line\n")
    opts = dict(example_build["opts"], tags=(), push=False, cache_to=())
    _outcome, sink = _build(example_build["root"], ctx, **opts)
    states = _step_states(sink)
    assert states["[build 2/5] WORKDIR /src"] == "cached"
    assert states["[build 3/5] COPY app/ ./"] == "done"
    assert (
        states["[build 4/5] RUN mkdir -p /out && cat greeting.txt names.txt > /out/message.txt"]
        == "done"
    )


FS_DOCKERFILE = """\
ARG BASE
FROM ${BASE} AS files
RUN mkdir -p /data/sub && echo one > /data/one && echo two > /data/sub/two \\
 && ln -s one /data/link && mkdir /links && echo l > /links/a && ln /links/a /links/b && echo gone > /data/gone && mkdir /data/gonedir \\
 && echo x > /data/gonedir/x
RUN rm /data/gone && rm -r /data/gonedir && chmod 0640 /data/one && chown 12:34 /data/sub/two
COPY --chown=1000:1000 ctx/ /copied/
COPY <<EOF /etc/heredoc.txt
hello $GREETING
EOF
ADD archive.tar /extracted/
ENV GREETING=hi
RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /secret-len
RUN --mount=type=cache,target=/cache echo cached > /cache/x && ls /cache > /cache-listing

FROM scratch
COPY --from=files / /
"""


@pytest.fixture(scope="module")
def fs_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ctx = tmp_path_factory.mktemp("fsctx")
    (ctx / "Dockerfile").write_text(FS_DOCKERFILE)
    (ctx / "ctx").mkdir()
    (ctx / "ctx" / "a.txt").write_text("a\n")
    os.chmod(ctx / "ctx" / "a.txt", 0o600)
    (ctx / "ctx" / "ignored.log").write_text("no\n")
    (ctx / ".dockerignore").write_text("ctx/*.log\n")
    payload = ctx / "payload.txt"
    payload.write_text("from the archive\n")
    with tarfile.open(ctx / "archive.tar", "w") as tf:
        tf.add(payload, arcname="inside/payload.txt")
    payload.unlink()
    (ctx / "token.txt").write_text("s3cret-value")
    return ctx


def test_filesystem_matches_the_dockerfile(
    registry: RegistryServer, busybox_image: str, fs_context: Path, tmp_path: Path
) -> None:
    """Deletions are whiteouts, modes/owners/symlinks/hardlinks survive, .dockerignore applies,
    ADD extracts a local tar, secrets never land in a layer."""
    _need("runc")
    _need("umoci")
    from mason.engine.options import SecretSpec

    ref = f"{registry.host}/it/fs:latest"
    outcome, _ = _build(
        tmp_path / "root",
        fs_context,
        build_args={"BASE": busybox_image},
        tags=(ref,),
        push=True,
        secrets=(SecretSpec("token", fs_context / "token.txt"),),
    )
    bundle = _unpack(registry, ref, tmp_path)
    r = bundle / "rootfs"
    assert (r / "data" / "one").read_text() == "one\n"
    assert stat.S_IMODE((r / "data" / "one").stat().st_mode) == 0o640
    assert os.readlink(r / "data" / "link") == "one"
    assert (r / "links" / "b").stat().st_ino == (r / "links" / "a").stat().st_ino
    assert (
        (r / "data" / "sub" / "two").stat().st_uid,
        (r / "data" / "sub" / "two").stat().st_gid,
    ) == (12, 34)
    assert not (r / "data" / "gone").exists() and not (r / "data" / "gonedir").exists()
    a = r / "copied" / "a.txt"
    assert (a.stat().st_uid, a.stat().st_gid, stat.S_IMODE(a.stat().st_mode)) == (1000, 1000, 0o600)
    assert not (r / "copied" / "ignored.log").exists()
    assert (r / "etc" / "heredoc.txt").read_text() == "hello \n"
    assert (r / "extracted" / "inside" / "payload.txt").read_text() == "from the archive\n"
    assert (r / "secret-len").read_text().strip() == "12"
    assert not (r / "run" / "secrets").exists() or not any((r / "run" / "secrets").iterdir())
    assert (r / "cache-listing").read_text() == "x\n"
    assert not (r / "cache").exists() or not any((r / "cache").iterdir())
    # the secret's bytes are in no blob of the local store
    for blob in (tmp_path / "root" / "blobs" / "sha256").iterdir():
        import gzip

        data = blob.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        assert b"s3cret-value" not in data
    # the stage-1 image (FROM scratch + COPY /) has one layer
    assert outcome.exported is not None and len(outcome.exported.layers) == 1


def test_whiteouts_are_in_the_layer_tar(
    registry: RegistryServer, busybox_image: str, tmp_path: Path
) -> None:
    """A RUN that deletes base files makes a layer with .wh. entries (checked in the OCI tar output)."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\nRUN rm /etc/group && rm -r /root || true\n"
    )
    out = tmp_path / "image.tar"
    _build(tmp_path / "root", ctx, outputs=(parse_output(f"type=oci,dest={out}"),))
    with tarfile.open(out) as tf:
        index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
        manifest_path = "blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(tf.extractfile(manifest_path))  # type: ignore[arg-type]
        top = manifest["layers"][-1]["digest"].split(":")[1]
        layer = tf.extractfile(f"blobs/sha256/{top}")
        assert layer is not None
        with tarfile.open(fileobj=layer, mode="r:gz") as lt:
            names = lt.getnames()
    assert "etc/.wh.group" in names


def test_source_date_epoch_gives_the_same_digest_on_two_empty_roots(
    busybox_image: str, tmp_path: Path
) -> None:
    """With SOURCE_DATE_EPOCH and rewrite-timestamp=true, two builds on two empty roots give
    byte-identical images. Without rewrite-timestamp, as BuildKit v0.32.2, the epoch dates the
    image and its history only: the files a RUN made keep the time they were made at."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f'FROM {busybox_image}\nCOPY f /f\nRUN echo hi > /g && mkdir -p /d\nCMD ["cat", "/g"]\n'
    )
    (ctx / "f").write_text("f\n")
    digests = []
    for i in range(2):
        out = tmp_path / f"img{i}.tar"
        plain = tmp_path / f"plain{i}"
        outcome, _ = _build(
            tmp_path / f"root{i}",
            ctx,
            source_date_epoch=1700000000,
            outputs=(
                parse_output(f"type=oci,dest={out},rewrite-timestamp=true"),
                parse_output(f"type=oci,dest={plain},tar=false"),
            ),
        )
        digests.append(outcome.image_digest)
        times = _layer_mtimes(out)
        assert times["g"] == 1700000000 and times["d"] == 1700000000, times
        assert _layer_mtimes(plain)["g"] > 1700000000, "clamped without rewrite-timestamp"
        time.sleep(1.1)  # a different wall clock second for the second build
    assert digests[0] == digests[1]


def _layer_mtimes(layout: Path) -> dict[str, int]:
    """name -> mtime of every entry in the image's layers (an OCI tar or directory)."""
    import gzip
    import io

    files: dict[str, bytes] = {}
    if not layout.is_dir():
        with tarfile.open(layout) as tf:
            files = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}  # type: ignore[union-attr]

    def read(rel: str) -> bytes:
        return (layout / rel).read_bytes() if layout.is_dir() else files[rel]

    index = json.loads(read("index.json"))
    manifest = json.loads(read("blobs/sha256/" + index["manifests"][0]["digest"][7:]))
    times: dict[str, int] = {}
    for layer in manifest["layers"]:
        data = gzip.decompress(read("blobs/sha256/" + layer["digest"][7:]))
        with tarfile.open(fileobj=io.BytesIO(data)) as lt:
            times.update({m.name.strip("./"): int(m.mtime) for m in lt.getmembers()})
    return times


def test_outputs_local_tar_and_docker(busybox_image: str, tmp_path: Path) -> None:
    """type=local writes the filesystem, type=tar a tar of it, type=docker a docker-load tar."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo content > /made-by-run\n")
    local, tar_out, docker_out = tmp_path / "local", tmp_path / "fs.tar", tmp_path / "docker.tar"
    _build(
        tmp_path / "root",
        ctx,
        tags=("example.test/out:1",),
        outputs=(
            parse_output(f"type=local,dest={local}"),
            parse_output(f"type=tar,dest={tar_out}"),
            parse_output(f"type=docker,dest={docker_out}"),
        ),
    )
    assert (local / "made-by-run").read_text() == "content\n"
    assert (local / "bin" / "busybox").exists()
    with tarfile.open(tar_out) as tf:
        assert "made-by-run" in tf.getnames()
    with tarfile.open(docker_out) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest[0]["RepoTags"] == ["example.test/out:1"]
        assert len(manifest[0]["Layers"]) == 2
    # what `docker load` reads, read by an independent implementation: skopeo's docker-archive
    # transport verifies the config and layers and copies them out as an OCI layout
    inspected = subprocess.run(
        ["skopeo", "inspect", f"docker-archive:{docker_out}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(json.loads(inspected.stdout)["Layers"]) == 2
    subprocess.run(
        ["skopeo", "copy", f"docker-archive:{docker_out}", f"oci:{tmp_path / 'from-docker'}:x"],
        capture_output=True,
        check=True,
    )
    subprocess.run(
        ["umoci", "unpack", "--image", f"{tmp_path / 'from-docker'}:x", str(tmp_path / "bundle")],
        capture_output=True,
        check=True,
    )
    assert (tmp_path / "bundle" / "rootfs" / "made-by-run").read_text() == "content\n"


def test_cli_exit_codes_and_failure_context(busybox_image: str, tmp_path: Path) -> None:
    """A failing RUN exits 1 and shows its last output and Dockerfile line; a Dockerfile error exits 2."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\nRUN echo first-line && echo last-line && exit 7\n"
    )
    proc = mason_build(tmp_path / "root", str(ctx), timeout=120)
    assert proc.returncode == 1
    assert "last-line" in proc.stderr and "exit code 7" in proc.stderr
    assert "Dockerfile:2" in proc.stderr
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nRUNN x\n")
    proc = mason_build(tmp_path / "root", str(ctx), timeout=120)
    assert proc.returncode == 2
    assert "unknown instruction" in proc.stderr


def test_quiet_prints_digest_and_metadata_file(busybox_image: str, tmp_path: Path) -> None:
    """--progress=quiet prints only the image digest; --metadata-file has buildx's keys."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nENV A=1\n")
    meta = tmp_path / "meta.json"
    proc = mason(
        tmp_path / "root",
        "build",
        "-q",
        "--metadata-file",
        str(meta),
        "-o",
        f"type=oci,dest={tmp_path / 'o.tar'}",
        str(ctx),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(meta.read_text())
    assert proc.stdout.strip() == data["containerimage.digest"]
    assert data["containerimage.descriptor"]["digest"] == data["containerimage.digest"]


def test_sigkill_mid_step_then_rebuild_works(busybox_image: str, tmp_path: Path) -> None:
    """A build killed with SIGKILL inside a RUN leaves $MASON_ROOT usable: the rebuild succeeds."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\nRUN echo started && sleep 30 && echo x > /x\n"
    )
    root = tmp_path / "root"
    env = mason_env(root)
    proc = subprocess.Popen(
        [*mason_cmd(), "build", "--progress=plain", str(ctx)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if "started" in line or time.monotonic() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo started && echo x > /x\n")
    done = mason_build(root, "-o", f"type=local,dest={tmp_path / 'out'}", str(ctx), timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "x").read_text() == "x\n"
    assert not [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if str(root) in m]


def test_image_output_compression_and_docker_media_types(
    registry: RegistryServer, busybox_image: str, tmp_path: Path
) -> None:
    """compression=zstd gives zstd layers; oci-mediatypes=false gives a Docker manifest and config."""
    _need("skopeo")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo z > /z\n")
    zref = f"{registry.host}/it/zstd:1"
    dref = f"{registry.host}/it/docker:1"
    _build(
        tmp_path / "root",
        ctx,
        outputs=(
            parse_output(
                f"type=image,name={zref},push=true,compression=zstd,force-compression=true"
            ),
            parse_output(f"type=image,name={dref},push=true,oci-mediatypes=false"),
        ),
    )
    z = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{zref}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert {layer["mediaType"] for layer in z["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    }
    d = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{dref}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert d["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert d["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    assert {layer["mediaType"] for layer in d["layers"]} == {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    }


def test_two_processes_share_one_root(busybox_image: str, tmp_path: Path) -> None:
    """Two mason builds at once on the same $MASON_ROOT both succeed; a third build is all cached."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\nRUN sleep 1 && echo a > /a\nRUN echo b > /b\n"
    )
    root = tmp_path / "root"
    env = mason_env(root)
    procs = [
        subprocess.Popen(
            [*mason_cmd(), "build", "--progress=plain", str(ctx)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    third = mason_build(root, str(ctx), timeout=120)
    assert third.returncode == 0
    assert third.stderr.count("CACHED") == 3
