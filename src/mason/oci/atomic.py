"""Crash-safe file writes: temp file in the target's directory, fsync, rename, fsync dir.

``output_file`` writes a user-named destination (``--output dest=``) by what it is: a
regular file (or a path that does not exist yet) is replaced atomically; a FIFO or a
character device (``/dev/null``, ``/dev/stdout``, a pipe a reader waits on) is opened
and written to, never replaced; anything else (a directory, a socket, a block device)
is refused (``unwritable_dest`` says why before anything is built). A symlink is
followed, as buildx and ``docker save -o`` do: its target is what is written or
atomically replaced, and the link stays.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "fsync_dir",
    "output_file",
    "temp_file",
    "unwritable_dest",
]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISBLK, "a block device"),
)


def fsync_dir(path: str) -> None:
    """Persist a rename/creation in ``path`` (a directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_file(directory: str | os.PathLike[str], prefix: str = ".tmp-") -> tuple[int, str]:
    """A new file in ``directory`` (mode 0600, close-on-exec) under a random name: its fd and
    path. ``tempfile.mkstemp`` without importing tempfile, which brings shutil, random and
    shutil's compression modules into every build (a cached one writes blobs, nothing else
    of them)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        path = os.path.join(directory, prefix + os.urandom(6).hex())
        try:
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", os.fspath(directory))


def temp_dir(directory: str | os.PathLike[str], prefix: str = ".tmp-") -> str:
    """A new directory in ``directory`` (mode 0700) under a random name: its path.
    ``tempfile.mkdtemp`` without importing tempfile (see ``temp_file``)."""
    for _ in range(100):
        path = os.path.join(directory, prefix + os.urandom(6).hex())
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary directory name", os.fspath(directory))


@contextlib.contextmanager
def atomic_write(
    path: str, mode: int = 0o644, *, prefix: str = ".tmp-", durable: bool = True
) -> Iterator[BinaryIO]:
    """Yield a binary file; on clean exit it replaces ``path`` atomically, on error it is removed.

    The temp file lives in the same directory so the rename never crosses a
    filesystem; readers see the old file or the whole new one, never a part.
    ``durable`` fsyncs the file and the directory (a power loss keeps the old or the new file);
    without it the kernel writes the file back when it will.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = temp_file(directory, prefix)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(directory)


def atomic_write_bytes(path: str, data: bytes, mode: int = 0o644) -> None:
    with atomic_write(path, mode) as f:
        f.write(data)


def _target_mode(path: str) -> int | None:
    """``st_mode`` of what ``path`` names after following symlinks; None when nothing is there
    (a dangling symlink included: its target is created)."""
    try:
        return os.stat(path).st_mode
    except FileNotFoundError:
        return None


def _is_stream(mode: int | None) -> bool:
    return mode is not None and (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode))


def unwritable_dest(path: str) -> str | None:
    """Why ``path`` cannot be an output file ("a directory", "a socket", ...), or None when it
    can: it is missing, a regular file, a FIFO or a character device (symlinks followed)."""
    mode = _target_mode(path)
    if mode is None or stat.S_ISREG(mode) or _is_stream(mode):
        return None
    for test, what in _KINDS:
        if test(mode):
            return what
    return f"not a regular file (file type {stat.S_IFMT(mode):o})"


@contextlib.contextmanager
def output_file(path: str, mode: int = 0o644, *, prefix: str = ".tmp-") -> Iterator[BinaryIO]:
    """Write a user-named output: streamed into a FIFO or character device, else atomically
    replaced (the symlink's target, when ``path`` is a symlink). Raises ``IsADirectoryError``
    or ``OSError`` (EINVAL) for a destination ``unwritable_dest`` refuses.

    Not fsynced, as buildctl and ``docker save`` write theirs: an output is whole or absent
    after any error, and a 1 GiB tarball's fsync would cost seconds of waiting for the disk."""
    why = unwritable_dest(path)
    if why is not None:
        error = IsADirectoryError if why == "a directory" else OSError
        raise error(
            errno.EISDIR if error is IsADirectoryError else errno.EINVAL, f"it is {why}", path
        )
    if _is_stream(_target_mode(path)):
        # no O_CREAT, no O_TRUNC: write into what is there (a FIFO open waits for its reader)
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(fd, "wb") as f:
            yield f
        return
    with atomic_write(os.path.realpath(path), mode, prefix=prefix, durable=False) as f:
        yield f
