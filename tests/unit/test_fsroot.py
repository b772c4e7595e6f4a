"""mason.fsroot: paths resolved inside a root, as if it were ``/``.

The property tests build random trees of files, directories and symlinks (absolute,
relative, dangling, loops, ``..``) inside a root that sits next to a canary tree,
and check that no resolution, open or mkdir ever reaches the canary; where the
kernel has ``openat2``, the walk must land on the same inode as the kernel's own
``RESOLVE_IN_ROOT``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.trees import build_tree

from mason import fsroot
from mason.fsroot import FsRoot, PathOutsideError, clean_path


def _tree(root: Path, spec: dict[str, str]) -> None:
    """name -> "dir" | "file" | "link:TARGET"."""
    for name, kind in spec.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if kind == "dir":
            p.mkdir(exist_ok=True)
        elif kind == "file":
            p.write_text(name)
        else:
            os.symlink(kind.removeprefix("link:"), p)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    canary = tmp_path / "canary"
    root.mkdir()
    canary.mkdir()
    (canary / "secret").write_text("host")
    return root, canary


def test_clean_path() -> None:
    assert clean_path("../../a/./b/../c") == "/a/c"
    assert clean_path("") == "/"
    assert clean_path("/..") == "/"


def test_dotdot_and_absolute_links_stay_inside(layout: tuple[Path, Path]) -> None:
    root, canary = layout
    _tree(
        root,
        {
            "etc/passwd": "file",
            "abs": f"link:{canary}",
            "rel": "link:../../../canary",
            "up": "link:..",
            "dir/inner": "link:../etc",
        },
    )
    r = FsRoot(root)
    assert r.resolve("../../../etc/passwd").rel == "etc/passwd"
    assert r.resolve("/abs/secret").rel == canary.as_posix().lstrip("/") + "/secret"
    assert not r.resolve("/abs/secret").exists
    assert r.resolve("rel/secret").rel == "canary/secret"
    assert r.resolve("up/up/etc/passwd").rel == "etc/passwd"
    assert r.resolve("dir/inner/passwd").rel == "etc/passwd"
    assert r.resolve("dir/inner", follow=False).rel == "dir/inner"
    assert r.host("/rel/secret") == root / "canary" / "secret"


def test_missing_components_are_lexical(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    _tree(root, {"a/b": "dir", "a/lnk": "link:/x/y"})
    r = FsRoot(root)
    res = r.resolve("a/missing/../b")
    assert res.rel == "a/b" and res.is_dir
    assert r.resolve("a/lnk/z").rel == "x/y/z"
    assert r.resolve("nope/../../a").rel == "a"


def test_loops_and_files_as_directories_are_errors(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    _tree(root, {"l1": "link:l2", "l2": "link:l1", "f": "file"})
    r = FsRoot(root)
    with pytest.raises(PathOutsideError, match="too many levels"):
        r.resolve("l1/x")
    with pytest.raises(PathOutsideError, match="not a directory"):
        r.resolve("f/x")
    assert r.resolve("l1", follow=False).rel == "l1"


def test_mkdirs_follows_links_inside_root_only(layout: tuple[Path, Path]) -> None:
    root, canary = layout
    _tree(root, {"wd": f"link:{canary}/new"})
    r = FsRoot(root)
    host, created = r.mkdirs("/wd/sub", mode=0o750, uid=123, gid=456)
    assert host == root / canary.as_posix().lstrip("/") / "new" / "sub"
    assert host.is_dir() and not (canary / "new").exists()
    assert stat.S_IMODE(os.stat(host).st_mode) == 0o750
    assert (os.stat(host).st_uid, os.stat(host).st_gid) == (123, 456)
    assert created[-1] == host and len(created) == len(canary.parts) + 1
    (root / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        r.mkdirs("file")
    with pytest.raises(PathOutsideError, match="not a directory"):
        r.mkdirs("file/sub")


def test_open_and_parent_never_leave(layout: tuple[Path, Path]) -> None:
    root, canary = layout
    _tree(root, {"leak": f"link:{canary}/secret", "dotdot": "link:../../canary/secret"})
    r = FsRoot(root)
    for name in ("leak", "dotdot", "../canary/secret"):
        with pytest.raises(FileNotFoundError):
            os.close(r.open(name))
    r.mkdirs(str(canary))  # the link's target directory, made inside the root
    fd = r.open("leak", os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    assert (canary / "secret").read_text() == "host"
    assert (root / canary.as_posix().lstrip("/") / "secret").exists()
    with r.parent("/leak") as (dir_fd, name):
        assert name == "leak" and stat.S_ISLNK(
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        )


def test_fallback_without_openat2(
    layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, canary = layout
    _tree(root, {"leak": f"link:{canary}/secret", "etc/hosts": "file"})
    monkeypatch.setattr(fsroot, "_openat2_state", [False])
    r = FsRoot(root)
    with pytest.raises(FileNotFoundError):
        os.close(r.open("leak"))
    assert r.read_bytes("/../etc/hosts") == b"etc/hosts"
    with pytest.raises(OSError) as info:
        os.close(r.open("leak", follow=False))
    assert info.value.errno == errno.ELOOP


# -- property tests ------------------------------------------------------------------

_NAMES = st.sampled_from(["a", "b", "c", "..", "."])
_REL = st.lists(_NAMES, min_size=0, max_size=5).map("/".join)
_TARGET = st.one_of(
    _REL,
    _REL.map(lambda p: "/" + p),
    st.just("CANARY"),
    st.just("CANARY/secret"),
    st.just("../../../../CANARY/secret"),
)
_ENTRY = st.one_of(st.just("dir"), st.just("file"), _TARGET.map(lambda t: "link:" + t))
_TREE = st.dictionaries(
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map("/".join),
    _ENTRY,
    max_size=12,
)


def _inside(root: Path, host: Path) -> bool:
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(host)]) == real_root


@pytest.mark.parametrize("kernel", [True, False], ids=["openat2", "walk-only"])
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=_TREE, paths=st.lists(st.one_of(_REL, _TARGET), min_size=1, max_size=6))
def test_random_trees_never_reach_the_canary(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    kernel: bool,
    spec: dict[str, str],
    paths: list[str],
) -> None:
    if not kernel:
        monkeypatch.setattr(fsroot, "_openat2_state", [False])
    elif not fsroot._openat2_works():
        pytest.skip("this kernel has no openat2")
    base = tmp_path_factory.mktemp("prop")
    root, canary = base / "root", base / "CANARY"
    root.mkdir()
    canary.mkdir()
    (canary / "secret").write_text("host")
    build_tree(root, canary, spec)
    r = FsRoot(root)
    for unsafe in (p.replace("CANARY", str(canary)) for p in paths):
        try:
            res = r.resolve(unsafe)
        except PathOutsideError:
            continue
        host = r.host(unsafe)
        # canonical: no component of the result below the root is a symlink
        assert (
            _inside(root, host) and os.path.realpath(host) == str(host)
            if res.exists
            else _inside(root, host)
        )
        try:
            fd = r.open(unsafe)
        except OSError as exc:
            # the kernel needs every component before a ``..`` to exist; the walk keeps a
            # missing one lexically (securejoin's rule), so only these errors may differ
            assert exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
            continue
        try:
            got = os.fstat(fd)
            assert res.st is not None and (got.st_dev, got.st_ino) == (res.st.st_dev, res.st.st_ino)
        finally:
            os.close(fd)
        with contextlib.suppress(OSError, PathOutsideError):
            r.mkdirs(unsafe + "/made")
    assert sorted(os.listdir(canary)) == ["secret"]
    assert (canary / "secret").read_text() == "host"
