"""Path handling inside a rootfs: scoped symlink resolution, mountpoint stubs, cwd.

Every path the executor touches in a rootfs goes through ``secure_join`` so
that a symlink in an image (``/etc -> /host/etc``, ``../../..``) can never
make mason create, chown or delete anything outside the rootfs.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from mason.executor.types import ExecutorError

__all__ = ["MountStubs", "ensure_directory", "secure_join"]

_MAX_LINKS = 255


def secure_join(root: Path, unsafe: str) -> Path:
    """Join ``unsafe`` onto ``root`` resolving symlinks as if ``root`` were ``/``.

    The result is always ``root`` or below it. Missing components are kept
    as they are (like filepath-securejoin), so the result may not exist.
    """
    pending = [p for p in PurePosixPath("/", unsafe).parts[1:]]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        except NotADirectoryError:
            resolved.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(part)
            continue
        links += 1
        if links > _MAX_LINKS:
            raise ExecutorError(f"too many levels of symbolic links resolving {unsafe!r} in {root}")
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        pending = [p for p in PurePosixPath(target).parts if p != "/"] + pending
    return root.joinpath(*resolved)


def ensure_directory(root: Path, path: str, uid: int, gid: int) -> list[Path]:
    """Create ``path`` (and missing parents) in ``root``; new ones get uid:gid.

    Returns the directories created, outermost first.
    """
    created: list[Path] = []
    # secure_join resolves every existing symlink, so each prefix of its
    # result is a real directory or does not exist yet.
    host = root
    for part in secure_join(root, path).relative_to(root).parts:
        host = host / part
        if os.path.lexists(host):
            if not host.is_dir() or host.is_symlink():
                raise ExecutorError(
                    f"cannot use {path!r} as a directory: {host} is not a directory",
                    context=[f"rootfs: {root}"],
                )
            continue
        host.mkdir(mode=0o755)
        os.lchown(host, uid, gid)
        created.append(host)
    return created


class MountStubs:
    """Mountpoints created for a run, removed again afterwards.

    A bind or tmpfs target that does not exist in the rootfs must be created
    before the mount; without cleanup the empty file or directory would end
    up in the step's layer (for secrets, it would leak the secret's path).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._created: list[Path] = []

    def ensure(self, target: str, *, directory: bool) -> None:
        parent = str(PurePosixPath(target).parent)
        self._created.extend(ensure_directory(self.root, parent, 0, 0))
        host = secure_join(self.root, target)
        if os.path.lexists(host):
            return
        if directory:
            host.mkdir(mode=0o755)
        else:
            fd = os.open(host, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
            os.close(fd)
        self._created.append(host)

    def remove(self) -> None:
        """Remove the stubs that are still empty, innermost first."""
        for host in reversed(self._created):
            try:
                st = os.lstat(host)
                if stat.S_ISDIR(st.st_mode):
                    os.rmdir(host)
                elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                    os.unlink(host)
            except OSError:
                # Not empty any more (the command wrote into it) or gone: keep what is there.
                pass
        self._created.clear()
