"""Deterministic layer tars: order, metadata, clamping, hardlinks, whiteouts, tree diffs."""

from __future__ import annotations

import io
import os
import shutil
import socket
import tarfile
from pathlib import Path

import pytest
from tests.unit.layer.layer_helpers import tar_members

from mason.digest import HashingWriter
from mason.layer import LayerError
from mason.layer._fs import copy_tree
from mason.layer.diff import _TarStream, write_diff_tar, write_dir_tar, write_tree_diff_tar

is_root = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not is_root, reason="whiteout devices and trusted.* xattrs need root"
)


def _populate(root: str, order: list[str]) -> None:
    os.makedirs(os.path.join(root, "etc", "conf.d"))
    for name in order:
        with open(os.path.join(root, "etc", name), "w") as f:
            f.write(name * 3)
    os.symlink("etc/a", os.path.join(root, "link"))
    os.chmod(os.path.join(root, "etc", "a"), 0o4755)
    with open(os.path.join(root, "etc", "conf.d", "x.conf"), "w") as f:
        f.write("x")


def _tar(fn: object, *args: object, **kwargs: object) -> tuple[bytes, object]:
    buf = io.BytesIO()
    info = fn(*args, buf, **kwargs)  # type: ignore[operator]
    return buf.getvalue(), info


def test_same_tree_gives_same_bytes_whatever_the_creation_order(
    tmp_path: pytest.TempPathFactory,
) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")  # type: ignore[operator]
    _populate(a, ["a", "b", "c", "B", "a-b"])
    _populate(b, ["a-b", "c", "B", "b", "a"])
    data_a, info_a = _tar(write_dir_tar, a, source_date_epoch=1_000_000)
    data_b, info_b = _tar(write_dir_tar, b, source_date_epoch=1_000_000)
    assert data_a == data_b
    assert info_a == info_b
    names = [m.name for m in tar_members(data_a)]
    assert names == [
        "etc",
        "etc/B",
        "etc/a",
        "etc/a-b",
        "etc/b",
        "etc/c",
        "etc/conf.d",
        "etc/conf.d/x.conf",
        "link",
    ]
    import hashlib

    assert info_a.diff_id == "sha256:" + hashlib.sha256(data_a).hexdigest()  # type: ignore[attr-defined]
    assert info_a.size == len(data_a)  # type: ignore[attr-defined]


def test_metadata_kept_and_mtimes_clamped(tmp_path: pytest.TempPathFactory) -> None:
    root = str(tmp_path)
    os.mkdir(os.path.join(root, "d"), 0o750)
    path = os.path.join(root, "d", "f")
    with open(path, "w") as f:
        f.write("hello")
    if is_root:
        os.chown(path, 1234, 5678)
    os.chmod(path, 0o2711)
    os.setxattr(path, "user.comment", b"\xff\x00binary")
    if is_root:
        os.setxattr(path, "trusted.overlay.origin", b"x")
    os.utime(path, (2_000_000_000, 2_000_000_000))
    old = os.path.join(root, "d", "old")
    with open(old, "w") as f:
        f.write("old")
    os.utime(old, (100, 100))
    data, _ = _tar(write_dir_tar, root, source_date_epoch=1_500_000_000)
    members = {m.name: m for m in tar_members(data)}
    f_member = members["d/f"]
    assert f_member.mode == 0o2711
    assert f_member.mtime == 1_500_000_000
    assert members["d/old"].mtime == 100
    assert f_member.uname == "" and f_member.gname == ""
    assert (
        f_member.pax_headers["SCHILY.xattr.user.comment"].encode("utf-8", "surrogateescape")
        == b"\xff\x00binary"
    )
    assert not any("overlay" in k for k in f_member.pax_headers)
    if is_root:
        assert (f_member.uid, f_member.gid) == (1234, 5678)
    assert members["d"].isdir() and members["d"].mode == 0o750
    # Without a clamp the real mtime is kept.
    data2, _ = _tar(write_dir_tar, root)
    assert {m.name: m for m in tar_members(data2)}["d/f"].mtime == 2_000_000_000


def test_hardlinks_become_tar_hardlinks_and_sockets_are_skipped(
    tmp_path: pytest.TempPathFactory,
) -> None:
    root = str(tmp_path)
    with open(os.path.join(root, "b"), "w") as f:
        f.write("data")
    os.link(os.path.join(root, "b"), os.path.join(root, "a"))
    os.link(os.path.join(root, "b"), os.path.join(root, "c"))
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(os.path.join(root, "sock"))
        data, _ = _tar(write_dir_tar, root)
    finally:
        sock.close()
    members = tar_members(data)
    assert [(m.name, m.type, m.linkname) for m in members] == [
        ("a", tarfile.REGTYPE, ""),
        ("b", tarfile.LNKTYPE, "a"),
        ("c", tarfile.LNKTYPE, "a"),
    ]
    assert members[0].size == 4


@needs_root
def test_overlay_whiteouts_and_opaque_dirs_become_oci_whiteouts(
    tmp_path: pytest.TempPathFactory,
) -> None:
    upper = str(tmp_path)
    os.mknod(os.path.join(upper, "gone"), 0o020000, os.makedev(0, 0))
    os.makedirs(os.path.join(upper, "dir", "sub"))
    os.setxattr(os.path.join(upper, "dir"), "trusted.overlay.opaque", b"y")
    os.setxattr(os.path.join(upper, "dir", "sub"), "user.overlay.opaque", b"y")
    with open(os.path.join(upper, "dir", "!first"), "w") as f:
        f.write("1")
    os.mknod(os.path.join(upper, "dir", "deleted"), 0o020000, os.makedev(0, 0))
    os.mknod(os.path.join(upper, "tty"), 0o020644, os.makedev(5, 0))  # a real device stays one
    with open(os.path.join(upper, "xgone"), "w"):  # overlayfs' xattr form of a whiteout
        pass
    os.setxattr(os.path.join(upper, "xgone"), "user.overlay.whiteout", b"")
    os.mkdir(os.path.join(upper, "kept"))
    os.setxattr(os.path.join(upper, "kept"), "trusted.overlay.opaque", b"x")  # only "y" is opaque
    data, _ = _tar(write_diff_tar, upper, source_date_epoch=0)
    got = [(m.name, m.type) for m in tar_members(data)]
    assert got == [
        (".wh.gone", tarfile.REGTYPE),
        (".wh.xgone", tarfile.REGTYPE),
        ("dir", tarfile.DIRTYPE),
        ("dir/.wh..wh..opq", tarfile.REGTYPE),
        ("dir/!first", tarfile.REGTYPE),
        ("dir/.wh.deleted", tarfile.REGTYPE),
        ("dir/sub", tarfile.DIRTYPE),
        ("dir/sub/.wh..wh..opq", tarfile.REGTYPE),
        ("kept", tarfile.DIRTYPE),
        ("tty", tarfile.CHRTYPE),
    ]
    for m in tar_members(data):
        assert not any("overlay" in key for key in m.pax_headers)
    # The plain-tree writer keeps devices as they are.
    plain, _ = _tar(write_dir_tar, upper)
    assert ("gone", tarfile.CHRTYPE) in [(m.name, m.type) for m in tar_members(plain)]


@needs_root
def test_overlay_redirects_are_refused(tmp_path: pytest.TempPathFactory) -> None:
    os.mkdir(tmp_path / "moved")  # type: ignore[operator]
    os.setxattr(str(tmp_path / "moved"), "trusted.overlay.redirect", b"/orig")  # type: ignore[operator]
    with pytest.raises(LayerError, match="redirect"):
        _tar(write_diff_tar, str(tmp_path))


def test_reserved_whiteout_names_in_a_tree_are_refused(tmp_path: pytest.TempPathFactory) -> None:
    open(os.path.join(str(tmp_path), ".wh.sneaky"), "w").close()
    with pytest.raises(LayerError, match="reserved for whiteouts"):
        _tar(write_dir_tar, str(tmp_path))


def _base_tree(root: str) -> None:
    os.makedirs(os.path.join(root, "etc", "old"))
    os.makedirs(os.path.join(root, "usr", "bin"))
    os.makedirs(os.path.join(root, "var", "lib", "deep"))
    for rel, text in {
        "etc/passwd": "root:x:0:0",
        "etc/hosts": "127.0.0.1",
        "etc/old/a": "a",
        "usr/bin/tool": "#!tool",
        "var/lib/deep/keep": "k",
        "replace-me": "file",
    }.items():
        with open(os.path.join(root, rel), "w") as f:
            f.write(text)


def test_tree_diff_writes_changes_whiteouts_and_needed_parents_only(
    tmp_path: pytest.TempPathFactory,
) -> None:
    lower, upper = str(tmp_path / "lower"), str(tmp_path / "upper")  # type: ignore[operator]
    os.mkdir(lower)
    os.mkdir(upper)
    _base_tree(lower)
    copy_tree(lower, upper)
    # Nothing changed: an empty layer.
    data, _ = _tar(write_tree_diff_tar, lower, upper)
    assert tar_members(data) == []
    with open(os.path.join(upper, "etc", "passwd"), "a") as f:
        f.write("\nuser:x:1000:1000")
    os.unlink(os.path.join(upper, "etc", "hosts"))
    shutil.rmtree(os.path.join(upper, "etc", "old"))
    os.chmod(os.path.join(upper, "usr", "bin", "tool"), 0o755)
    os.makedirs(os.path.join(upper, "var", "lib", "deep", "new"))
    os.unlink(os.path.join(upper, "replace-me"))
    os.makedirs(os.path.join(upper, "replace-me", "inside"))
    data, _ = _tar(write_tree_diff_tar, lower, upper, source_date_epoch=0)
    assert [m.name for m in tar_members(data)] == [
        "etc",
        "etc/.wh.hosts",
        "etc/.wh.old",
        "etc/passwd",
        "replace-me",
        "replace-me/inside",
        "usr",
        "usr/bin",
        "usr/bin/tool",
        "var",
        "var/lib",
        "var/lib/deep",
        "var/lib/deep/new",
    ]
    # Same bytes as the whole tree when there is no lower.
    assert _tar(write_tree_diff_tar, None, upper)[0] == _tar(write_dir_tar, upper)[0]


def test_tree_diff_sees_same_size_same_second_content_changes(
    tmp_path: pytest.TempPathFactory,
) -> None:
    lower, upper = str(tmp_path / "lower"), str(tmp_path / "upper")  # type: ignore[operator]
    os.mkdir(lower)
    os.mkdir(upper)
    for root, text in ((lower, "aaaa"), (upper, "bbbb")):
        path = os.path.join(root, "f")
        with open(path, "w") as f:
            f.write(text)
        os.utime(path, (1000, 1000))
    data, _ = _tar(write_tree_diff_tar, lower, upper)
    assert [m.name for m in tar_members(data)] == ["f"]


def test_tree_diff_writes_every_name_of_a_changed_hard_link(tmp_path: Path) -> None:
    """A new name for an unchanged file: both names go in the layer, linked (as overlay's copy-up does)."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for d in (lower, upper):
        (d / "bin").mkdir(parents=True)
        (d / "bin" / "tool").write_bytes(b"ELF")
        os.utime(d / "bin" / "tool", ns=(10**9, 10**9))
        (d / "other").write_text("o")
        os.utime(d / "other", ns=(10**9, 10**9))
    os.link(upper / "bin" / "tool", upper / "alias")
    buf = io.BytesIO()
    write_tree_diff_tar(str(lower), str(upper), buf)
    members = {m.name: m for m in tar_members(buf.getvalue())}
    assert sorted(members) == ["alias", "bin", "bin/tool"]
    assert members["alias"].isfile() and members["bin/tool"].islnk()
    assert members["bin/tool"].linkname == "alias"


def test_tree_diff_trusts_untouched_copies_and_checks_touched_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from mason.layer import diff as diff_mod

    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for d in (lower, upper):
        d.mkdir()
        for name in ("same", "rewritten"):
            (d / name).write_bytes(b"aaaa")
            os.utime(
                d / name, ns=(10**9, 10**9)
            )  # whole seconds: size and mtime alone prove nothing
    mark = time.time_ns()
    time.sleep(0.02)
    (upper / "rewritten").write_bytes(b"bbbb")  # same size ...
    os.utime(upper / "rewritten", ns=(10**9, 10**9))  # ... and the old mtime put back
    compared: list[str] = []
    real = diff_mod._same_bytes
    monkeypatch.setattr(
        diff_mod, "_same_bytes", lambda a, b: compared.append(os.path.basename(b)) or real(a, b)
    )
    buf = io.BytesIO()
    write_tree_diff_tar(str(lower), str(upper), buf, copied_before_ns=mark)
    assert [m.name for m in tar_members(buf.getvalue())] == ["rewritten"]
    assert compared == ["rewritten"]


def test_clamp_tar_times_clamps_later_times_and_keeps_the_rest() -> None:
    import io
    import tarfile

    from mason.digest import sha256_bytes
    from mason.layer.diff import clamp_tar_times

    src = io.BytesIO()
    with tarfile.open(fileobj=src, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, mtime in (("old", 100), ("new", 5000), ("exact", 1000)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.uid, info.mode = 1, mtime, 7, 0o640
            info.pax_headers = {"SCHILY.xattr.user.k": "v", "atime": f"{mtime}.5"}
            tf.addfile(info, io.BytesIO(b"x"))
        link = tarfile.TarInfo("link")
        link.type, link.linkname, link.mtime = tarfile.LNKTYPE, "old", 9000
        tf.addfile(link)
    dst = io.BytesIO()
    info = clamp_tar_times(io.BytesIO(src.getvalue()), dst, 1000)
    assert info.diff_id == sha256_bytes(dst.getvalue()) and info.size == len(dst.getvalue())
    with tarfile.open(fileobj=io.BytesIO(dst.getvalue())) as tf:
        got = {m.name: m for m in tf.getmembers()}
        assert tf.extractfile("new").read() == b"x"  # type: ignore[union-attr]
    assert {n: m.mtime for n, m in got.items()} == {
        "old": 100,
        "new": 1000,
        "exact": 1000,
        "link": 1000,
    }
    assert got["old"].pax_headers["atime"] == "100.5"  # earlier than the epoch: kept
    assert got["new"].pax_headers["atime"] == "1000"
    assert got["new"].uid == 7 and got["new"].mode == 0o640
    assert got["new"].pax_headers["SCHILY.xattr.user.k"] == "v"
    assert got["link"].islnk() and got["link"].linkname == "old"


def _tarfile_rewrite(data: bytes) -> bytes:
    """``data`` read and written again by tarfile's own PAX writer, as mason's dialect is."""
    out = io.BytesIO()
    with (
        tarfile.open(
            fileobj=io.BytesIO(data), mode="r:", encoding="utf-8", errors="surrogateescape"
        ) as src,
        tarfile.TarFile(
            fileobj=out, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
            errors="surrogateescape",
        ) as dst,
    ):  # fmt: skip
        for member in src:
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)
    return out.getvalue()


def test_layer_tars_are_the_bytes_tarfiles_pax_writer_gives(tmp_path: Path) -> None:
    """Headers mason encodes itself and those it leaves to tarfile, file bodies, padding and
    the end of the archive: byte for byte what tarfile writes (the same diff IDs as before)."""
    root = tmp_path / "root"
    (root / "d" / ("deep" * 30)).mkdir(parents=True)  # a name longer than a ustar field
    for size in (0, 1, 511, 512, 513, 70_000, 1_100_000):  # more than a gather, a chunk
        (root / "d" / f"f{size}").write_bytes(os.urandom(size))
    (root / "ünï").write_text("u")
    os.symlink("x" * 150, root / "long-link")
    os.link(root / "d" / "f1", root / "hard")
    os.mkfifo(root / "fifo")
    os.setxattr(root / "d" / "f0", "user.note", b"kept")
    os.utime(root / "d" / "f1", (0, 8**11 + 5))  # beyond a ustar mtime
    if is_root:
        os.chown(root / "d" / "f511", 3_000_000, 7)  # beyond a ustar uid
    data, _ = _tar(write_dir_tar, str(root))
    assert len(tar_members(data)) == 13
    assert data == _tarfile_rewrite(data)
    assert len(data) % tarfile.RECORDSIZE == 0


def test_a_file_is_tarred_at_the_size_it_had_when_listed() -> None:
    """A file that grew after its lstat gives the bytes its header counts; one that shrank
    fails the layer rather than give a tar whose next header is file data."""
    info = tarfile.TarInfo("f")
    info.size = 10
    out = io.BytesIO()
    stream = _TarStream(HashingWriter(out))
    stream.add(info, io.BytesIO(b"0123456789-grown").read)
    stream.close()
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        member = tf.next()
        assert member is not None and member.size == 10
        body = tf.extractfile(member)
        assert body is not None and body.read() == b"0123456789"
    with pytest.raises(OSError, match="unexpected end of data"):
        _TarStream(HashingWriter(io.BytesIO())).add(info, io.BytesIO(b"0123").read)
