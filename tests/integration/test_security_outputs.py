"""``--output type=oci|docker|tar,dest=PATH`` never replaces what is not a regular file (issue 9,
item 4), driven through the CLI: a FIFO and a character device are written to and stay what
they were; a directory, a socket or a block device is refused before the build starts (exit 2,
nothing written); a regular file is replaced atomically; a symlink is followed (its target is
written, the link stays). Devices are made with mknod in a temp dir: never the real /dev/null.
"""

from __future__ import annotations

import io
import os
import socket
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
from tests.support.cli import mason_build

DOCKERFILE = "FROM scratch\nCOPY a.txt /a.txt\n"


def _mason(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    # the tests compare bytes; without MASON_DEBUG, so an error reads as a user sees it
    return mason_build(root, *args, env={"MASON_DEBUG": None}, timeout=120, text=False)


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    d = tmp_path / "ctx"
    d.mkdir()
    (d / "Dockerfile").write_text(DOCKERFILE)
    (d / "a.txt").write_text("a\n")
    return d


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


def _tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getnames()


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")


@pytest.mark.parametrize("kind", ["oci", "docker", "tar"])
def test_fifo_dest_is_written_to_not_replaced(
    ctx: Path, root: Path, tmp_path: Path, kind: str
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as f:
            received.append(f.read())

    reader = threading.Thread(target=read, daemon=True)  # blocks for good if the FIFO was replaced
    reader.start()
    res = _mason(root, "-o", f"type={kind},dest={fifo}", str(ctx))
    if res.returncode != 0:
        with open(fifo, "wb"):  # release the reader
            pass
    reader.join(60)
    assert res.returncode == 0, res.stderr.decode()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    names = _tar_names(received[0])
    assert ("index.json" in names) if kind != "tar" else ("a.txt" in names)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".mason-")] == []


def test_char_device_dest_is_written_to_not_replaced(ctx: Path, root: Path, tmp_path: Path) -> None:
    _needs_root()
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    res = _mason(root, "-o", f"type=oci,dest={null}", str(ctx))
    assert res.returncode == 0, res.stderr.decode()
    st = os.lstat(null)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctx", "null", "root"]


def _refused(res: subprocess.CompletedProcess[bytes], root: Path, *needles: str) -> None:
    err = res.stderr.decode()
    assert res.returncode == 2, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert not (root / "meta.db").exists()  # refused while parsing options: no build started


@pytest.mark.parametrize("kind", ["docker", "tar"])
def test_directory_dest_is_refused(ctx: Path, root: Path, tmp_path: Path, kind: str) -> None:
    d = tmp_path / "dir"
    d.mkdir()
    res = _mason(root, "-o", f"type={kind},dest={d}", str(ctx))
    _refused(res, root, f"{d} is a directory", "dest= must be a regular file")
    assert d.is_dir() and list(d.iterdir()) == []


def test_socket_dest_is_refused(ctx: Path, root: Path, tmp_path: Path) -> None:
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        res = _mason(root, "-o", f"type=oci,dest={path}", str(ctx))
    _refused(res, root, f"{path} is a socket")
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_block_device_dest_is_refused(ctx: Path, root: Path, tmp_path: Path) -> None:
    _needs_root()
    path = tmp_path / "blk"
    os.mknod(path, stat.S_IFBLK | 0o600, os.makedev(7, 200))
    res = _mason(root, "-o", f"type=tar,dest={path}", str(ctx))
    _refused(res, root, f"{path} is a block device")
    assert stat.S_ISBLK(os.lstat(path).st_mode)


def test_symlink_to_device_is_written_through(ctx: Path, root: Path, tmp_path: Path) -> None:
    _needs_root()
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    link = tmp_path / "out.tar"
    link.symlink_to(null)
    res = _mason(root, "-o", f"type=docker,dest={link}", str(ctx))
    assert res.returncode == 0, res.stderr.decode()
    assert link.is_symlink() and stat.S_ISCHR(os.lstat(null).st_mode)


def test_symlink_to_regular_file_replaces_the_target(ctx: Path, root: Path, tmp_path: Path) -> None:
    target = tmp_path / "real.tar"
    target.write_text("old")
    link = tmp_path / "out.tar"
    link.symlink_to(target)
    res = _mason(root, "-o", f"type=oci,dest={link}", str(ctx))
    assert res.returncode == 0, res.stderr.decode()
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert "index.json" in _tar_names(target.read_bytes())


def test_regular_file_is_replaced_atomically(ctx: Path, root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.tar"
    out.write_text("old")
    before = os.stat(out).st_ino
    res = _mason(root, "-o", f"type=tar,dest={out}", str(ctx))
    assert res.returncode == 0, res.stderr.decode()
    assert os.stat(out).st_ino != before  # a new file renamed into place, not rewritten in place
    assert "a.txt" in _tar_names(out.read_bytes())


def test_oci_into_an_existing_directory_is_a_layout(ctx: Path, root: Path, tmp_path: Path) -> None:
    d = tmp_path / "layout"
    d.mkdir()
    res = _mason(root, "-o", f"type=oci,dest={d}", str(ctx))
    assert res.returncode == 0, res.stderr.decode()
    assert (d / "index.json").is_file() and (d / "oci-layout").is_file()
