"""Issue 9, items 1-3: no Dockerfile, context or base image reaches the host through a path.

Every build runs through the CLI (``mason build``) next to a canary tree outside every mason
path. Each attack names the canary twice: by its absolute path (what a symlink or an image
config may hold) and by a run of ``..`` long enough to climb out of any root. Scoped
resolution (``mason.fsroot``) makes both mean "that path inside the root": the build reads
the in-root copy the stage made, or fails with a clear error, and the canary stays as it was.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.busybox import build_busybox_image
from tests.support.cli import mason_build
from tests.support.registry_server import RegistryServer

from mason.digest import sha256_bytes
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.manifest import build_manifest
from mason.oci.reference import Reference
from mason.registry.client import RegistryClient

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (overlayfs, runc)")

SECRET = "HOST-SECRET-must-never-be-read"
UP = "../" * 24


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    """A host directory no build may read or write; checked after every test."""
    host = tmp_path / "canary"
    (host / "dir").mkdir(parents=True)
    (host / "secret").write_text(SECRET)
    (host / "dir" / "secret").write_text(SECRET)
    with tarfile.open(host / "a.tar", "w") as tf:
        info = tarfile.TarInfo("from-host.txt")
        info.size = len(SECRET)
        tf.addfile(info, io.BytesIO(SECRET.encode()))
    before = _listing(host)
    yield host
    assert _listing(host) == before, "the canary tree outside every root was changed"


def _listing(root: Path) -> list[tuple[str, int, bytes]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = os.lstat(p)
            data = p.read_bytes() if p.is_file() and not p.is_symlink() else b""
            out.append((str(p.relative_to(root)), st.st_mode, data))
    return out


def _tree_text(root: Path) -> str:
    """Every regular file's bytes under ``root`` (an output), for "never contains the secret"."""
    parts = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                parts.append(p.read_bytes().decode(errors="replace"))
    return "\n".join(parts)


def _context(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


def _build(tmp_path: Path, ctx: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "out"
    proc = mason_build(tmp_path / "root", "-o", f"type=local,dest={out}", *extra, str(ctx))
    return proc, out


# -- 1: stage mounts ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["dotdot", "symlink"])
def test_bind_mount_from_stage_stays_in_the_stage(
    busybox_image: str, tmp_path: Path, canary: Path, how: str
) -> None:
    source = f"{UP}{canary}/dir" if how == "dotdot" else "/lnk"
    ctx = _context(
        tmp_path,
        f"""\
FROM {busybox_image} AS st
RUN mkdir -p {canary}/dir && echo in-stage > {canary}/dir/secret && ln -s {canary}/dir /lnk
FROM {busybox_image}
RUN --mount=type=bind,from=st,source={source},target=/mnt,rw \\
    cat /mnt/secret > /seen && echo written > /mnt/new && echo written > /mnt/secret
""",
    )
    proc, out = _build(tmp_path, ctx)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "seen").read_text() == "in-stage\n"
    assert SECRET not in _tree_text(out)


def test_cache_mount_from_stage_stays_in_the_stage(
    busybox_image: str, tmp_path: Path, canary: Path
) -> None:
    ctx = _context(
        tmp_path,
        f"""\
FROM {busybox_image} AS st
RUN mkdir -p {canary}/dir && echo in-stage > {canary}/dir/secret && ln -s {UP}{canary}/dir /lnk
FROM {busybox_image}
RUN --mount=type=cache,from=st,source=/lnk,target=/c \\
    cat /c/secret > /seen && echo written > /c/secret && rm -f /c/secret
""",
    )
    proc, out = _build(tmp_path, ctx)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "seen").read_text() == "in-stage\n"


def test_mount_source_missing_in_the_stage_is_a_clear_error(
    busybox_image: str, tmp_path: Path, canary: Path
) -> None:
    ctx = _context(
        tmp_path,
        f"""\
FROM {busybox_image} AS st
RUN ln -s {canary}/dir /lnk
FROM {busybox_image}
RUN --mount=type=bind,from=st,source=/lnk,target=/mnt,rw cat /mnt/secret
""",
    )
    proc, _out = _build(tmp_path, ctx)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "mount source '/lnk' does not exist in the stage" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


# -- 2: a base image's WorkingDir ----------------------------------------------------------


@pytest.fixture
def relative_workdir_image(registry: RegistryServer, tmp_path: Path, canary: Path) -> str:
    """busybox with ``WorkingDir: ../../…/<canary>/dir`` in its config (configs are untrusted)."""
    image = build_busybox_image(tmp_path / "img")
    config = json.loads(image.config_raw)
    config["config"]["WorkingDir"] = f"{UP}{canary}/dir"
    raw = json.dumps(config).encode()
    config_desc = Descriptor(mt.OCI_CONFIG, sha256_bytes(raw), len(raw))
    manifest = build_manifest(config_desc, [image.layer])
    name = f"{registry.host}/security/relative-workdir:latest"
    ref = Reference.parse(name)
    with RegistryClient() as client:
        client.push_blob(ref, image.layer, lambda: open(image.layer_path, "rb"))  # noqa: SIM115
        client.push_blob(ref, config_desc, lambda: io.BytesIO(raw))
        client.put_manifest(ref, manifest.raw, manifest.media_type)
    return name


@pytest.mark.parametrize("snapshotter", ["overlay", "copy"])
def test_relative_workdir_of_a_base_image_stays_in_the_rootfs(
    relative_workdir_image: str, tmp_path: Path, canary: Path, snapshotter: str
) -> None:
    ctx = _context(tmp_path, f"FROM {relative_workdir_image}\nCOPY f.txt name\nRUN pwd > /pwd\n")
    (ctx / "f.txt").write_text("copied\n")
    proc, out = _build(tmp_path, ctx, f"--snapshotter={snapshotter}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    inside = out / str(canary).lstrip("/") / "dir"
    assert (inside / "name").read_text() == "copied\n"
    assert (out / "pwd").read_text() == f"{canary}/dir\n"
    assert not (canary / "dir" / "name").exists()


# -- 3: wildcard sources -------------------------------------------------------------------


@pytest.mark.parametrize("link", ["absolute", "dotdot"])
def test_wildcard_copy_never_follows_a_context_symlink_out(
    busybox_image: str, tmp_path: Path, canary: Path, link: str
) -> None:
    ctx = _context(tmp_path, f"FROM {busybox_image}\nCOPY *.txt /out/\n")
    target = f"{canary}/secret" if link == "absolute" else f"{UP}{canary}/secret"
    os.symlink(target, ctx / "evil.txt")
    (ctx / "good.txt").write_text("good\n")
    proc, out = _build(tmp_path, ctx)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert '"/evil.txt": not found' in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr + (_tree_text(out) if out.exists() else "")


def test_wildcard_under_a_symlinked_directory(
    busybox_image: str, tmp_path: Path, canary: Path
) -> None:
    # sub resolves inside the context, where nothing is: the wildcard matches nothing, which
    # frontend 1.26 allows (allowEmptyWildcard), so the build succeeds and copies nothing
    ctx = _context(tmp_path, f"FROM {busybox_image}\nCOPY sub/* /out/\n")
    os.symlink(canary, ctx / "sub")
    proc, out = _build(tmp_path, ctx)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert SECRET not in proc.stdout + proc.stderr + _tree_text(out)
    assert not (out / "out").exists()


def test_wildcard_add_of_an_archive_symlink(
    busybox_image: str, tmp_path: Path, canary: Path
) -> None:
    ctx = _context(tmp_path, f"FROM {busybox_image}\nADD *.tar /out/\n")
    os.symlink(canary / "a.tar", ctx / "x.tar")
    proc, out = _build(tmp_path, ctx)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert '"/x.tar": not found' in proc.stderr
    assert not (out / "out" / "from-host.txt").exists()


def test_wildcard_copy_from_a_stage_symlink(
    busybox_image: str, tmp_path: Path, canary: Path
) -> None:
    ctx = _context(
        tmp_path,
        f"""\
FROM {busybox_image} AS st
RUN ln -s {canary}/secret /leak.txt && ln -s {UP}{canary}/secret /leak2.txt
FROM scratch
COPY --from=st /lea*.txt /out/
""",
    )
    proc, _out = _build(tmp_path, ctx)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert '"/leak.txt": not found' in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


def test_symlinks_inside_the_context_are_followed_inside_it(
    busybox_image: str, tmp_path: Path, canary: Path
) -> None:
    # the same rule, where it leads somewhere real: in-root targets are copied (BuildKit's rule)
    ctx = _context(tmp_path, f"FROM {busybox_image}\nCOPY *.txt /out/\nCOPY d*/* /dir/\n")
    (ctx / "real").mkdir()
    (ctx / "real" / "r.txt").write_text("real\n")
    os.symlink("real/r.txt", ctx / "link.txt")
    os.symlink(f"{UP}real", ctx / "dlink")  # ".." at the context's root stays there
    proc, out = _build(tmp_path, ctx)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "out" / "link.txt").read_text() == "real\n"
    assert (out / "dir" / "r.txt").read_text() == "real\n"


def test_heredoc_name_never_names_a_host_path(tmp_path: Path, canary: Path) -> None:
    name = f"{UP}{canary}/dir/heredoc.txt"
    ctx = _context(tmp_path, f"FROM scratch\nCOPY <<{name} /d/\nhello\n{name}\n")
    proc, out = _build(tmp_path, ctx)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "d" / "heredoc.txt").read_text() == "hello\n"


def test_rw_bind_of_the_context_never_writes_the_context(
    busybox_image: str, tmp_path: Path, canary: Path
) -> None:
    # rw gives the RUN a writable copy (BuildKit: a throwaway snapshot); the user's files stay
    ctx = _context(
        tmp_path,
        f"FROM {busybox_image}\nRUN --mount=type=bind,target=/ctx,rw "
        "echo changed > /ctx/file.txt && touch /ctx/new && cat /ctx/file.txt > /seen\n",
    )
    (ctx / "file.txt").write_text("orig\n")
    proc, out = _build(tmp_path, ctx)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "seen").read_text() == "changed\n"
    assert (ctx / "file.txt").read_text() == "orig\n"
    assert not (ctx / "new").exists()


def test_context_bind_mount_leaves_out_dockerignored_files(
    busybox_image: str, tmp_path: Path, canary: Path
) -> None:
    ctx = _context(
        tmp_path,
        f"FROM {busybox_image}\n"
        "RUN --mount=type=bind,target=/ctx ls -a /ctx > /seen && cat /ctx/app.txt >> /seen\n"
        "RUN --mount=type=bind,source=app.txt,target=/one.txt cat /one.txt > /one\n",
    )
    (ctx / ".dockerignore").write_text(".env\n")
    (ctx / ".env").write_text("TOKEN=not-for-the-build\n")
    (ctx / "app.txt").write_text("app\n")
    proc, out = _build(tmp_path, ctx)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = (out / "seen").read_text().split()
    assert "app.txt" in seen and "app" in seen and ".env" not in seen
    assert (out / "one").read_text() == "app\n"


def test_a_dockerignore_symlink_is_not_read_from_the_host(
    busybox_image: str, tmp_path: Path, canary: Path
) -> None:
    # .dockerignore -> a host file: read inside the context, where it does not exist
    host_file = tmp_path / "host-ignore"
    host_file.write_text("keep.txt\n")
    ctx = _context(tmp_path, f"FROM {busybox_image}\nCOPY keep.txt /keep.txt\n")
    (ctx / "keep.txt").write_text("kept\n")
    os.symlink(host_file, ctx / ".dockerignore")
    proc, out = _build(tmp_path, ctx)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "keep.txt").read_text() == "kept\n"
