"""$MASON_ROOT is for its user only (issue 9, item 11): the root and mason's directories 0700,
meta.db (+ -wal/-shm), the lock and blobs 0600, whatever the umask; a root made 0755/0644 by
an older mason is tightened when opened; a shared directory used as the root is left alone."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mason.engine.state import StateRoot


@pytest.fixture(autouse=True)
def _open_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the usual umask: what mason used to create things with
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _dirs(root: Path) -> list[Path]:
    return [
        root,
        root / "tmp",
        root / "snapshots",
        root / "cachemounts",
        root / "cachemount-locks",
        root / "blobs",
        root / "blobs/sha256",
    ]


def _files(root: Path) -> list[Path]:
    return [root / "lock", root / "meta.db", root / "meta.db-wal", root / "meta.db-shm"]


def test_a_new_root_is_private(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with StateRoot.open(root) as st:
        digest = st.store.put_bytes(b"layer bytes")
        st.meta.put_step_keys([("id", "key", b"x", None)])  # writes: -wal and -shm exist
        blob = st.store.path(digest)
        assert {p: oct(_mode(p)) for p in _dirs(root)} == {p: oct(0o700) for p in _dirs(root)}
        assert {p: oct(_mode(p)) for p in _files(root)} == {p: oct(0o600) for p in _files(root)}
        assert _mode(blob) == 0o600


def test_an_old_loose_root_is_tightened_when_opened(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with StateRoot.open(root) as st:
        st.meta.put_step_keys([("id", "key", b"x", None)])
    for d in _dirs(root):
        os.chmod(d, 0o755)
    for f in _files(root):
        if f.exists():
            os.chmod(f, 0o644)
    (root / "cachemounts/abc").mkdir(mode=0o777)
    os.chmod(root / "cachemounts/abc", 0o777)  # a cache mount's own mode= is the Dockerfile's
    with StateRoot.open(root):
        assert all(_mode(d) == 0o700 for d in _dirs(root))
        assert all(_mode(f) == 0o600 for f in _files(root) if f.exists())
        assert _mode(root / "cachemounts/abc") == 0o777


def test_a_shared_directory_as_root_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with StateRoot.open(shared):
        assert _mode(shared) == 0o1777  # like /tmp: not taken from its other users
        assert all(_mode(d) == 0o700 for d in _dirs(shared)[1:])
