"""Real overlayfs snapshots: prepare/commit/diff against tar listings, flattening, SIGKILL recovery."""

from __future__ import annotations

import io
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
from tests.unit.layer.layer_helpers import entry, make_tar, tree

from mason.layer import Snapshotter, overlay_supported
from mason.layer.apply import apply_layer


@pytest.fixture
def overlay_root(tmp_path: Path) -> Path:
    root = tmp_path / "snapshots"
    root.mkdir()
    reason = overlay_supported(str(root))
    if reason is not None:
        pytest.skip(f"overlayfs not usable here: {reason}")
    return root


def _tar_listing(data: bytes, tmp_path: Path) -> dict[str, str]:
    """name -> 'mode-string uid/gid [-> target]' as GNU tar lists it."""
    path = tmp_path / "layer.tar"
    path.write_bytes(data)
    out = subprocess.run(
        ["tar", "--numeric-owner", "--full-time", "-tvf", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    listing: dict[str, str] = {}
    for line in out.splitlines():
        fields = line.split(None, 5)
        mode, owner, name = fields[0], fields[1], fields[5]
        if " link to " in name:
            name, target = name.split(" link to ", 1)
            listing[name.rstrip("/")] = f"{mode} {owner} link to {target}"
        elif " -> " in name:
            name, target = name.split(" -> ", 1)
            listing[name.rstrip("/")] = f"{mode} {owner} -> {target}"
        else:
            listing[name.rstrip("/")] = f"{mode} {owner}"
    return listing


def _base_layer() -> io.BytesIO:
    return make_tar(
        (entry("etc/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("etc/passwd", mode=0o644), b"root:x:0:0::/root:/bin/sh\n"),
        (entry("etc/hosts", mode=0o644), b"127.0.0.1 localhost\n"),
        (entry("etc/shadow", mode=0o640, uid=0, gid=42), b"root:*:\n"),
        (entry("bin/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("bin/busybox", mode=0o755), b"\x7fELF fake"),
        (entry("bin/sh", tarfile.SYMTYPE, linkname="busybox", mode=0o777), None),
        (entry("bin/ash", tarfile.LNKTYPE, linkname="bin/busybox"), None),
        (entry("cache/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("cache/a", mode=0o644), b"a"),
        (entry("cache/sub/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("cache/sub/b", mode=0o644), b"b"),
        (entry("olddir/", tarfile.DIRTYPE, mode=0o750, uid=5, gid=6), None),
        (entry("olddir/file", mode=0o600, uid=5, gid=6), b"moved along"),
        (entry("home/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("home/user/", tarfile.DIRTYPE, mode=0o700, uid=1000, gid=1000), None),
    )


def test_overlay_step_diff_has_the_changes_as_oci_whiteouts(
    overlay_root: Path, tmp_path: Path
) -> None:
    snap = Snapshotter(str(overlay_root))
    assert snap.mode == "overlay"
    base, _ = snap.apply_layer([], _base_layer())
    assert snap.info(base).kind == "diff"

    with snap.prepare([base]) as active:
        root = Path(active.path)
        assert (root / "etc" / "passwd").read_text().startswith("root")
        assert os.lstat(root / "bin" / "ash").st_ino == os.lstat(root / "bin" / "busybox").st_ino
        (root / "etc" / "hosts").unlink()  # deletion
        shutil.rmtree(root / "cache")  # rm -rf + recreate: opaque
        (root / "cache").mkdir()
        (root / "cache" / "fresh").write_text("new")
        subprocess.run(["mv", str(root / "olddir"), str(root / "newdir")], check=True)  # dir rename
        os.rename(root / "etc" / "passwd", root / "etc" / "passwd.bak")  # file rename
        (root / "etc" / "passwd").write_text(
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n"
        )
        os.link(root / "etc" / "passwd", root / "etc" / "passwd.link")  # hardlink in the layer
        os.symlink("../etc/passwd", root / "home" / "user" / "pw")  # symlink
        os.chmod(root / "bin" / "busybox", 0o4755)  # mode change only
        os.chown(root / "etc" / "shadow", 0, 0)  # owner change only
        (root / "home" / "user" / "script").write_text("#!/bin/sh\n")
        os.chown(root / "home" / "user" / "script", 1000, 1000)
        os.chmod(root / "home" / "user" / "script", 0o750)
        step = snap.commit(active)

    buf = io.BytesIO()
    info = snap.write_layer(step, buf, source_date_epoch=0)
    data = buf.getvalue()
    assert info.size == len(data)
    listing = _tar_listing(data, tmp_path)
    assert listing == {
        "bin": "drwxr-xr-x 0/0",
        # busybox was copied up (chmod) and so lost its hardlink with ash: a plain file.
        "bin/busybox": "-rwsr-xr-x 0/0",
        "cache": "drwxr-xr-x 0/0",
        "cache/.wh..wh..opq": "---------- 0/0",
        "cache/fresh": "-rw-r--r-- 0/0",
        "etc": "drwxr-xr-x 0/0",
        "etc/.wh.hosts": "---------- 0/0",
        "etc/passwd": "-rw-r--r-- 0/0",
        "etc/passwd.bak": "-rw-r--r-- 0/0",
        "etc/passwd.link": "hrw-r--r-- 0/0 link to etc/passwd",
        "etc/shadow": "-rw-r----- 0/0",
        "home": "drwxr-xr-x 0/0",
        "home/user": "drwx------ 1000/1000",
        "home/user/pw": "lrwxrwxrwx 0/0 -> ../etc/passwd",
        "home/user/script": "-rwxr-x--- 1000/1000",
        "newdir": "drwxr-x--- 5/6",
        "newdir/file": "-rw------- 5/6",
        ".wh.olddir": "---------- 0/0",
    }
    # Deterministic: the same snapshot gives the same bytes.
    again = io.BytesIO()
    assert snap.write_layer(step, again, source_date_epoch=0) == info
    assert again.getvalue() == data

    # The layer means the same thing when applied flat (copy mode) on the base:
    # the merged overlay view and the flat result are the same tree.
    flat = tmp_path / "flat"
    flat.mkdir()
    apply_layer(_base_layer(), str(flat), mode="flat")
    apply_layer(io.BytesIO(data), str(flat), mode="flat")
    with snap.view([base, step]) as view:
        assert tree(view) == tree(str(flat))
        assert not os.path.exists(os.path.join(view, "cache", "a"))


def test_pulled_layers_with_whiteouts_mount_like_the_flat_tree(
    overlay_root: Path, tmp_path: Path
) -> None:
    snap = Snapshotter(str(overlay_root))
    base, _ = snap.apply_layer([], _base_layer())
    second = make_tar(
        (entry("etc/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("etc/.wh.hosts"), b""),
        (entry("cache/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("cache/.wh..wh..opq"), b""),
        (entry("cache/only"), b"o"),
        (entry(".wh.olddir"), b""),
        (entry("olddir/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("olddir/again"), b"again"),
    )
    top, _ = snap.apply_layer([base], second)
    flat = tmp_path / "flat"
    flat.mkdir()
    apply_layer(_base_layer(), str(flat), mode="flat")
    second.seek(0)
    apply_layer(second, str(flat), mode="flat")
    with snap.view([base, top]) as view:
        assert tree(view) == tree(str(flat))
        assert sorted(os.listdir(os.path.join(view, "olddir"))) == ["again"]
    # Re-tarring the overlay diff gives the whiteouts back.
    buf = io.BytesIO()
    snap.write_layer(top, buf)
    names = set(_tar_listing(buf.getvalue(), tmp_path))
    assert {"etc/.wh.hosts", "cache/.wh..wh..opq", "olddir/.wh..wh..opq"} <= names


def test_a_whiteout_with_nothing_below_leaves_no_entry(overlay_root: Path) -> None:
    """A layer that makes directory ``new`` and deletes ``new/x`` and ``etc/hosts``: where
    ``new/x`` is nothing below, overlayfs would list a whiteout device in ``new`` (a
    directory only this layer holds) that nothing can open; it is left out, as the flat
    tree has nothing there, and that snapshot then holds on its parents only."""
    snap = Snapshotter(str(overlay_root))
    base, _ = snap.apply_layer([], _base_layer())
    layer = make_tar(
        (entry("new/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("new/.wh.x"), b""),
        (entry("etc/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("etc/.wh.hosts"), b""),
    )
    top, _ = snap.apply_layer([base], layer)
    with snap.view([base, top]) as view:
        assert os.listdir(os.path.join(view, "new")) == []
        assert "hosts" not in os.listdir(os.path.join(view, "etc"))
    assert snap.info(top).parents == (base,)  # valid on this chain only
    plain = make_tar(
        (entry("etc/", tarfile.DIRTYPE, mode=0o755), None), (entry("etc/.wh.hosts"), b"")
    )
    shared, _ = snap.apply_layer([base], plain)
    assert snap.info(shared).parents == ()  # every whiteout hid something: any chain


def test_long_stacks_are_flattened_to_fit_one_mount(tmp_path: Path) -> None:
    # A long root path makes every lowerdir long, so ~20 layers overflow the
    # one-page option string and force flattening.
    root = tmp_path / ("d" * 200) / ("e" * 200)
    root.mkdir(parents=True)
    if overlay_supported(str(root)) is not None:
        pytest.skip("overlayfs not usable here")
    snap = Snapshotter(str(root))
    chain: list[str] = []
    for i in range(20):
        members: list[tuple[tarfile.TarInfo, bytes | None]] = [(entry(f"f{i}"), str(i).encode())]
        if i:
            members.append((entry(f".wh.f{i - 1}"), b""))
        sid, _ = snap.apply_layer(chain, make_tar(*members))
        chain.append(sid)
    with snap.prepare(chain) as active:
        assert sorted(os.listdir(active.path)) == ["f19"]
        Path(active.path, "top").write_text("t")
        top = snap.commit(active)
    assert any(s.id.startswith("f") and s.kind == "full" for s in snap.snapshots())
    with snap.view([*chain, top]) as view:
        assert sorted(os.listdir(view)) == ["f19", "top"]
    buf = io.BytesIO()
    snap.write_layer(top, buf)
    assert _tar_listing(buf.getvalue(), tmp_path).keys() == {"top"}


def test_sigkill_during_a_step_leaves_garbage_that_the_next_open_removes(
    overlay_root: Path,
) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from mason.layer import Snapshotter
        snap = Snapshotter({str(overlay_root)!r})
        active = snap.prepare([])
        Path(active.path, "half-written").write_text("x" * 100000)
        print(active.path, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        merged = proc.stdout.readline().strip() if proc.stdout else ""
        assert merged, "child did not prepare a snapshot"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert os.path.ismount(merged)  # the killed process' mount is still there
    snap = Snapshotter(str(overlay_root))
    assert not os.path.exists(merged)
    with open("/proc/self/mountinfo") as f:
        assert str(overlay_root) not in f.read()
    assert os.listdir(overlay_root / ".active") == []
    assert snap.snapshots() == []
    # And the root works as before.
    with snap.prepare([]) as active:
        Path(active.path, "ok").write_text("ok")
        sid = snap.commit(active)
    assert stat.S_ISREG(os.lstat(Path(snap.info(sid).path, "ok")).st_mode)
