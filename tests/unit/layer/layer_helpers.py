"""Helpers for the layer tests: build tars in memory, describe trees."""

from __future__ import annotations

import io
import os
import stat
import tarfile


def make_tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    buf.seek(0)
    return buf


def entry(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    *,
    linkname: str = "",
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = 1000,
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = mode
    info.uid = uid
    info.gid = gid
    info.mtime = mtime
    return info


def tree(root: str) -> dict[str, tuple[object, ...]]:
    """path -> (type, mode, uid, gid, size/target/rdev, content) for every entry under root."""
    result: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            kind = stat.S_IFMT(st.st_mode)
            extra: object = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    extra = f.read()
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                extra = st.st_rdev
            result[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, extra)
    return result


def tar_members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", errors="surrogateescape") as tf:
        return tf.getmembers()


def deletion_or_link(
    kind: str, path: str, target: str = ""
) -> tuple[tarfile.TarInfo, bytes | None]:
    """The member of a ``whiteout`` of ``path``, an ``opaque`` marker in directory ``path``,
    or a ``hardlink`` at ``path`` to ``target``."""
    if kind == "whiteout":
        head, _, base = path.rpartition("/")
        return entry(f"{head}/.wh.{base}".lstrip("/")), b""
    if kind == "opaque":
        return entry(path + "/.wh..wh..opq"), b""
    if kind == "hardlink":
        return entry(path, tarfile.LNKTYPE, linkname=target), None
    raise ValueError(f"not a deletion or a link: {kind}")
