"""Safe application of layer tars: malicious tars are rejected and write nothing outside."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from tests.unit.layer.layer_helpers import entry, make_tar, tree

from mason.layer import LayerError, apply_layer, write_dir_tar

is_root = os.geteuid() == 0
needs_root = pytest.mark.skipif(not is_root, reason="devices, owners and trusted.* xattrs need root")


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[str, str]:
    """(root to apply into, a sibling 'outside' directory with a decoy file)."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("do not touch")
    return str(root), str(outside)


def _outside_state(tmp_path: Path) -> dict[str, tuple[object, ...]]:
    state = tree(str(tmp_path))
    return {k: v for k, v in state.items() if not k.startswith("root")}


MALICIOUS: dict[str, list[tuple[tarfile.TarInfo, bytes | None]]] = {
    "dotdot": [(entry("../outside/evil"), b"x")],
    "dotdot-deep": [(entry("a/", tarfile.DIRTYPE, mode=0o755), None), (entry("a/../../outside/evil"), b"x")],
    "absolute": [(entry("/tmp/mason-evil-absolute"), b"x")],
    "symlink-absolute-parent": [
        (entry("link", tarfile.SYMTYPE, linkname="OUTSIDE"), None),
        (entry("link/evil"), b"x"),
    ],
    "symlink-relative-parent": [
        (entry("link", tarfile.SYMTYPE, linkname="../outside"), None),
        (entry("link/evil"), b"x"),
    ],
    "symlink-nested-relative-parent": [
        (entry("a/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("a/up", tarfile.SYMTYPE, linkname="../../outside"), None),
        (entry("a/up/evil"), b"x"),
    ],
    "symlink-then-dir-entry": [
        (entry("link", tarfile.SYMTYPE, linkname="../outside"), None),
        (entry("link/sub/", tarfile.DIRTYPE, mode=0o755), None),
    ],
    "hardlink-dotdot": [(entry("hl", tarfile.LNKTYPE, linkname="../outside/secret"), None)],
    "hardlink-absolute": [(entry("hl", tarfile.LNKTYPE, linkname="OUTSIDE/secret"), None)],
    "hardlink-through-symlink": [
        (entry("link", tarfile.SYMTYPE, linkname="../outside"), None),
        (entry("hl", tarfile.LNKTYPE, linkname="link/secret"), None),
    ],
    "hardlink-missing": [(entry("hl", tarfile.LNKTYPE, linkname="nothing-here"), None)],
    "whiteout-dotdot-path": [(entry("../outside/.wh.secret"), b"")],
    "whiteout-of-dot": [(entry(".wh.."), b"")],
    "whiteout-of-dotdot": [(entry("a/.wh..."), b"")],
    "whiteout-empty-name": [(entry(".wh."), b"")],
    "whiteout-through-symlink": [
        (entry("link", tarfile.SYMTYPE, linkname="../outside"), None),
        (entry("link/.wh.secret"), b""),
    ],
    "whiteout-directory": [(entry(".wh.thing/", tarfile.DIRTYPE), None)],
    "whiteout-as-parent": [(entry(".wh.thing/file"), b"x")],
    "whiteout-of-own-file": [(entry("f"), b"x"), (entry(".wh.f"), b"")],
    "opaque-through-symlink": [
        (entry("link", tarfile.SYMTYPE, linkname="../outside"), None),
        (entry("link/.wh..wh..opq"), b""),
    ],
}


@pytest.mark.parametrize("mode", ["flat", "overlay"])
@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_tar_is_rejected_and_nothing_leaves_the_root(
    case: str, mode: str, dirs: tuple[str, str], tmp_path: Path
) -> None:
    if mode == "overlay" and not is_root:
        pytest.skip("overlay whiteouts are device nodes")
    root, outside = dirs
    members = []
    for info, data in MALICIOUS[case]:
        info.name = info.name.replace("OUTSIDE", outside)
        info.linkname = info.linkname.replace("OUTSIDE", outside)
        members.append((info, data))
    before = _outside_state(tmp_path)
    with pytest.raises(LayerError) as excinfo:
        apply_layer(make_tar(*members), root, mode=mode)  # type: ignore[arg-type]
    message = str(excinfo.value)
    assert "layer" in message
    # The error names the entry it rejected.
    assert any(m[0].name.strip("/") in message for m in members)
    assert _outside_state(tmp_path) == before
    assert not os.path.exists("/tmp/mason-evil-absolute")
    for dirpath, _dirs, files in os.walk(str(tmp_path)):
        assert "evil" not in files, dirpath


def test_device_nodes_rejected_unless_allowed(dirs: tuple[str, str], tmp_path: Path) -> None:
    root, _ = dirs
    dev = entry("dev/null", tarfile.CHRTYPE, mode=0o666)
    dev.devmajor, dev.devminor = 1, 3
    tar = make_tar((entry("dev/", tarfile.DIRTYPE, mode=0o755), None), (dev, None))
    with pytest.raises(LayerError, match="device nodes") as excinfo:
        apply_layer(tar, root, allow_devices=False)
    assert "dev/null" in str(excinfo.value)
    assert not os.path.lexists(os.path.join(root, "dev", "null"))
    if is_root:
        tar.seek(0)
        apply_layer(tar, root, allow_devices=True)
        st = os.lstat(os.path.join(root, "dev", "null"))
        assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3


def test_corrupt_tar_is_a_layer_error(dirs: tuple[str, str]) -> None:
    root, _ = dirs
    data = make_tar((entry("f"), b"x" * 2000)).getvalue()
    with pytest.raises(LayerError, match="corrupt layer tar"):
        apply_layer(io.BytesIO(data[:1200]), root)


def test_round_trip_through_a_tar_keeps_the_tree(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "tool").write_text("#!/bin/sh\n")
    os.chmod(src / "bin" / "tool", 0o4755)
    (src / "data").write_bytes(b"\x00" * 5000)
    os.link(src / "data", src / "data-link")
    os.symlink("bin/tool", src / "tool")
    os.symlink("/absolute/target", src / "dangling")
    os.mkfifo(src / "fifo")
    os.setxattr(src / "data", "user.mark", b"v")
    if is_root:
        os.chown(src / "bin", 42, 43, follow_symlinks=False)
        os.chown(src / "tool", 44, 45, follow_symlinks=False)
    os.utime(src / "bin", (12345, 12345))
    buf = io.BytesIO()
    written = write_dir_tar(str(src), buf)
    buf.seek(0)
    dst = tmp_path / "dst"
    dst.mkdir()
    read = apply_layer(buf, str(dst))
    assert read == written
    assert tree(str(dst)) == tree(str(src))
    assert os.lstat(dst / "data").st_ino == os.lstat(dst / "data-link").st_ino
    assert os.getxattr(dst / "data", "user.mark") == b"v"
    assert os.lstat(dst / "bin").st_mtime == 12345


def test_flat_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc" / "old").mkdir(parents=True)
    (root / "etc" / "old" / "x").write_text("x")
    (root / "etc" / "keep").write_text("k")
    (root / "opaque" / "sub").mkdir(parents=True)
    (root / "opaque" / "lower-file").write_text("l")
    (root / "opaque" / "sub" / "lower").write_text("l")
    tar = make_tar(
        (entry("etc/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("etc/.wh.old"), b""),
        (entry("etc/.wh.never-existed"), b""),
        (entry("missing-dir/.wh.x"), b""),
        (entry("opaque/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("opaque/sub/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("opaque/sub/new"), b"n"),
        # A marker after some of the layer's own entries clears only the lower content.
        (entry("opaque/.wh..wh..opq"), b""),
        (entry("opaque/after"), b"a"),
        (entry(".wh..wh.plnk"), b""),  # AUFS metadata is ignored
    )
    apply_layer(tar, str(root), mode="flat")
    assert sorted(tree(str(root))) == [
        "etc",
        "etc/keep",
        "opaque",
        "opaque/after",
        "opaque/sub",
        "opaque/sub/new",
    ]


@needs_root
def test_overlay_mode_records_whiteouts_as_overlayfs_does(tmp_path: Path) -> None:
    root = tmp_path / "snap"
    root.mkdir()
    tar = make_tar(
        (entry("etc/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("etc/.wh.hosts"), b""),
        (entry("opaque/", tarfile.DIRTYPE, mode=0o700, uid=7, gid=8), None),
        (entry("opaque/.wh..wh..opq"), b""),
        (entry("opaque/new"), b"n"),
        (entry(".wh.gone"), b""),
        (entry("gone/", tarfile.DIRTYPE, mode=0o755), None),  # deleted, then a new directory
        (entry("f", mode=0o640), b"data"),
    )
    apply_layer(tar, str(root), mode="overlay")
    hosts = os.lstat(root / "etc" / "hosts")
    assert stat.S_ISCHR(hosts.st_mode) and hosts.st_rdev == 0
    assert os.getxattr(root / "opaque", "trusted.overlay.opaque") == b"y"
    assert os.lstat(root / "opaque").st_uid == 7
    assert os.getxattr(root / "gone", "trusted.overlay.opaque") == b"y"
    assert (root / "opaque" / "new").read_text() == "n"
    assert stat.S_IMODE(os.lstat(root / "f").st_mode) == 0o640


def test_xattrs_steering_overlayfs_are_dropped(tmp_path: Path) -> None:
    info = entry("dir/", tarfile.DIRTYPE, mode=0o755)
    info.pax_headers = {
        "SCHILY.xattr.trusted.overlay.redirect": "/elsewhere",
        "SCHILY.xattr.user.overlay.opaque": "y",
        "SCHILY.xattr.user.ok": "fine",
    }
    apply_layer(make_tar((info, None)), str(tmp_path))
    names = os.listxattr(tmp_path / "dir")
    assert "user.ok" in names
    assert not any("overlay" in n for n in names)
