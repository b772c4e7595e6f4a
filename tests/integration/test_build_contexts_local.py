"""``--build-context NAME=DIR`` and ``NAME=oci-layout://DIR[:TAG][@DIGEST]`` through the CLI,
against the real registry, runc and skopeo (which writes the OCI layouts). Evidence is what
lands in the image (``-o type=local``, ``type=oci``, the registry) and the ``--progress=plain``
lines (``#N CACHED``)."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from tests.support.cachebuild import Builder, skopeo_raw
from tests.support.cli import mason_build

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (overlayfs, runc)")


def _tree(path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A directory context: two files, one kept out by its own .dockerignore, and a
    Dockerfile.dockerignore that BuildKit never reads for a named context."""
    return _tree(
        tmp_path / "src",
        {
            "a.txt": "A\n",
            "sub/b.txt": "B\n",
            "secret.txt": "do not ship\n",
            "other.txt": "other\n",
            ".dockerignore": "secret.txt\n",
            "Dockerfile.dockerignore": "a.txt\n",
        },
    )


DIR_DOCKERFILE = (
    "ARG BASE\n"
    "FROM scratch AS gen\n"
    "COPY Dockerfile /from-gen-stage\n"
    "FROM $BASE\n"
    "COPY --from=src /a.txt /got-a\n"
    "COPY --from=src sub /got-sub/\n"
    "COPY --from=gen / /gen/\n"
    "RUN --mount=from=src,target=/s cat /s/a.txt > /seen && "
    "(test -e /s/secret.txt && echo yes || echo no) > /secret-seen\n"
)


def test_directory_context_for_copy_from_mount_and_a_stage(
    build: Builder, src: Path, tmp_path: Path
) -> None:
    ctx = _tree(tmp_path / "ctx", {"Dockerfile": DIR_DOCKERFILE})
    out = tmp_path / "out"
    b = build(
        ctx,
        "--build-context",
        f"src={src}",
        "--build-context",
        f"gen={src}",
        "-o",
        f"type=local,dest={out}",
    ).check()
    assert (out / "got-a").read_text() == "A\n"
    assert (out / "got-sub" / "b.txt").read_text() == "B\n"
    # the stage gen is the directory: its COPY never ran, its own .dockerignore applied
    assert (out / "gen" / "a.txt").read_text() == "A\n"
    assert not (out / "gen" / "secret.txt").exists()
    assert not (out / "gen" / "from-gen-stage").exists()
    assert (out / "seen").read_text() == "A\n"
    assert (out / "secret-seen").read_text() == "no\n", "the mount shows what .dockerignore keeps"
    assert os.stat(out / "got-a").st_uid == 0
    assert "[context gen] load .dockerignore" in b.output, b.output


def test_directory_context_keys_on_what_is_copied(
    build: Builder, src: Path, tmp_path: Path
) -> None:
    ctx = _tree(
        tmp_path / "ctx", {"Dockerfile": "ARG BASE\nFROM $BASE\nCOPY --from=src /a.txt /a\n"}
    )
    root = build.root()
    args = ("--build-context", f"src={src}", "-o", f"type=local,dest={tmp_path / 'o'}")
    build(ctx, *args, root=root).check()
    (src / "other.txt").write_text("changed, but not copied\n")
    (src / "secret.txt").write_text("ignored by .dockerignore\n")
    again = build(ctx, *args, root=root).check()
    copy = next(t for t in again.steps if "COPY --from=src" in t)
    assert again.steps[copy] == "CACHED", again.output
    (src / "a.txt").write_text("A2\n")
    third = build(ctx, *args, root=root).check()
    assert third.steps[copy] != "CACHED", third.output
    assert (tmp_path / "o" / "a").read_text() == "A2\n"


def test_from_a_directory_context_is_a_layer_with_an_empty_config(
    build: Builder, src: Path, tmp_path: Path
) -> None:
    ctx = _tree(tmp_path / "ctx", {"Dockerfile": "FROM rootfs\nCOPY Dockerfile /df\n"})
    oci = tmp_path / "image.tar"
    build(ctx, "--build-context", f"rootfs={src}", "-o", f"type=oci,dest={oci}").check()
    with tarfile.open(oci) as tf:

        def blob(digest: str) -> bytes:
            f = tf.extractfile("blobs/sha256/" + digest.split(":")[1])
            assert f is not None
            return f.read()

        index = json.loads(tf.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        with tarfile.open(
            fileobj=io.BytesIO(gzip.decompress(blob(manifest["layers"][0]["digest"])))
        ) as layer:
            names = {m.name.lstrip("./"): m for m in layer.getmembers()}
    assert len(manifest["layers"]) == 2
    assert {"a.txt", "sub/b.txt", "other.txt"} <= set(names), names
    assert "secret.txt" not in names
    assert names["a.txt"].uid == 0 and names["a.txt"].gid == 0
    # dockerui's emptyImage: nothing but the default PATH
    assert config["config"]["Env"] == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ]
    assert config["history"][0]["created_by"] == "local source for rootfs"


def test_directory_context_paths_stay_inside_it(build: Builder, tmp_path: Path) -> None:
    outside = _tree(tmp_path / "outside", {"hostfile": "host secret\n"})
    src = _tree(tmp_path / "src", {"ok.txt": "ok\n"})
    (src / "link").symlink_to(outside)  # an absolute link: resolved inside src, not on the host
    (src / ".dockerignore").unlink(missing_ok=True)
    ctx = _tree(
        tmp_path / "ctx",
        {"Dockerfile": "FROM scratch\nCOPY --from=src link/hostname /x\n"},
    )
    proc = mason_build(
        build.root(),
        "--build-context",
        f"src={src}",
        "-o",
        f"type=local,dest={tmp_path / 'out'}",
        str(ctx),
    )
    assert proc.returncode == 1, proc.stderr
    assert "not found" in proc.stderr and "named context src" in proc.stderr, proc.stderr
    ctx2 = _tree(
        tmp_path / "ctx2", {"Dockerfile": "FROM scratch\nCOPY --from=src ../outside/hostfile /x\n"}
    )
    proc = mason_build(
        build.root(),
        "--build-context",
        f"src={src}",
        "-o",
        f"type=local,dest={tmp_path / 'o2'}",
        str(ctx2),
    )
    assert proc.returncode == 1, proc.stderr
    assert not (tmp_path / "o2" / "x").exists()


# -- oci-layout:// ------------------------------------------------------------------------


@pytest.fixture
def layout(build: Builder, reg: str, tmp_path: Path) -> tuple[Path, str]:
    """An OCI layout written by skopeo from an image mason pushed: busybox plus /marker,
    tagged v1 in index.json. Returns the layout and the manifest digest."""
    ctx = _tree(
        tmp_path / "marked",
        {
            "Dockerfile": "ARG BASE\nFROM $BASE\nCOPY marker /marker\n",
            "marker": "from the layout\n",
        },
    )
    ref = f"{reg}/marked:v1"
    build(ctx, "--push", "-t", ref).check()
    path = tmp_path / "layout"
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{path}:v1"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    index = json.loads((path / "index.json").read_text())
    return path, index["manifests"][0]["digest"]


def test_oci_layout_context_by_tag_and_by_digest_without_a_registry(
    build: Builder, layout: tuple[Path, str], reg: str, tmp_path: Path
) -> None:
    path, digest = layout
    # nobody serves "base" or "tools": only the layout can make this build
    ctx = _tree(
        tmp_path / "ctx",
        {"Dockerfile": "FROM base\nRUN cat /marker > /seen\nCOPY --from=tools /marker /copied\n"},
    )
    pushed = f"{reg}/out:1"
    b = build(
        ctx,
        "--build-context",
        f"base=oci-layout://{path}:v1",
        "--build-context",
        f"tools=oci-layout://{path}@{digest}",
        "--push",
        "-t",
        pushed,
    ).check()
    assert "[context base] load metadata for docker.io/library/base@" + digest in b.output, b.output
    out = tmp_path / "out"
    build(
        ctx,
        "--build-context",
        f"base=oci-layout://{path}",  # no tag: latest is not there, the only entry is taken
        "--build-context",
        f"tools=oci-layout://{path}:v1",
        "-o",
        f"type=local,dest={out}",
    ).check()
    assert (out / "seen").read_text() == "from the layout\n"
    assert (out / "copied").read_text() == "from the layout\n"
    # the pushed image holds the layout's layers, uploaded from the layout
    manifest, _ = skopeo_raw(pushed)
    layout_manifest = json.loads((path / "blobs" / "sha256" / digest.split(":")[1]).read_text())
    theirs = [layer["digest"] for layer in layout_manifest["layers"]]
    ours = [layer["digest"] for layer in manifest["layers"]]  # type: ignore[attr-defined]
    assert ours[: len(theirs)] == theirs


def test_oci_layout_unknown_tag_is_a_usage_error(layout: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = layout
    index = json.loads((path / "index.json").read_text())
    index["manifests"].append(
        dict(index["manifests"][0], annotations={"org.opencontainers.image.ref.name": "v2"})
    )
    (path / "index.json").write_text(json.dumps(index))
    ctx = _tree(tmp_path / "ctx", {"Dockerfile": "FROM base\n"})
    proc = mason_build(
        tmp_path / "root", "--build-context", f"base=oci-layout://{path}:v9", str(ctx)
    )
    assert proc.returncode == 2, proc.stderr
    assert "could not be resolved" in proc.stderr and "v1, v2" in proc.stderr, proc.stderr
