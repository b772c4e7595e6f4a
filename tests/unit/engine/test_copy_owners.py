"""A COPY into directories it makes skips what it need not ask or set (issue 14) and still
gives every entry the owner the Dockerfile asks for (root only: owners need CAP_CHOWN)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mason.engine.context import CopyOptions, DockerIgnore, copy_sources, select_sources

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="owners need root (CI runs as root)")


def _context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "data" / "sub").mkdir(parents=True)
    for name in ("data/a", "data/b", "data/sub/c"):
        (ctx / name).write_text(name)
        os.chown(ctx / name, 4321, 4321)  # a context file's owner never reaches the copy
    return ctx


def _owners(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_uid, p.lstat().st_gid) for p in root.rglob("*")}


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        (CopyOptions(), (0, 0)),
        (CopyOptions(uid=1000, gid=1000), (1000, 1000)),
        (CopyOptions(uid=1000, gid=0), (1000, 0)),
    ],
)
def test_a_copy_into_a_new_directory_owns_as_asked(
    tmp_path: Path, opts: CopyOptions, expected: tuple[int, int]
) -> None:
    ctx = _context(tmp_path)
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    sources = select_sources(ctx, ["data"], DockerIgnore())
    copy_sources(sources, rootfs, "/new/data", opts, DockerIgnore(), dest_is_dir_hint=False)
    owners = _owners(rootfs / "new" / "data")
    assert owners == dict.fromkeys(["a", "b", "sub", "sub/c"], expected)


def test_a_copy_into_an_existing_directory_replaces_what_is_there(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    rootfs = tmp_path / "rootfs"
    (rootfs / "dest").mkdir(parents=True)
    (rootfs / "dest" / "a").write_text("old")
    os.chown(rootfs / "dest", 0, 777)
    os.chmod(rootfs / "dest", 0o2755)  # what is made here gets group 777 until chowned
    sources = select_sources(ctx, ["data"], DockerIgnore())
    copy_sources(sources, rootfs, "/dest", CopyOptions(), DockerIgnore(), dest_is_dir_hint=True)
    assert (rootfs / "dest" / "a").read_text() == "data/a"
    assert set(_owners(rootfs / "dest").values()) == {(0, 0)}
