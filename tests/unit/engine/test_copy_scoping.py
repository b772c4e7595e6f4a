"""Issue 9's property test for COPY/ADD and mounts: random trees of files, directories and
symlinks (absolute, relative, dangling, loops, ``..``) used as a build context, a stage and a
destination rootfs, copied with random sources (wildcards too) to random destinations and
resolved as ``--mount`` sources: nothing is ever read from or written to outside the roots.

A canary tree sits beside the roots and holds a secret; the trees' symlinks point at it by
absolute path and by runs of ``..``. After every example the canary is byte-for-byte what it
was, and no file under the destination holds the secret.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.trees import build_tree

from mason.engine.context import CopyOptions, DockerIgnore, copy_sources, select_sources
from mason.errors import BuildError
from mason.fsroot import FsRoot, PathOutsideError

SECRET = b"HOST-SECRET"

_NAME = st.sampled_from(["a", "b", "c.txt", "d.tar"])
_REL = st.lists(st.sampled_from(["a", "b", "c.txt", "..", "."]), max_size=4).map("/".join)
_LINK = st.one_of(
    _REL,
    _REL.map(lambda p: "/" + p),
    st.sampled_from(
        ["CANARY", "CANARY/secret", "CANARY/dir", "../../../../../../CANARY/secret", "/"]
    ),
)
_ENTRY = st.one_of(st.just("dir"), st.just("file"), _LINK.map(lambda t: "link:" + t))
_TREE = st.dictionaries(st.lists(_NAME, min_size=1, max_size=3).map("/".join), _ENTRY, max_size=10)
_PATTERN = st.one_of(
    _REL,
    st.lists(
        st.sampled_from(["a", "b", "*", "*.txt", "?", "[ab]", ".."]), min_size=1, max_size=3
    ).map("/".join),
)


def _snapshot(root: Path) -> list[tuple[str, int, bytes]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st_ = os.lstat(p)
            data = p.read_bytes() if p.is_file() and not p.is_symlink() else b""
            out.append((str(p.relative_to(root)), st_.st_mode, data))
    return sorted(out)


def _holds_secret(root: Path) -> bool:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink() and SECRET in p.read_bytes():
                return True
    return False


@pytest.mark.skipif(os.geteuid() != 0, reason="COPY sets owners (lchown) as root")
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    context=_TREE,
    stage=_TREE,
    dest_tree=_TREE,
    patterns=st.lists(_PATTERN, min_size=1, max_size=3),
    dest=st.one_of(_REL, _REL.map(lambda p: "/" + p + "/"), st.just("CANARY/dir/")),
)
def test_copies_and_mount_sources_stay_inside_their_roots(
    tmp_path_factory: pytest.TempPathFactory,
    context: dict[str, str],
    stage: dict[str, str],
    dest_tree: dict[str, str],
    patterns: list[str],
    dest: str,
) -> None:
    base = tmp_path_factory.mktemp("scope")
    ctx, stage_root, rootfs, canary = base / "ctx", base / "stage", base / "rootfs", base / "CANARY"
    for d in (ctx, stage_root, rootfs, canary / "dir"):
        d.mkdir(parents=True)
    (canary / "secret").write_bytes(SECRET)
    (canary / "dir" / "secret").write_bytes(SECRET)
    build_tree(ctx, canary, context)
    build_tree(stage_root, canary, stage)
    build_tree(rootfs, canary, dest_tree)
    before = _snapshot(canary)
    dest = dest.replace("CANARY", str(canary))

    # COPY from the context (with .dockerignore) and from a stage
    for source_root, ignore in ((ctx, DockerIgnore()), (stage_root, None)):
        with contextlib.suppress(BuildError):
            sources = select_sources(source_root, patterns, ignore)
            for src in sources:
                assert _inside(source_root, src.path), src
            copy_sources(
                sources, rootfs, dest, CopyOptions(), ignore, dest_is_dir_hint=dest.endswith("/")
            )
    # --mount source= (what ExecOp._mount_source resolves)
    for pattern in patterns:
        for root in (ctx, stage_root):
            with contextlib.suppress(PathOutsideError), FsRoot(root) as fs:
                assert _inside(root, fs.host(pattern))

    assert _snapshot(canary) == before
    assert not _holds_secret(rootfs)


def _inside(root: Path, host: Path) -> bool:
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(host)]) == real_root
