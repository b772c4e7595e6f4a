"""Scoped path resolution, mountpoint stubs and cwd creation in a rootfs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mason.executor import ExecutorError, secure_join
from mason.executor.rootfs import MountStubs, ensure_directory


def test_secure_join_keeps_symlinks_inside_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real/dir").mkdir(parents=True)
    (root / "abs").symlink_to("/real")
    (root / "rel").symlink_to("../../../../real/dir")
    (root / "up").symlink_to("/../../..")
    assert secure_join(root, "/abs/dir/file") == root / "real/dir/file"
    assert secure_join(root, "/rel/x") == root / "real/dir/x"
    assert secure_join(root, "/up/etc/passwd") == root / "etc/passwd"
    assert secure_join(root, "../../etc") == root / "etc"
    assert secure_join(root, "/") == root


def test_secure_join_rejects_symlink_loops(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(ExecutorError, match="too many levels"):
        secure_join(tmp_path, "/a/x")


def test_ensure_directory_creates_missing_parts_owned_by_user(tmp_path: Path) -> None:
    (tmp_path / "existing").mkdir()
    uid, gid = os.getuid(), os.getgid()
    created = ensure_directory(tmp_path, "/existing/a/b", uid, gid)
    assert created == [tmp_path / "existing/a", tmp_path / "existing/a/b"]
    assert (tmp_path / "existing/a/b").is_dir()
    assert (tmp_path / "existing/a/b").stat().st_uid == uid


def test_ensure_directory_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ExecutorError, match="not a directory"):
        ensure_directory(tmp_path, "/f/sub", 0, 0)


def test_mount_stubs_are_removed_but_content_is_kept(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/hosts").write_text("keep me")
    stubs = MountStubs(tmp_path)
    stubs.ensure("/etc/hosts", directory=False)  # exists: not a stub
    stubs.ensure("/run/secrets/token", directory=False)
    stubs.ensure("/proc", directory=True)
    stubs.ensure("/cache/dir", directory=True)
    assert (tmp_path / "run/secrets/token").is_file()
    (tmp_path / "cache/dir/written-by-command").write_text("data")
    stubs.remove()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "etc"]
    assert (tmp_path / "etc/hosts").read_text() == "keep me"
    assert (tmp_path / "cache/dir/written-by-command").read_text() == "data"


def test_mount_stub_through_absolute_symlink_stays_inside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "etc").symlink_to(str(outside))  # looks like the host path, resolves inside root
    stubs = MountStubs(root)
    stubs.ensure("/etc/resolv.conf", directory=False)
    assert list(outside.iterdir()) == []
    assert (root / str(outside).lstrip("/") / "resolv.conf").is_file()
    stubs.remove()
