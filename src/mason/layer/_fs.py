"""Small filesystem helpers shared by the tar writer, the applier and the snapshotter."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat

__all__ = [
    "OVERLAY_XATTR_PREFIXES",
    "copy_tree",
    "is_overlay_xattr",
    "is_whiteout_device",
    "list_xattrs",
    "nofollow_opener",
    "remove_tree",
    "sorted_names",
    "xattr_names",
]

#: xattrs overlayfs keeps for itself (trusted.* as root, user.* with ``userxattr``).
OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")

_FICLONE = 0x40049409


def is_overlay_xattr(name: str) -> bool:
    return name.startswith(OVERLAY_XATTR_PREFIXES)


def is_whiteout_device(st: os.stat_result) -> bool:
    """overlayfs marks a deleted entry with a 0/0 character device."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def xattr_names(path: str) -> list[str]:
    """The names of the entry's xattrs (symlinks not followed); none where unsupported."""
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise


def list_xattrs(
    path: str, *, include_overlay: bool = False, names: list[str] | None = None
) -> list[tuple[str, bytes]]:
    """The entry's xattrs sorted by name (symlinks not followed); ``names``: its
    ``xattr_names``, when the caller has them already."""
    result: list[tuple[str, bytes]] = []
    for name in sorted(xattr_names(path) if names is None else names):
        if not include_overlay and is_overlay_xattr(name):
            continue
        try:
            result.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError as exc:
            # Removed between list and get, or unreadable (e.g. a security.* module quirk).
            if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
    return result


def sorted_names(path: str) -> list[str]:
    """Directory entries sorted by their bytes, so order never depends on the locale."""
    return sorted(os.listdir(path), key=os.fsencode)


def remove_tree(path: str) -> None:
    """Remove ``path`` (file, symlink or tree); a missing path is fine."""
    import shutil

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, onerror=_rmtree_retry)
    else:
        os.unlink(path)


def _rmtree_retry(func: object, path: str, exc_info: object) -> None:
    # A directory without write/search permission (e.g. overlay's work/work with
    # mode 000 when we are not root) cannot be emptied; open it up and retry once.
    import shutil

    parent = os.path.dirname(path)
    with contextlib.suppress(OSError):
        os.chmod(parent, 0o700)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _copy_file_data(src: str, dst: str) -> None:
    import shutil

    with open(src, "rb", opener=nofollow_opener) as fsrc, open(dst, "xb") as fdst:
        try:
            fcntl.ioctl(fdst.fileno(), _FICLONE, fsrc.fileno())
            return
        except OSError:
            pass  # no reflinks on this filesystem: copy the bytes
        shutil.copyfileobj(fsrc, fdst, 1 << 20)


def nofollow_opener(path: str, flags: int) -> int:
    """``open``'s opener (or a plain call) that never follows a final symlink."""
    return os.open(path, flags | os.O_NOFOLLOW)


def _copy_meta(src_st: os.stat_result, src: str, dst: str, *, is_link: bool) -> None:
    if os.geteuid() == 0:
        os.chown(dst, src_st.st_uid, src_st.st_gid, follow_symlinks=False)
    if not is_link:
        os.chmod(dst, stat.S_IMODE(src_st.st_mode))
    for name, value in list_xattrs(src, include_overlay=True):
        try:
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                raise
    os.utime(dst, ns=(src_st.st_atime_ns, src_st.st_mtime_ns), follow_symlinks=False)


def copy_tree(src: str, dst: str) -> None:
    """Copy the contents of directory ``src`` into the existing directory ``dst``.

    Keeps types, modes, owners (as root), xattrs, mtimes and hardlinks within
    the tree; uses reflinks where the filesystem has them. Sockets are skipped.
    """
    links: dict[tuple[int, int], str] = {}
    dirs: list[tuple[os.stat_result, str, str]] = []

    def walk(s_dir: str, d_dir: str) -> None:
        for name in sorted_names(s_dir):
            s = os.path.join(s_dir, name)
            d = os.path.join(d_dir, name)
            st = os.lstat(s)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                os.mkdir(d, 0o700)
                walk(s, d)
                dirs.append((st, s, d))
                continue
            if not stat.S_ISDIR(mode) and st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                first = links.get(key)
                if first is not None:
                    os.link(first, d, follow_symlinks=False)
                    continue
                links[key] = d
            if stat.S_ISREG(mode):
                _copy_file_data(s, d)
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(s), d)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                os.mknod(d, mode, st.st_rdev)
            else:
                continue  # sockets belong to a running process, not to a filesystem image
            _copy_meta(st, s, d, is_link=stat.S_ISLNK(mode))

    walk(src, dst)
    # Directory metadata last: creating children changes a directory's mtime.
    for st, s, d in dirs:
        _copy_meta(st, s, d, is_link=False)
    root_st = os.lstat(src)
    _copy_meta(root_st, src, dst, is_link=False)
