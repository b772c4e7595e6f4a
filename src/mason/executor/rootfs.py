"""Path handling inside a rootfs: scoped symlink resolution, mountpoint stubs, cwd.

Every path the executor touches in a rootfs goes through ``secure_join`` or
``ensure_directory``, thin adapters over ``mason.fsroot`` (the one scoped
primitive), so that a symlink in an image (``/etc -> /host/etc``, ``../../..``) can never
make mason create, chown or delete anything outside the rootfs.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from mason.executor.types import ExecutorError
from mason.fsroot import FsRoot, PathOutsideError

__all__ = ["MountStubs", "ensure_directory", "secure_join"]


def secure_join(root: Path, unsafe: str) -> Path:
    """Join ``unsafe`` onto ``root`` resolving symlinks as if ``root`` were ``/``
    (``mason.fsroot``). The result is always ``root`` or below it; missing components
    are kept as they are (like filepath-securejoin), so the result may not exist."""
    try:
        with FsRoot(root) as fs:
            return fs.host(unsafe)
    except PathOutsideError as exc:
        raise ExecutorError(exc.message, context=[f"rootfs: {root}"]) from None


def ensure_directory(root: Path, path: str, uid: int, gid: int) -> list[Path]:
    """Create ``path`` (and missing parents) in ``root``; new ones get uid:gid.

    Returns the directories created, outermost first.
    """
    try:
        with FsRoot(root) as fs:
            return fs.mkdirs(path, mode=0o755, uid=uid, gid=gid)[1]
    except (NotADirectoryError, PathOutsideError) as exc:
        reason = exc.message if isinstance(exc, PathOutsideError) else exc.strerror
        raise ExecutorError(
            f"cannot use {path!r} as a directory: {reason}", context=[f"rootfs: {root}"]
        ) from None


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
