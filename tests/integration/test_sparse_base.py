"""A COPY onto a base that is not unpacked sees only the entries its resolutions meet
(``mason.layer.sparse``, ``Snapshotter.mount(looks_at=...)``; issue 14): on random bases
(directories, files, symlinks absolute, relative, dangling and looping, hardlinks, whiteouts,
opaque directories, over several layers, the lowest ones perhaps unpacked by an earlier step) and
random destinations, the layer it writes is the one
the same copy writes on the whole unpacked base (on a root of the same attributes), and a copy
that fails there fails here too. A copy that only makes new names at the top is written with
no mount at all (``Snapshotter.prepare_beside``), on an index or on unpacked layers alike.
Real overlayfs mounts: root only."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tests.unit.layer.layer_helpers import deletion_or_link, entry, make_tar

from mason.digest import sha256_bytes
from mason.engine.blobs import Blobs
from mason.engine.context import CopyOptions, Source, copy_looks_at, copy_sources
from mason.engine.context import _mkdirs as make_dirs
from mason.engine.snapshots import Snapshotter
from mason.engine.state import LayerRef, StateRoot
from mason.errors import MasonError
from mason.layer import overlay_supported
from mason.layer.apply import apply_layer
from mason.oci import mediatypes as mt

NAMES = ("a", "b", "c")
TARGETS = ("a", "b", "a/b", "/a", "/a/c", "../a", "../../..", "/", "c/../a", "missing", "/b/c")
DESTS = ("/", "/a", "/a/", "/b/c", "/a/b/", "/c/x", "/n/e/w", "/a/../b", "/b/a/c/")

paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
_KINDS = ("dir",) * 6 + ("file",) * 4 + ("symlink",) * 5 + ("whiteout", "opaque", "hardlink")
_DATA = {
    "dir": st.sampled_from((0o755, 0o700, 0o1777)),
    "file": st.sampled_from((0o644, 0o600)),
    "symlink": st.sampled_from(TARGETS),
    "whiteout": st.just(""),
    "opaque": st.just(""),
    "hardlink": paths,
}
entries = st.sampled_from(_KINDS).flatmap(
    lambda kind: st.tuples(st.just(kind), paths, _DATA[kind], st.integers(0, 2))
)
layers = st.lists(st.lists(entries, min_size=1, max_size=10), min_size=1, max_size=3)
copies = st.tuples(st.sampled_from(DESTS), st.sampled_from(("file", "dir", "both")))
#: how many of the base's lowest layers an earlier step unpacked (read from their snapshots)
unpacked_first = st.integers(0, 2)


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _tar(layer: list[tuple[str, str, object, int]]) -> bytes:
    """A layer as Docker and BuildKit write them: each entry's directories listed first."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    listed: set[str] = set()
    for kind, path, data, owner in layer:
        for parent in _parents(path):
            if parent not in listed:
                listed.add(parent)
                members.append((entry(parent + "/", tarfile.DIRTYPE, mode=0o755, mtime=7), None))
        if kind == "dir":
            listed.add(path)
            info = entry(path + "/", tarfile.DIRTYPE, mode=int(str(data)), uid=owner, mtime=11)
            info.pax_headers = {"SCHILY.xattr.user.tag": f"d{owner}"}
            members.append((info, None))
        elif kind == "file":
            members.append((entry(path, mode=int(str(data)), gid=owner, mtime=13), b"old"))
        elif kind == "symlink":
            members.append((entry(path, tarfile.SYMTYPE, linkname=str(data)), None))
        else:
            members.append(deletion_or_link(kind, path, str(data)))
    return make_tar(*members).getvalue()


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ctx = tmp_path_factory.mktemp("ctx")
    (ctx / "f").write_text("new file")
    (ctx / "d" / "a").mkdir(parents=True)
    (ctx / "d" / "a" / "x").write_text("x")
    (ctx / "d" / "b").write_text("b")
    os.symlink("a/x", ctx / "d" / "c")
    return ctx


@contextmanager
def _snapshots(root: Path) -> Iterator[tuple[Snapshotter, StateRoot]]:
    with StateRoot.open(root) as state:
        yield Snapshotter(state, Blobs(state), mode="overlay"), state


def _chain(state: StateRoot, tars: list[bytes]) -> list[LayerRef]:
    chain = []
    for data in tars:
        digest = state.store.put_bytes(data, sha256_bytes(data))
        chain.append(LayerRef(digest, digest, len(data), mt.OCI_LAYER))
    return chain


def _same_both_ways(
    work: Path,
    tars: list[bytes],
    unpacked: int,
    step: Callable[[Snapshotter, list[LayerRef], bool], tuple[str, object]],
) -> None:
    """``step(snapshots, chain, sparse)`` gives the same outcome on the whole base as on the
    base shown sparse, its ``unpacked`` lowest layers unpacked first (as an earlier step's
    would be)."""
    with _snapshots(work / "whole") as (snapshots, state):
        whole = step(snapshots, _chain(state, tars), False)
    with _snapshots(work / "sparse") as (snapshots, state):
        chain = _chain(state, tars)
        if unpacked:
            try:
                with snapshots.view(chain[:unpacked]):
                    pass
            except MasonError:
                return  # a prefix the unpack refuses: the whole base is refused above too
        sparse = step(snapshots, chain, True)
    assert sparse == whole


def _copy(
    snapshots: Snapshotter, chain: list[LayerRef], sources: list[Source], dest: str, sparse: bool
) -> tuple[str, object]:
    looks_at = (lambda: copy_looks_at(sources, dest, None)) if sparse else None
    try:
        with snapshots.mount(chain, looks_at=looks_at) as mounted:
            if sparse and not mounted.active.mounted:  # new names at the top: no mount
                unpacked = all(snapshots._unpacked(lr) for lr in chain)
                went_beside.append("unpacked" if unpacked else "sparse")
            root = os.stat(mounted.merged)
            copy_sources(
                sources, mounted.merged, dest, CopyOptions(0, 0), None, dest_is_dir_hint=False
            )
            buf = io.BytesIO()
            snapshots.layers.write_active_layer(mounted.active, buf)
    except MasonError as exc:
        return "refused", type(exc).__name__
    return "layer", (root.st_mode, root.st_uid, root.st_gid, _entries(buf.getvalue()))


def _entries(data: bytes) -> list[tuple[object, ...]]:
    """The layer's entries, times left out (a directory a copy writes into takes the clock's)."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf:
            f = tf.extractfile(m) if m.isreg() else None
            content = hashlib.sha256(f.read()).hexdigest() if f is not None else None
            xattrs = {k: v for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            out.append((m.name, m.type, m.mode, m.uid, m.gid, m.linkname, content, xattrs))
    return out


used_sparse: list[bool] = []
#: the examples whose copy was written beside the chain, with no mount, and how the chain was
#: looked at (its index, or its unpacked layers)
went_beside: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _overlay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    reason = overlay_supported(str(tmp_path_factory.mktemp("probe")))
    if reason is not None:
        pytest.skip(f"overlayfs: {reason}")
    yield
    # the examples must have gone the sparse way, not only fallen back to the unpack
    assert sum(used_sparse) >= 20, used_sparse.count(True)
    assert went_beside.count("sparse") >= 5 and went_beside.count("unpacked") >= 1, went_beside
    # the archives added to new names at the top (the examples) took the no-mount way too
    assert went_beside.count("extract") >= 2, went_beside


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(stack=layers, copy=copies, unpacked=unpacked_first)
# a hardlink to itself: the unpack refuses it, so the sparse index must not take it
@example(
    stack=[[("dir", "a", 0o755, 0), ("file", "a", 0o644, 0), ("hardlink", "a", "a", 0)]],
    copy=("/", "file"),
    unpacked=0,
)
# a hardlink replacing the directory that holds its target: the unpack removes the directory
# first and refuses the link, so the index must not take it
@example(
    stack=[
        [
            ("dir", "b", 0o755, 0),
            ("file", "a", 0o644, 0),
            ("hardlink", "b/a/a", "a", 0),
            ("hardlink", "b", "b/a/a", 0),
        ]
    ],
    copy=("/", "file"),
    unpacked=0,
)
# new names at the top of an unpacked base: written with no mount; over a whiteout of the same
# name (a directory there would be opaque): through the mount
@example(stack=[[("dir", "a", 0o755, 0)]], copy=("/n/e/w", "both"), unpacked=1)
@example(
    stack=[[("dir", "c", 0o755, 0), ("file", "c/x", 0o644, 0)], [("whiteout", "c", "", 0)]],
    copy=("/c/x", "dir"),
    unpacked=2,
)
def test_a_copy_on_a_sparse_base_writes_the_layer_of_the_whole_base(
    tmp_path_factory: pytest.TempPathFactory,
    context: Path,
    stack: list[list[tuple[str, str, object, int]]],
    copy: tuple[str, str],
    unpacked: int,
) -> None:
    dest, what = copy
    tars = [_tar(layer) for layer in stack]
    sources = {
        "file": [Source(context / "f", "f", False)],
        "dir": [Source(context / "d", "d", True)],
        "both": [Source(context / "f", "f", False), Source(context / "d", "d", True)],
    }[what]

    def copy_step(
        snapshots: Snapshotter, chain: list[LayerRef], sparse: bool
    ) -> tuple[str, object]:
        before = [snapshots._unpacked(lr) for lr in chain]
        result = _copy(snapshots, chain, sources, dest, sparse=sparse)
        if sparse:
            after = [snapshots._unpacked(lr) for lr in chain]
            used_sparse.append(bool(snapshots._indexes) and after == before)
        return result

    _same_both_ways(tmp_path_factory.mktemp("sparse"), tars, unpacked, copy_step)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An archive to ADD, of the bases' names (so that it meets what they hold where it
    lands): a directory, files, and a symlink out of it that a later entry is written
    through (inside the destination: an archive unpacks within it)."""
    path = tmp_path_factory.mktemp("archive") / "payload.tar"
    path.write_bytes(
        make_tar(
            (entry("b/", tarfile.DIRTYPE, mode=0o750, mtime=5), None),
            (entry("b/c", mode=0o640, mtime=5), b"payload"),
            (entry("c", tarfile.SYMTYPE, linkname="/b"), None),
            (entry("c/a", mode=0o600, mtime=5), b"through the link"),
            (entry("a", mode=0o644, mtime=5), b"top"),
        ).getvalue()
    )
    return path


def _extract(
    snapshots: Snapshotter, chain: list[LayerRef], archive: Path, dest: str, sparse: bool
) -> tuple[str, object]:
    """What ``FileOp`` does for ``ADD archive dest``: the destination made, the archive
    unpacked inside it; on a base shown sparse only when nothing of it is met (``new_only``)."""
    looks_at = (lambda: [(dest, True)]) if sparse else None
    try:
        with snapshots.mount(chain, looks_at=looks_at, new_only=True) as mounted:
            if sparse and not mounted.active.mounted:
                went_beside.append("extract")
            root = os.stat(mounted.merged)
            target = make_dirs(mounted.merged, dest, CopyOptions(0, 0))
            with open(archive, "rb") as stream:
                apply_layer(stream, str(target), mode="flat")
            buf = io.BytesIO()
            snapshots.layers.write_active_layer(mounted.active, buf)
    except MasonError as exc:
        return "refused", type(exc).__name__
    return "layer", (root.st_mode, root.st_uid, root.st_gid, _entries(buf.getvalue()))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(stack=layers, dest=st.sampled_from(DESTS), unpacked=unpacked_first)
@example(stack=[[("dir", "a", 0o755, 0)]], dest="/n/e/w", unpacked=0)  # new at the top
@example(stack=[[("dir", "a", 0o755, 0)]], dest="/n/e/w", unpacked=1)
@example(stack=[[("dir", "a", 0o755, 0), ("file", "a/b", 0o644, 0)]], dest="/a/", unpacked=0)
@example(stack=[[("dir", "a", 0o755, 0)]], dest="/", unpacked=0)  # into the root: meets /a
def test_an_archive_added_onto_a_sparse_base_writes_the_layer_of_the_whole_base(
    tmp_path_factory: pytest.TempPathFactory,
    archive: Path,
    stack: list[list[tuple[str, str, object, int]]],
    dest: str,
    unpacked: int,
) -> None:
    tars = [_tar(layer) for layer in stack]
    _same_both_ways(
        tmp_path_factory.mktemp("extract"),
        tars,
        unpacked,
        lambda snapshots, chain, sparse: _extract(snapshots, chain, archive, dest, sparse),
    )
