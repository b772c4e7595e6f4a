"""Build secrets never reach a disk under $MASON_ROOT (issue 9, item 10).

A secret lives on tmpfs (a 0700 directory of its own) while its RUN runs; a ``kill -9``
of the build leaves nothing under $MASON_ROOT, and the next mason process removes the
orphaned tmpfs directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.kill_helpers import _finish, _kill_group, _start, _wait_gone
from tests.integration.sandbox_helpers import sh

from mason.engine.secrets import remove_orphaned_secrets, secret_dirs, secret_file
from mason.executor import Executor, SecretMount

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")

SECRET = b"s3cr3t-" + os.urandom(8).hex().encode()


def test_tmpfs_secret_is_readable_not_writable_in_the_sandbox(
    executor: Executor, rootfs: Path
) -> None:
    with secret_file(SECRET, mode=0o400, uid=0, gid=0) as path:
        assert os.stat(path.parent).st_mode & 0o777 == 0o700
        assert any(str(path).startswith(str(d) + "/") for d in secret_dirs())
        status, out = sh(
            executor,
            rootfs,
            "cat /run/secrets/tok; echo; (echo x > /run/secrets/tok) 2>/dev/null && echo writable; "
            "stat -c '%a %u' /run/secrets/tok",
            mounts=(SecretMount(path, "/run/secrets/tok"),),
        )
    assert status.ok, out
    assert out.splitlines() == [SECRET.decode(), "400 0"]
    assert not (rootfs / "run").exists()


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


@pytest.fixture
def private_secret_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A tmpfs directory only this test's builds put secrets in (``XDG_RUNTIME_DIR`` is the
    first choice), so no other mason process on the machine reaps the orphan before we look."""
    parent = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="mason-test-xdg-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(parent))
    try:
        yield parent
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_killed_build_leaves_no_secret_on_disk(
    busybox_image: str, tmp_path: Path, private_secret_dir: Path
) -> None:
    if shutil.which("unshare") is None and shutil.which("runc") is None:
        pytest.skip("no sandbox")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\nARG NAP\n"
        "RUN --mount=type=secret,id=tok wc -c /run/secrets/tok && echo started && sleep $NAP\n"
    )
    src = tmp_path / "token.txt"
    src.write_bytes(SECRET)
    root = tmp_path / "root"
    nap = str(400000 + os.getpid() % 100000)
    proc = _start(ctx, root, nap, "--secret", f"id=tok,src={src}")
    try:
        assert _files_holding(root, SECRET) == []
        assert list(root.glob("tmp/*/secret-*")) == []
    finally:
        _kill_group(proc)
    _wait_gone(nap, root)
    assert _files_holding(root, SECRET) == []
    # the orphaned tmpfs directory goes when the next mason process opens a state root
    assert secret_dirs()[0] == private_secret_dir
    orphans = list(private_secret_dir.glob(f"mason-secrets-{proc.pid}-*"))
    assert orphans and all(_files_holding(p, SECRET) for p in orphans)
    # (a whole build, which also unmounts what the killed one left)
    res = _finish(ctx, root, "--secret", f"id=tok,src={src}")
    assert res.returncode == 0, res.stdout + res.stderr
    assert [p for p in orphans if p.exists()] == []
    assert _files_holding(root, SECRET) == []


def test_orphaned_tmpfs_secret_dirs_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / "mason-secrets-999999999-abc"  # no such pid
    dead.mkdir()
    (dead / "secret").write_bytes(SECRET)
    live = tmp_path / f"mason-secrets-{os.getpid()}-abc"
    live.mkdir()
    other = tmp_path / "unrelated"
    other.mkdir()
    assert remove_orphaned_secrets([tmp_path]) == 1
    assert not dead.exists() and live.exists() and other.exists()
