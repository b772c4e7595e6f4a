"""Builds without overlayfs (``--snapshotter=copy``) and without runc (``--runtime=chroot``)
give the same filesystem as the overlay + runc build.

Each build writes an OCI layout that ``umoci unpack`` turns into a rootfs; the
rootfs trees are compared entry by entry (type, mode, owner, content or link
target, mtime of non-directories, xattrs, which names share an inode).
``SOURCE_DATE_EPOCH`` with ``rewrite-timestamp=true`` clamps the mtimes of what the builds
create, so two
builds at different times can be compared. The one documented difference in
layer *bytes* -- an emptied and refilled directory is opaque with overlay and
has per-child whiteouts with copy -- is asserted too.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from tests.support.cli import mason_build, mason_cmd, mason_env

from mason.engine.builder import build
from mason.engine.options import BuildOptions, parse_output
from mason.progress import RecordingSink

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
EPOCH = 1700000000

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (mounts, namespaces)")


def _need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (bash scripts/setup.sh installs it)")


def _build_unpacked(tmp: Path, context: Path, base: str, **kw: Any) -> tuple[Path, Path, Any]:
    """Build to an OCI layout dir and umoci-unpack it: (rootfs, layout, outcome)."""
    layout = tmp / "layout"
    opts = BuildOptions(
        context=context,
        build_args={"BASE": base},
        source_date_epoch=EPOCH,
        outputs=(parse_output(f"type=oci,dest={layout},tar=false,rewrite-timestamp=true"),),
        **kw,
    )
    outcome = build(opts, root=tmp / "root", progress=RecordingSink())
    bundle = tmp / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)],
        check=True,
        capture_output=True,
    )
    return bundle / "rootfs", layout, outcome


def _describe(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root``: what a filesystem comparison has to agree on."""
    inodes: dict[tuple[int, int], list[str]] = {}
    entries: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            mode = st.st_mode
            if stat.S_ISREG(mode):
                with open(path, "rb") as f:
                    data = f.read()
                if rel == "app/listing.txt":  # `ls -l` output: mask its clock-dependent dates
                    data = re.sub(rb"\w{3} +\d+ +[\d:]+ ", b"DATE ", data)
                body: object = hashlib.sha256(data).hexdigest()
                if st.st_nlink > 1:
                    inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif stat.S_ISLNK(mode):
                body = os.readlink(path)
            else:
                body = st.st_rdev
            xattrs = sorted(
                (k, os.getxattr(path, k, follow_symlinks=False))
                for k in os.listxattr(path, follow_symlinks=False)
            )
            mtime = None if stat.S_ISDIR(mode) else st.st_mtime_ns // 10**9
            entries[rel] = (
                stat.S_IFMT(mode),
                stat.S_IMODE(mode),
                st.st_uid,
                st.st_gid,
                body,
                mtime,
                tuple(xattrs),
            )
    for names in inodes.values():
        for n in names:
            entries[n] = (*entries[n], tuple(sorted(names)))
    return entries


def _assert_same_tree(expected: Path, actual: Path) -> None:
    want, got = _describe(expected), _describe(actual)
    assert sorted(set(want) ^ set(got)) == []
    differing = {k: (want[k], got[k]) for k in want if want[k] != got[k]}
    assert differing == {}


def _layer_names(layout: Path) -> list[list[str]]:
    """The entry names of each layer of the layout's image, lowest first."""
    index = json.loads((layout / "index.json").read_text())
    blob = layout / "blobs" / "sha256"
    manifest = json.loads((blob / index["manifests"][0]["digest"].split(":")[1]).read_bytes())
    result = []
    for desc in manifest["layers"]:
        data = (blob / desc["digest"].split(":")[1]).read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            result.append(tf.getnames())
    return result


# --- the examples/ app ---------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_example(busybox_image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/ built with overlayfs and runc, unpacked."""
    _need("runc", "umoci")
    rootfs, _, _ = _build_unpacked(
        tmp_path_factory.mktemp("ref"),
        EXAMPLES,
        busybox_image,
        snapshotter="overlay",
        runtime="runc",
    )
    return rootfs


def test_examples_with_copy_snapshots_equal_the_overlay_build(
    reference_example: Path, busybox_image: str, tmp_path: Path
) -> None:
    rootfs, _, outcome = _build_unpacked(
        tmp_path, EXAMPLES, busybox_image, snapshotter="copy", runtime="runc"
    )
    assert outcome.executed_steps > 0
    assert (
        rootfs / "app" / "message.txt"
    ).read_text() == "Hello from mason!\nbuilt without a daemon\n"
    _assert_same_tree(reference_example, rootfs)
    # Nothing was mounted for the copy build's snapshots: only full trees ("c...") exist.
    snaps = tmp_path / "root" / "snapshots"
    assert sorted({p.name[0] for p in snaps.iterdir() if not p.name.startswith(".")}) == ["c"]


def test_examples_with_the_chroot_runtime_equal_the_runc_build(
    reference_example: Path, busybox_image: str, tmp_path: Path
) -> None:
    _need("unshare")
    rootfs, _, outcome = _build_unpacked(
        tmp_path, EXAMPLES, busybox_image, snapshotter="overlay", runtime="chroot"
    )
    assert outcome.executed_steps > 0
    _assert_same_tree(reference_example, rootfs)


def test_examples_without_overlay_and_without_runc(
    reference_example: Path, busybox_image: str, tmp_path: Path
) -> None:
    """The machine with neither: copy snapshots and the chroot sandbox together."""
    _need("unshare")
    rootfs, _, _ = _build_unpacked(
        tmp_path, EXAMPLES, busybox_image, snapshotter="copy", runtime="chroot"
    )
    _assert_same_tree(reference_example, rootfs)


# --- filesystem semantics ------------------------------------------------------------

SEMANTICS = """\
ARG BASE
FROM ${BASE} AS other
RUN echo from-other > /o

FROM ${BASE}
RUN mkdir -p /d/sub /keep /gone-dir/deep && echo a > /d/a && echo b > /d/sub/b && echo k > /keep/k \\
 && echo x > /f2d && mkdir /d2f && echo y > /d2f/y && echo g > /gone-dir/deep/g && echo gone > /gone-file \\
 && echo z > /pair1 && ln /pair1 /pair2 && chmod 4755 /keep/k
RUN rm -rf /d && mkdir /d && echo new > /d/new \\
 && rm /f2d && mkdir /f2d && echo in > /f2d/in \\
 && rm -r /d2f && echo now-a-file > /d2f \\
 && rm -r /gone-dir && rm /gone-file && rm /keep/k \\
 && ln /bin/busybox /bin/linked-busybox && echo n > /n1 && ln /n1 /n2 && ln /n1 /keep/n3 \\
 && ln -s /d/new /sym-abs && ln -s ../d/new /keep/sym-rel && ln -s missing /dangling \\
 && chmod 0700 /keep && chown 5:6 /d/new && mkfifo /fifo
RUN --mount=type=bind,from=other,target=/mnt cat /mnt/o > /from-bind
RUN --mount=type=bind,from=other,target=/mnt,rw echo scribble > /mnt/o && cat /mnt/o > /rw-bind
COPY --from=other /o /copied-o
WORKDIR /work/dir
"""


@pytest.fixture(scope="module")
def semantics_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ctx = tmp_path_factory.mktemp("semantics")
    (ctx / "Dockerfile").write_text(SEMANTICS)
    return ctx


@pytest.fixture(scope="module")
def reference_semantics(
    busybox_image: str, semantics_context: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    _need("runc", "umoci")
    rootfs, layout, _ = _build_unpacked(
        tmp_path_factory.mktemp("ref-sem"),
        semantics_context,
        busybox_image,
        snapshotter="overlay",
        runtime="runc",
    )
    return rootfs, layout


def test_semantics_reference_build_holds_what_the_dockerfile_says(
    reference_semantics: tuple[Path, Path],
) -> None:
    r, _ = reference_semantics
    assert sorted(p.name for p in (r / "d").iterdir()) == ["new"]
    assert (r / "f2d" / "in").read_text() == "in\n" and (r / "d2f").read_text() == "now-a-file\n"
    assert (
        not (r / "gone-dir").exists()
        and not (r / "gone-file").exists()
        and not (r / "keep" / "k").exists()
    )
    assert (r / "n1").stat().st_ino == (r / "n2").stat().st_ino == (r / "keep" / "n3").stat().st_ino
    assert (r / "bin" / "busybox").stat().st_ino == (r / "bin" / "linked-busybox").stat().st_ino
    assert (
        os.readlink(r / "sym-abs") == "/d/new" and os.readlink(r / "keep" / "sym-rel") == "../d/new"
    )
    assert ((r / "d" / "new").stat().st_uid, (r / "d" / "new").stat().st_gid) == (5, 6)
    assert stat.S_ISFIFO((r / "fifo").lstat().st_mode)
    assert (r / "from-bind").read_text() == "from-other\n"
    assert (r / "rw-bind").read_text() == "scribble\n"
    assert (
        r / "copied-o"
    ).read_text() == "from-other\n"  # the rw bind mount did not change the stage
    assert (r / "work" / "dir").is_dir()


@pytest.mark.parametrize(("snapshotter", "runtime"), [("copy", "runc"), ("overlay", "chroot")])
def test_semantics_fallbacks_give_the_same_filesystem(
    reference_semantics: tuple[Path, Path],
    busybox_image: str,
    semantics_context: Path,
    tmp_path: Path,
    snapshotter: str,
    runtime: str,
) -> None:
    if runtime == "chroot":
        _need("unshare")
    rootfs, layout, _ = _build_unpacked(
        tmp_path, semantics_context, busybox_image, snapshotter=snapshotter, runtime=runtime
    )
    _assert_same_tree(reference_semantics[0], rootfs)
    ref_layers = _layer_names(reference_semantics[1])
    layers = _layer_names(layout)
    replace = layers[2]  # the RUN that empties and refills /d
    if snapshotter == "copy":
        # Documented difference: per-child whiteouts where overlay marks the directory opaque.
        assert "d/.wh..wh..opq" in ref_layers[2]
        assert "d/.wh..wh..opq" not in replace
        assert {"d/.wh.a", "d/.wh.sub", "d/new"} <= set(replace)
    else:
        assert layers == ref_layers
    assert {"gone-dir", ".wh.gone-dir"} & set(replace) == {".wh.gone-dir"}
    assert "gone-dir/deep/.wh.g" not in replace  # a removed directory is one whiteout


def test_copy_mode_rebuild_on_the_same_root_is_cached_and_identical(
    busybox_image: str, semantics_context: Path, tmp_path: Path
) -> None:
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    digests = []
    for out in (out1, out2):
        opts = BuildOptions(
            context=semantics_context,
            build_args={"BASE": busybox_image},
            snapshotter="copy",
            source_date_epoch=EPOCH,
            outputs=(parse_output(f"type=oci,dest={out},tar=false,rewrite-timestamp=true"),),
        )
        outcome = build(opts, root=tmp_path / "root", progress=RecordingSink())
        digests.append(outcome.image_digest)
    assert outcome.executed_steps == 0 and outcome.cached_steps > 0
    assert digests[0] == digests[1]


# --- crash recovery in copy mode ---------------------------------------------------


def test_sigkill_mid_run_in_copy_mode_then_rebuild(busybox_image: str, tmp_path: Path) -> None:
    """SIGKILL while a RUN writes into a copy snapshot; the rebuild (same root, MASON_SNAPSHOTTER=copy,
    --runtime=chroot) succeeds and leaves no active snapshot or mount behind."""
    _need("unshare")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\nRUN echo base > /base\n"
        "RUN echo started && echo partial > /partial && sleep 30 && echo x > /x\n"
    )
    root = tmp_path / "root"
    env = mason_env(root, {"MASON_SNAPSHOTTER": "copy"})
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
    seen = []
    output_line = re.compile(r"^#\d+ [\d.]+ started$")  # the RUN's own output, not the step's title
    for line in proc.stdout:
        seen.append(line)
        if output_line.match(line.strip()) or time.monotonic() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert output_line.match(seen[-1].strip()), "".join(seen)
    active = root / "snapshots" / ".active"
    assert any(active.iterdir())  # the killed step's copy is left behind ...
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\nRUN echo base > /base\nRUN echo x > /x\n"
    )
    out = tmp_path / "out"
    done = mason_build(
        root,
        "--runtime=chroot",
        "-o",
        f"type=local,dest={out}",
        str(ctx),
        env={"MASON_SNAPSHOTTER": "copy"},
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "x").read_text() == "x\n" and (out / "base").read_text() == "base\n"
    assert not (out / "partial").exists()
    step = re.search(r"^(#\d+) \[2/3\] RUN echo base", done.stderr, re.M)
    assert step is not None and f"{step.group(1)} CACHED" in done.stderr, (
        done.stderr
    )  # the first RUN survived the kill
    assert list(active.iterdir()) == []  # ... and removed by the next build
    assert not [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if str(root) in m]
