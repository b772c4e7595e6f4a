"""After a real build, nothing mason keeps in $MASON_ROOT is readable by other local users
(issue 9, item 11): the root, its directories and files, the content store; the cache
mount's own directory keeps the ``mode=`` the Dockerfile asked for (behind its 0700
parent), and the image content keeps its modes."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from tests.support.cli import mason_build

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="builds need root (overlayfs, runc, unshare)"
)


def test_root_is_private_after_a_build_with_a_cache_mount(
    busybox_image: str, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a\n")
    os.chmod(ctx / "a.txt", 0o644)
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\nCOPY a.txt /a.txt\n"
        "RUN --mount=type=cache,target=/c,mode=0755 echo cached > /c/f && mkdir -p /d && chmod 0755 /d\n"
    )
    root = tmp_path / "root"
    out = tmp_path / "fs.tar"
    res = mason_build(root, "-o", f"type=tar,dest={out}", str(ctx), env={"MASON_DEBUG": ""})
    assert res.returncode == 0, res.stdout + res.stderr

    loose = [
        f"{p} {stat.S_IMODE(os.lstat(p).st_mode):o}"
        for p in [root, *root.iterdir()]
        if stat.S_IMODE(os.lstat(p).st_mode) & 0o077
    ]
    assert loose == []
    store = [p for p in (root / "blobs").rglob("*") if stat.S_IMODE(os.lstat(p).st_mode) & 0o077]
    assert store == []
    (cache,) = (root / "cachemounts").iterdir()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o755  # the mode= asked for
    assert (cache / "f").read_text() == "cached\n"
    with tarfile.open(fileobj=io.BytesIO(out.read_bytes())) as tf:
        modes = {m.name: m.mode for m in tf.getmembers() if m.name in ("a.txt", "d")}
    assert modes == {"a.txt": 0o644, "d": 0o755}  # image content keeps its own modes
