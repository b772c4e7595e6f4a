"""One rule for every snapshotter (issue 9 item 13): random stacks of layers whose
entries write through earlier layers' symlinks (absolute, relative, dangling, loops,
``..``), with whiteouts, opaque directories and hardlinks, give the same filesystem
applied flat onto a plain directory, with the copy snapshotter and with the overlay
snapshotter; a layer one of them refuses, all refuse; nothing outside the roots changes."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.layer.layer_helpers import deletion_or_link, entry, make_tar

from mason.layer import LayerError, Snapshotter, overlay_supported
from mason.layer.apply import apply_layer

NAMES = ("a", "b", "c")
CANARY = "@CANARY@"  # replaced by the canary tree's host path
TARGETS = (
    "a",
    "b",
    "a/b",
    "/a",
    "/a/c",
    "../a",
    "../../..",
    "/../../b",
    "c/../a",
    ".",
    "..",
    "/",
    "/nowhere/deep",
    "missing",
    CANARY,
    CANARY + "/sub",
    "../../../../" + CANARY.lstrip("/"),
)

Entry = tuple[str, str, str]  # (kind, path, data: content, link target or hardlink target)

paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
_DATA: dict[str, st.SearchStrategy[str]] = {
    "dir": st.just(""),
    "file": st.sampled_from(("x", "y")),
    "symlink": st.sampled_from(TARGETS),
    "whiteout": st.just(""),
    "opaque": st.just(""),
    "hardlink": paths,
}
# Weighted so that most stacks apply (a hardlink to a random path mostly names nothing).
_KINDS = ("dir",) * 6 + ("file",) * 6 + ("symlink",) * 6 + ("whiteout", "opaque", "hardlink")
entries: st.SearchStrategy[Entry] = st.sampled_from(_KINDS).flatmap(
    lambda kind: st.tuples(st.just(kind), paths, _DATA[kind])
)
stacks = st.lists(st.lists(entries, min_size=1, max_size=8), min_size=2, max_size=4)

Listing = dict[str, tuple[object, ...]]


def _tar(layer: list[Entry], canary: str) -> io.BytesIO:
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for kind, path, data in layer:
        if kind == "dir":
            members.append((entry(path + "/", tarfile.DIRTYPE, mode=0o751), None))
        elif kind == "file":
            members.append((entry(path, mode=0o640), data.encode()))
        elif kind == "symlink":
            members.append(
                (entry(path, tarfile.SYMTYPE, linkname=data.replace(CANARY, canary)), None)
            )
        else:
            members.append(deletion_or_link(kind, path, data))
    return make_tar(*members)


def listing(root: str) -> Listing:
    """path -> (type, mode, uid, gid, link target or content hash); the root itself left out."""
    result: Listing = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st_ = os.lstat(path)
            extra: object = None
            if stat.S_ISLNK(st_.st_mode):
                extra = os.readlink(path)
            elif stat.S_ISREG(st_.st_mode):
                extra = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            result[os.path.relpath(path, root)] = (
                stat.S_IFMT(st_.st_mode),
                stat.S_IMODE(st_.st_mode),
                st_.st_uid,
                st_.st_gid,
                extra,
            )
    return result


def flat_outcome(layers: list[io.BytesIO], root: str) -> tuple[int | None, Listing]:
    """(index of the first refused layer or None, the tree of the layers before it)."""
    os.mkdir(root)
    for i, tar in enumerate(layers):
        before = listing(root)
        try:
            apply_layer(tar, root, mode="flat")
        except LayerError:
            return i, before
    return None, listing(root)


def snapshot_outcome(layers: list[io.BytesIO], root: str, mode: str) -> tuple[int | None, Listing]:
    snap = Snapshotter(root, mode=mode)  # type: ignore[arg-type]
    chain: list[str] = []
    refused: int | None = None
    for i, tar in enumerate(layers):
        try:
            sid, _ = snap.apply_layer(chain, tar)
        except LayerError:
            refused = i
            break
        chain.append(sid)
    with snap.view(chain) as view:
        result = listing(view)
    if mode == "overlay" and chain:
        # Stacks too long for one mount are flattened: re-tarred snapshots applied flat.
        with Snapshotter(root, mode="copy").view(chain, readonly=True) as flat:
            assert listing(flat) == result
    snap.sync()  # the commits made durable: their marker goes too
    assert os.listdir(os.path.join(root, ".active")) == []  # nothing half-applied left behind
    return refused, result


@contextmanager
def scratch() -> Iterator[Path]:
    # hypothesis runs the body many times per test: a fresh directory each time, not tmp_path.
    path = Path(tempfile.mkdtemp(prefix="layer-eq-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


@functools.cache
def _overlay_reason() -> str | None:
    with scratch() as tmp:
        return overlay_supported(str(tmp))


def _make_canary(canary: Path) -> Listing:
    (canary / "sub").mkdir(parents=True)
    (canary / "a").write_text("canary")
    (canary / "sub" / "b").write_text("canary")
    return listing(str(canary))


@pytest.mark.skipif(os.geteuid() != 0, reason="overlay snapshots and whiteout devices need root")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stacks)
def test_flat_copy_and_overlay_give_the_same_filesystem(stack: list[list[Entry]]) -> None:
    reason = _overlay_reason()
    if reason is not None:
        pytest.skip(f"overlayfs not usable here: {reason}")
    with scratch() as tmp:
        canary = tmp / "canary"
        canary_before = _make_canary(canary)
        outcomes = {
            "flat": flat_outcome([_tar(layer, str(canary)) for layer in stack], str(tmp / "flat")),
            "copy": snapshot_outcome(
                [_tar(layer, str(canary)) for layer in stack], str(tmp / "copy"), "copy"
            ),
            "overlay": snapshot_outcome(
                [_tar(layer, str(canary)) for layer in stack], str(tmp / "ov"), "overlay"
            ),
        }
        assert outcomes["copy"] == outcomes["flat"]
        assert outcomes["overlay"] == outcomes["flat"]
        assert listing(str(canary)) == canary_before
        assert sorted(os.listdir(tmp)) == ["canary", "copy", "flat", "ov"]


@pytest.mark.skipif(os.geteuid() != 0, reason="overlay snapshots and whiteout devices need root")
def test_a_layer_through_an_earlier_symlink_is_unpacked_per_chain(tmp_path: Path) -> None:
    """The overlay snapshot of a layer that reaches below it is only valid on its chain."""
    if overlay_supported(str(tmp_path)) is not None:
        pytest.skip("overlayfs not usable here")
    snap = Snapshotter(str(tmp_path / "snaps"), mode="overlay")
    usr, _ = snap.apply_layer(
        [],
        make_tar(
            (entry("usr/", tarfile.DIRTYPE, mode=0o755), None),
            (entry("lnk", tarfile.SYMTYPE, linkname="/usr"), None),
        ),
    )
    plain, _ = snap.apply_layer([], make_tar((entry("lnk/", tarfile.DIRTYPE, mode=0o755), None)))
    write = make_tar((entry("lnk/file"), b"through"))
    on_usr, _ = snap.apply_layer([usr], write, snapshot_id="shared", based_id="onusr")
    write.seek(0)
    on_plain, _ = snap.apply_layer([plain], write, snapshot_id="shared", based_id="onplain")
    assert (on_usr, on_plain) == ("onusr", "onplain")
    assert snap.info(on_usr).parents == (usr,)
    with snap.view([usr, on_usr]) as view:
        assert Path(view, "usr", "file").read_text() == "through"
        assert os.readlink(Path(view, "lnk")) == "/usr"
    with snap.view([plain, on_plain]) as view:
        assert Path(view, "lnk", "file").read_text() == "through"
    # A layer holding its own parents depends on nothing below: one snapshot for every chain.
    own = make_tar((entry("lnk/", tarfile.DIRTYPE, mode=0o755), None), (entry("lnk/file"), b"own"))
    sid, _ = snap.apply_layer([usr], own, snapshot_id="own", based_id="ownonusr")
    assert sid == "own" and snap.info(sid).parents == ()


@pytest.mark.skipif(os.geteuid() != 0, reason="overlay snapshots and whiteout devices need root")
@pytest.mark.parametrize("marker", [".wh..wh..opq", "self/.wh..wh..opq"])
def test_an_opaque_layer_root_hides_the_layers_below_in_overlay_form(
    tmp_path: Path, marker: str
) -> None:
    """overlayfs ignores an opaque mark on an upper root: a layer that makes its root opaque
    (directly, or through its own symlink to ".") hides the layers below by whiteouts, and
    its snapshot holds on its own chain only."""
    if overlay_supported(str(tmp_path)) is not None:
        pytest.skip("overlayfs not usable here")
    snap = Snapshotter(str(tmp_path / "snaps"), mode="overlay")
    below, _ = snap.apply_layer([], make_tar((entry("old/", tarfile.DIRTYPE), None)))
    layer = make_tar(
        (entry("self", tarfile.SYMTYPE, linkname="."), None),
        (entry(marker), b""),
        (entry("new"), b"kept"),
    )
    sid, _ = snap.apply_layer([below], layer)
    assert snap.info(sid).parents == (below,)
    with snap.view([below, sid]) as view:
        assert sorted(os.listdir(view)) == ["new", "self"]
    layer.seek(0)
    alone, _ = snap.apply_layer([], layer)
    with snap.view([alone]) as view:
        assert sorted(os.listdir(view)) == ["new", "self"]
