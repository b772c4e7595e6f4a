"""Safe application of layer tars: malicious tars are rejected and write nothing outside."""

from __future__ import annotations

import copy
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest
from tests.unit.layer.layer_helpers import entry, make_tar, tree

from mason.layer import LayerError, Snapshotter, overlay_supported
from mason.layer.apply import apply_layer
from mason.layer.diff import write_dir_tar

is_root = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not is_root, reason="devices, owners and trusted.* xattrs need root"
)


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


def _zero_device() -> tarfile.TarInfo:
    dev = entry("dev/x", tarfile.CHRTYPE, mode=0o600)
    dev.devmajor = dev.devminor = 0  # how overlayfs records a deletion, not a file
    return dev


MALICIOUS: dict[str, list[tuple[tarfile.TarInfo, bytes | None]]] = {
    "dotdot": [(entry("../outside/evil"), b"x")],
    "dotdot-deep": [
        (entry("a/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("a/../../outside/evil"), b"x"),
    ],
    "absolute": [(entry("/tmp/mason-evil-absolute"), b"x")],
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
    "whiteout-directory": [(entry(".wh.thing/", tarfile.DIRTYPE), None)],
    "whiteout-as-parent": [(entry(".wh.thing/file"), b"x")],
    "whiteout-of-own-file": [(entry("f"), b"x"), (entry(".wh.f"), b"")],
    "zero-zero-char-device": [(_zero_device(), None)],
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


# A parent through a symlink (this layer's or an earlier one's) is resolved inside the root,
# as BuildKit does: each (layer 1, layer 2) lands at the in-root target and nothing outside.
THROUGH_SYMLINKS: dict[
    str,
    tuple[
        list[tuple[tarfile.TarInfo, bytes | None]],
        list[tuple[tarfile.TarInfo, bytes | None]],
        dict[str, str],
    ],
] = {
    "absolute-parent": (
        [(entry("link", tarfile.SYMTYPE, linkname="OUTSIDE"), None)],
        [(entry("link/evil"), b"x")],
        {"link": "l", "OUTSIDE_REL/evil": "f:x"},
    ),
    "relative-parent": (
        [(entry("link", tarfile.SYMTYPE, linkname="../outside"), None)],
        [(entry("link/evil"), b"x")],
        {"link": "l", "outside/evil": "f:x"},
    ),
    "nested-relative-parent": (
        [
            (entry("a/", tarfile.DIRTYPE, mode=0o755), None),
            (entry("a/up", tarfile.SYMTYPE, linkname="../../outside"), None),
        ],
        [(entry("a/up/evil"), b"x")],
        {"a": "d", "a/up": "l", "outside/evil": "f:x"},
    ),
    "dir-entry-under-link": (
        [(entry("link", tarfile.SYMTYPE, linkname="../outside"), None)],
        [(entry("link/sub/", tarfile.DIRTYPE, mode=0o755), None)],
        {"link": "l", "outside/sub": "d"},
    ),
    "whiteout-through-link": (
        [
            (entry("link", tarfile.SYMTYPE, linkname="../outside"), None),
            (entry("outside/", tarfile.DIRTYPE, mode=0o755), None),
            (entry("outside/secret"), b"in root"),
        ],
        [(entry("link/.wh.secret"), b"")],
        {"link": "l", "outside": "d"},
    ),
    "opaque-through-link": (
        [
            (entry("link", tarfile.SYMTYPE, linkname="/usr"), None),
            (entry("usr/", tarfile.DIRTYPE, mode=0o755), None),
            (entry("usr/old"), b"old"),
        ],
        [(entry("link/.wh..wh..opq"), b""), (entry("link/new"), b"new")],
        {"link": "l", "usr": "d", "usr/new": "f:new"},
    ),
    "hardlink-through-link": (
        [
            (entry("link", tarfile.SYMTYPE, linkname="/../etc"), None),
            (entry("etc/", tarfile.DIRTYPE, mode=0o755), None),
            (entry("etc/passwd"), b"root"),
        ],
        [(entry("hl", tarfile.LNKTYPE, linkname="link/passwd"), None)],
        {"link": "l", "etc": "d", "etc/passwd": "f:root", "hl": "f:root"},
    ),
    "link-replaced-by-dir-entry": (
        [(entry("link", tarfile.SYMTYPE, linkname="../outside"), None)],
        [(entry("link/", tarfile.DIRTYPE, mode=0o755), None), (entry("link/f"), b"f")],
        {"link": "d", "link/f": "f:f"},
    ),
}


def _with_outside(info: tarfile.TarInfo, outside: str) -> tarfile.TarInfo:
    info = copy.copy(info)  # the table is shared by every parametrization
    info.linkname = info.linkname.replace("OUTSIDE", outside)
    return info


def _kinds(root: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for rel, (kind, _mode, _uid, _gid, extra) in tree(root).items():
        if kind == stat.S_IFDIR:
            result[rel] = "d"
        elif kind == stat.S_IFLNK:
            result[rel] = "l"
        else:
            assert isinstance(extra, bytes)
            result[rel] = "f:" + extra.decode()
    return result


def _apply_two(how: str, layers: list[io.BytesIO], root: Path, snaps: Path) -> dict[str, str]:
    if how == "flat":
        for tar in layers:
            apply_layer(tar, str(root), mode="flat")
        return _kinds(str(root))
    snap = Snapshotter(str(snaps), mode=how)  # type: ignore[arg-type]
    chain: list[str] = []
    for tar in layers:
        sid, _ = snap.apply_layer(chain, tar)
        chain.append(sid)
    with snap.view(chain) as view:
        return _kinds(view)


def _symlink_cases() -> list[Any]:
    """Every case in two layers, and in one layer where that is no contradiction (a layer
    deleting what it wrote itself is rejected, so whiteout cases have no one-layer form)."""
    out = []
    for case in sorted(THROUGH_SYMLINKS):
        deletes = any(".wh." in info.name for info, _ in THROUGH_SYMLINKS[case][1])
        out.append(pytest.param(case, False, id=f"{case}-earlier-layer"))
        if not deletes:
            out.append(pytest.param(case, True, id=f"{case}-same-layer"))
    return out


@pytest.mark.parametrize("how", ["flat", "copy", "overlay"])
@pytest.mark.parametrize(("case", "together"), _symlink_cases())
def test_writes_through_symlinks_land_inside_the_root(
    case: str, how: str, together: bool, dirs: tuple[str, str], tmp_path: Path
) -> None:
    if how == "overlay" and overlay_supported(str(tmp_path)) is not None:
        pytest.skip("overlayfs not usable here")
    _, outside = dirs
    first, second, expected = THROUGH_SYMLINKS[case]
    first, second = (
        [(_with_outside(info, outside), data) for info, data in layer] for layer in (first, second)
    )
    outside_rel = outside.lstrip("/")
    want = {k.replace("OUTSIDE_REL", outside_rel): v for k, v in expected.items()}
    for rel in list(want):  # the directories on the way to an entry
        parts = rel.split("/")
        for i in range(1, len(parts)):
            want.setdefault("/".join(parts[:i]), "d")
    layers = [make_tar(*first, *second)] if together else [make_tar(*first), make_tar(*second)]
    before = _outside_state(tmp_path)
    got = _apply_two(how, layers, tmp_path / "root", tmp_path / "snaps")
    assert got == want
    outside_now = {k: v for k, v in _outside_state(tmp_path).items() if not k.startswith("snaps")}
    assert outside_now == {k: v for k, v in before.items() if not k.startswith("snaps")}


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


@pytest.mark.parametrize("mode", ["flat", "overlay"])
def test_a_directory_replaced_by_a_hardlink_is_not_written_into(tmp_path: Path, mode: str) -> None:
    """Entries in one directory reuse its resolution; a hardlink that replaces that directory
    (from its parent) makes the next entry there resolve it anew: not a directory any more."""
    root = tmp_path / "root"
    root.mkdir()
    tar = make_tar(
        (entry("f"), b"f"),
        (entry("a/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("a/b/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("a/b/x"), b"x"),  # a/b is the directory last resolved
        (entry("a/b", tarfile.LNKTYPE, linkname="f"), None),
        (entry("a/b/y"), b"y"),
    )
    with pytest.raises(LayerError, match=r"not a directory|reaches into the layers below"):
        apply_layer(tar, str(root), mode=mode)  # type: ignore[arg-type]
    assert (root / "a" / "b").is_file() and not (root / "a" / "y").exists()


@needs_root
@pytest.mark.parametrize("dir_mode", [0o755, 0o2755])
def test_an_empty_root_gets_every_owner_without_asking_what_exists(
    tmp_path: Path, dir_mode: int
) -> None:
    """Overlay form into an empty root knows what each directory it made holds: entries owned
    as the process is get its owner as made, and the others (and those made where a directory's
    group, setgid or not, is not the process's) are given theirs."""
    root = tmp_path / "snap"
    root.mkdir()
    tar = make_tar(
        (entry("d/", tarfile.DIRTYPE, mode=dir_mode, uid=5, gid=1000), None),
        (entry("d/f"), b"f"),
        (entry("d/sub/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("d/sub/link", tarfile.SYMTYPE, linkname="../f"), None),
        (entry("mine/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("mine/theirs", uid=7, gid=9), b"t"),
        (entry("mine/link", tarfile.SYMTYPE, linkname="theirs"), None),
    )
    apply_layer(tar, str(root), mode="overlay")
    owners = {k: (v[2], v[3]) for k, v in tree(str(root)).items()}
    assert owners == {
        "d": (5, 1000),
        "d/f": (0, 0),
        "d/sub": (0, 0),
        "d/sub/link": (0, 0),
        "mine": (0, 0),
        "mine/theirs": (7, 9),
        "mine/link": (0, 0),
    }


@needs_root
def test_an_empty_root_replaces_what_the_layer_made_before(tmp_path: Path) -> None:
    """Names the layer itself made (entries, whiteouts) are replaced by later entries of the
    same name, as in any root."""
    root = tmp_path / "snap"
    root.mkdir()
    tar = make_tar(
        (entry("etc/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("etc/.wh.hosts"), b""),
        (entry("etc/hosts"), b"new"),  # after its own whiteout
        (entry("etc/conf"), b"first"),
        (entry("etc/conf", tarfile.SYMTYPE, linkname="hosts"), None),
        (entry("etc/d/", tarfile.DIRTYPE, mode=0o700), None),
        (entry("etc/d"), b"a file now"),
    )
    apply_layer(tar, str(root), mode="overlay")
    assert (root / "etc" / "hosts").read_text() == "new"
    assert os.readlink(root / "etc" / "conf") == "hosts"
    assert (root / "etc" / "d").read_text() == "a file now"


def test_a_root_not_empty_is_asked_what_exists(tmp_path: Path) -> None:
    """A root that holds something already (an apply onto a merged tree) is never assumed
    empty: an entry replaces what is there."""
    root = tmp_path / "snap"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hosts").write_text("old")
    apply_layer(make_tar((entry("etc/hosts"), b"new")), str(root), mode="overlay")
    assert (root / "etc" / "hosts").read_text() == "new"


def _links(directory: str, count: int, target: str = "/bin/busybox") -> list[Any]:
    return [
        (entry(f"{directory}/l{i}", tarfile.SYMTYPE, linkname=target), None) for i in range(count)
    ]


@needs_root
def test_symlinks_made_together_are_what_the_tar_says(tmp_path: Path) -> None:
    """New symlinks in directories the layer made are made together at the end, by two threads
    when there are enough: each has its target, owner and mtime, and its directory's mtime is
    the entry's (set after its links)."""
    root = tmp_path / "snap"
    root.mkdir()
    members: list[Any] = [(entry("bin/", tarfile.DIRTYPE, mode=0o755, mtime=5), None)]
    members += _links("bin", 40)
    members += [(entry("sbin/", tarfile.DIRTYPE, mode=0o755, mtime=6), None)]
    members += _links("sbin", 40, target="../bin/l0")  # each half over _PARALLEL_LINKS
    members += [(entry("sbin/owned", tarfile.SYMTYPE, linkname="x", uid=7, gid=9, mtime=77), None)]
    apply_layer(make_tar(*members), str(root), mode="overlay")
    assert sorted(os.listdir(root / "bin")) == sorted(f"l{i}" for i in range(40))
    assert os.readlink(root / "bin" / "l39") == "/bin/busybox"
    assert os.readlink(root / "sbin" / "l29") == "../bin/l0"
    owned = os.lstat(root / "sbin" / "owned")
    assert (owned.st_uid, owned.st_gid, owned.st_mtime) == (7, 9, 77)
    assert os.lstat(root / "bin" / "l3").st_mtime == 1000
    assert (os.lstat(root / "bin").st_mtime, os.lstat(root / "sbin").st_mtime) == (5, 6)


@needs_root
def test_what_needs_a_symlink_put_off_finds_it_made(tmp_path: Path) -> None:
    """An entry written through a new symlink, a hardlink to one, and an entry replacing one
    each see it as if it had been made at once."""
    root = tmp_path / "snap"
    root.mkdir()
    tar = make_tar(
        (entry("d/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("via", tarfile.SYMTYPE, linkname="d"), None),
        (entry("via/f"), b"through"),  # resolves the symlink
        (entry("s", tarfile.SYMTYPE, linkname="d/f"), None),
        (entry("hard", tarfile.LNKTYPE, linkname="s"), None),  # links the symlink itself
        (entry("gone", tarfile.SYMTYPE, linkname="nowhere"), None),
        (entry("gone"), b"a file now"),
    )
    apply_layer(tar, str(root), mode="overlay")
    assert (root / "d" / "f").read_bytes() == b"through"
    assert os.readlink(root / "hard") == "d/f"
    assert os.lstat(root / "hard").st_ino == os.lstat(root / "s").st_ino
    assert (root / "gone").read_bytes() == b"a file now"


def test_a_symlink_put_off_that_cannot_be_made_fails_as_its_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "snap"
    root.mkdir()
    real_symlink = os.symlink

    def symlink(target: str, name: str, **kw: Any) -> None:
        if name == "m33":
            raise OSError(28, "No space left on device")
        real_symlink(target, name, **kw)

    monkeypatch.setattr(os, "symlink", symlink)
    members: list[Any] = [(entry("a/", tarfile.DIRTYPE), None), *_links("a", 40)]
    members += [(entry("b/", tarfile.DIRTYPE), None)]
    members += [(entry(f"b/m{i}", tarfile.SYMTYPE, linkname="x"), None) for i in range(40)]
    with pytest.raises(LayerError, match=r"'b/m33' rejected: No space left on device"):
        apply_layer(make_tar(*members), str(root), mode="overlay")


def test_a_directory_replaced_with_its_links_put_off_goes_with_them(tmp_path: Path) -> None:
    """A file replacing a directory the layer made removes it with the symlinks put off in it,
    as if they had been made (found by the sparse-base equivalence test)."""
    root = tmp_path / "snap"
    root.mkdir()
    tar = make_tar(
        (entry("a/", tarfile.DIRTYPE, mode=0o755), None),
        (entry("a/a", tarfile.SYMTYPE, linkname="a"), None),
        (entry("a"), b"a file now"),
    )
    apply_layer(tar, str(root), mode="overlay")
    assert (root / "a").read_bytes() == b"a file now"
