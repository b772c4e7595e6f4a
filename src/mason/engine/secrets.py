"""Build secrets as files in memory (tmpfs), never on a disk under ``$MASON_ROOT``.

A ``RUN --mount=type=secret`` needs a file to bind into the sandbox. Written under
``$MASON_ROOT/tmp`` it stayed on disk after a ``kill -9`` until the next build.
Now each secret gets a 0700 directory of its own on a memory filesystem
(``$XDG_RUNTIME_DIR``, else ``/dev/shm``, else ``/run``: the first that is tmpfs or
ramfs), named ``mason-secrets-<pid>-<random>`` so that any later mason process can
tell an orphan (its process is gone) and delete it: ``remove_orphaned_secrets``
runs whenever a state root is opened. With no memory filesystem the build fails
rather than write the secret to disk.

Why not a memfd (no name anywhere at all): its inode lives on a kernel-internal
mount, and the kernel refuses to bind-mount from outside the caller's mount
namespace (runc: ``mount /proc/<pid>/fd/<n>: invalid argument``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from mason.errors import DiagnosticError

__all__ = ["SecretStorageError", "remove_orphaned_secrets", "secret_dirs", "secret_file"]

_PREFIX = "mason-secrets-"
_MEMORY_FS = frozenset({"tmpfs", "ramfs"})


class SecretStorageError(DiagnosticError):
    """No memory filesystem to hold a build secret."""

    reference = "secret-storage"


def secret_dirs() -> list[Path]:
    """Candidate parents for secret directories, best first (not checked for tmpfs)."""
    candidates = [Path("/dev/shm"), Path("/run")]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        candidates.insert(0, Path(runtime))
    return candidates


def _memory_dir() -> Path:
    mounts = _mount_types()
    for candidate in secret_dirs():
        if (
            candidate.is_dir()
            and os.access(candidate, os.W_OK)
            and _fs_type(candidate, mounts) in _MEMORY_FS
        ):
            return candidate
    raise SecretStorageError(
        "no memory filesystem (tmpfs) to hold a build secret: mason does not write secrets to disk",
        context=[f"tried: {', '.join(str(p) for p in secret_dirs())}"],
        hint="mount a tmpfs on /dev/shm, or set XDG_RUNTIME_DIR to a tmpfs directory",
    )


def _mount_types() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount, from /proc/self/mounts."""
    try:
        text = Path("/proc/self/mounts").read_text()
    except OSError:
        return []
    result = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            result.append((fields[1].replace("\\040", " "), fields[2]))
    return result


def _fs_type(path: Path, mounts: list[tuple[str, str]]) -> str:
    real = os.path.realpath(path)
    best, fs_type = "", ""
    for point, kind in mounts:
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fs_type = point, kind  # the last, most specific mount wins
    return fs_type


@contextlib.contextmanager
def secret_file(data: bytes, *, mode: int, uid: int, gid: int) -> Iterator[Path]:
    """A file holding ``data`` (owned ``uid:gid``, ``mode``) on tmpfs, removed after the block."""
    import shutil
    import tempfile

    directory = Path(tempfile.mkdtemp(dir=_memory_dir(), prefix=f"{_PREFIX}{os.getpid()}-"))  # 0700
    try:
        path = directory / "secret"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            os.fchown(fd, uid, gid)
        finally:
            os.close(fd)
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def remove_orphaned_secrets(parents: list[Path] | None = None) -> int:
    """Delete secret directories whose mason process is gone; how many were removed."""
    removed = 0
    for parent in parents if parents is not None else secret_dirs():
        try:
            entries = list(parent.iterdir())
        except OSError:
            continue
        for entry in entries:
            pid = _owner_pid(entry.name)
            if pid is None or _alive(pid) or entry.is_symlink():
                continue
            import shutil  # only when there is an orphan

            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


def _owner_pid(name: str) -> int | None:
    if not name.startswith(_PREFIX):
        return None
    pid = name[len(_PREFIX) :].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: its directory is not ours to judge
    return True
