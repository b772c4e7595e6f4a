"""Paths from untrusted input, resolved inside a root directory: the one scoped primitive.

A Dockerfile, a build context, an image or a cache names paths (``COPY src dst``,
``--mount source=``, ``WORKDIR``, a layer's entries, an image's ``WorkingDir``);
every such path is resolved inside the directory it belongs to by ``FsRoot``, as
if that directory were ``/``:

* ``..`` at the root stays at the root;
* an absolute symlink is relative to the root, a relative one to its directory;
* no component is ever followed out of the root, whatever it points to;
* a missing component (and everything below it) is kept as written, so the
  result names where a new file would go (filepath-securejoin's rule, which
  BuildKit's ``fs.RootPath`` follows too).

Resolution walks one component at a time from an ``O_PATH`` descriptor of the
root with ``O_NOFOLLOW`` and reads each symlink itself, so the kernel never
follows a link. Opening a file (``FsRoot.open``) uses ``openat2`` with
``RESOLVE_IN_ROOT`` where the kernel has it (Linux 5.6+), which makes the kernel
enforce the same rule atomically; elsewhere it opens the parent found by the walk.

Host paths returned by ``FsRoot.host`` are symlink-free below the root at the
time of the call. mason hands them to code that takes paths (``shutil``, runc
mounts) only for trees nobody else writes to while the step runs (the step's own
snapshot, a frozen stage, the context), so nothing can swap a component between
the resolution and the use.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

from mason.errors import DiagnosticError
from mason.structs import Struct

__all__ = ["FsRoot", "PathOutsideError", "ResolvedPath", "clean_path"]

#: As Linux's MAXSYMLINKS: more links on one resolution is a loop.
MAX_SYMLINKS = 40

_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SYS_OPENAT2 = 437  # the same number on every architecture Linux added it to
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10


class PathOutsideError(DiagnosticError):
    """A path cannot be resolved inside its root (a loop, a file used as a directory)."""

    reference = "path-resolution"


def clean_path(unsafe: str) -> str:
    """``unsafe`` as a clean absolute path, lexically (``..`` at ``/`` stays at ``/``)."""
    parts: list[str] = []
    for part in unsafe.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


class ResolvedPath(Struct, frozen=True):
    """Where a path leads inside the root: its canonical components (no symlinks, no ``..``)
    and the entry's own ``lstat`` (None when it does not exist)."""

    parts: tuple[str, ...]
    st: os.stat_result | None
    #: Some component looked up on the way did not exist (a ``..`` may have come back out of
    #: it): what the path names would change if that component were created.
    passed_missing: bool = False

    @property
    def rel(self) -> str:
        """Relative to the root: ``a/b``, or ``""`` for the root itself."""
        return "/".join(self.parts)

    @property
    def exists(self) -> bool:
        return self.st is not None

    @property
    def is_dir(self) -> bool:
        return self.st is not None and stat.S_ISDIR(self.st.st_mode)


class _Walk:
    """The directories a resolution has passed through: a descriptor each (None once
    missing), so ``..`` goes back without asking the filesystem for a parent."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.names: list[str] = []
        self.fds: list[int | None] = []
        self.missing = False

    def current(self) -> int | None:
        return self.fds[-1] if self.fds else self.root_fd

    def push(self, name: str, fd: int | None) -> None:
        self.names.append(name)
        self.fds.append(fd)

    def pop(self) -> None:
        if self.fds:
            self.names.pop()
            fd = self.fds.pop()
            if fd is not None:
                os.close(fd)

    def reset(self) -> None:
        while self.fds:
            self.pop()


class FsRoot:
    """A directory that untrusted paths are resolved inside, as if it were ``/``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FsRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- resolution ------------------------------------------------------------------

    def resolve(self, unsafe: str, *, follow: bool = True) -> ResolvedPath:
        """Resolve ``unsafe`` inside the root. ``follow``: a symlink as the last component
        is followed too (inside the root); otherwise the link itself is the result."""
        walk = _Walk(self._fd)
        try:
            last_st = self._walk(walk, unsafe, follow=follow)
            return ResolvedPath(tuple(walk.names), last_st, walk.missing)
        finally:
            walk.reset()

    def host(self, unsafe: str, *, follow: bool = True) -> Path:
        """The host path of what ``unsafe`` names inside the root (see ``resolve``)."""
        return self.path.joinpath(*self.resolve(unsafe, follow=follow).parts)

    def _walk(self, walk: _Walk, unsafe: str, *, follow: bool) -> os.stat_result | None:
        pending = [p for p in unsafe.split("/") if p not in ("", ".")]
        pending.reverse()  # a stack: the next component last
        links = 0
        last_st: os.stat_result | None = self._root_stat()
        while pending:
            part = pending.pop()
            if part == "..":
                walk.pop()
                last_st = self._stat_current(walk)
                continue
            dir_fd = walk.current()
            st = None if dir_fd is None else _lstat_at(dir_fd, part)
            if st is not None and stat.S_ISLNK(st.st_mode) and (pending or follow):
                links += 1
                if links > MAX_SYMLINKS:
                    raise PathOutsideError(
                        f"too many levels of symbolic links resolving {unsafe!r}",
                        context=[f"inside {self.path}"],
                    )
                assert dir_fd is not None
                target = os.readlink(part, dir_fd=dir_fd)
                if target.startswith("/"):
                    walk.reset()
                pending.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
                last_st = self._stat_current(walk)
                continue
            if pending and st is not None and not stat.S_ISDIR(st.st_mode):
                where = "/".join([*walk.names, part])
                raise PathOutsideError(
                    f"cannot resolve {unsafe!r}: /{where} is not a directory",
                    context=[f"inside {self.path}"],
                )
            fd = None
            walk.missing = walk.missing or st is None
            if pending and st is not None:
                assert dir_fd is not None
                fd = os.open(part, _O_PATH_DIR, dir_fd=dir_fd)
            walk.push(part, fd)
            last_st = st
        return last_st

    def _root_stat(self) -> os.stat_result:
        return os.stat(self._fd)

    def _stat_current(self, walk: _Walk) -> os.stat_result | None:
        fd = walk.current()
        return None if fd is None else os.stat(fd)

    # -- operations --------------------------------------------------------------------

    def lstat(self, unsafe: str) -> os.stat_result | None:
        """The entry itself (a final symlink not followed); None when missing."""
        return self.resolve(unsafe, follow=False).st

    def stat(self, unsafe: str) -> os.stat_result | None:
        """What the path leads to inside the root; None when missing or dangling."""
        return self.resolve(unsafe).st

    @contextlib.contextmanager
    def parent(self, unsafe: str, *, follow: bool = False) -> Iterator[tuple[int, str]]:
        """An ``O_PATH`` descriptor of the (existing) directory that holds what ``unsafe``
        names, and its name there: for ``*at`` calls that never leave the root.
        ``follow`` resolves a final symlink first (the entry is then its target)."""
        resolved = self.resolve(unsafe, follow=follow)
        if not resolved.parts:
            raise PathOutsideError(
                f"{unsafe!r} names the root itself, which has no parent",
                context=[f"inside {self.path}"],
            )
        *dirs, name = resolved.parts
        fd = self._open_dir_parts(dirs, unsafe)
        try:
            yield fd, name
        finally:
            os.close(fd)

    def open_dir(self, resolved: ResolvedPath) -> int:
        """An ``O_PATH`` descriptor of the directory ``resolve`` found (its canonical parts
        opened again with ``O_NOFOLLOW``), for ``*at`` calls that never leave the root."""
        return self._open_dir_parts(list(resolved.parts), "/" + resolved.rel)

    def _open_dir_parts(self, parts: list[str], unsafe: str) -> int:
        """Open canonical (symlink-free) components again with ``O_NOFOLLOW`` at each step:
        a component swapped for a symlink since the walk fails instead of being followed."""
        fd = os.dup(self._fd)
        try:
            for part in parts:
                nfd = os.open(part, _O_PATH_DIR, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except FileNotFoundError:
            os.close(fd)
            raise FileNotFoundError(
                errno.ENOENT, f"the directory of {unsafe!r} does not exist in {self.path}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open(
        self, unsafe: str, flags: int = os.O_RDONLY, mode: int = 0o644, *, follow: bool = True
    ) -> int:
        """``os.open`` of ``unsafe`` inside the root. With ``follow=False`` a final symlink
        is not followed (``O_NOFOLLOW``: an error)."""
        flags |= os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
        if _openat2_works():
            return _openat2_retrying(self._fd, unsafe, flags, mode)
        parts = self.resolve(unsafe, follow=follow).parts
        if not parts:
            return os.open(".", flags, mode, dir_fd=self._fd)
        dir_fd = self._open_dir_parts(list(parts[:-1]), unsafe)
        try:
            return os.open(parts[-1], flags, mode, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)

    def read_bytes(self, unsafe: str, limit: int | None = None) -> bytes:
        fd = self.open(unsafe)
        with os.fdopen(fd, "rb") as f:
            return f.read() if limit is None else f.read(limit)

    def mkdirs(
        self, unsafe: str, *, mode: int = 0o755, uid: int | None = None, gid: int | None = None
    ) -> tuple[Path, list[Path]]:
        """Create the directory ``unsafe`` and missing parents inside the root (symlinks on the
        way followed inside it). New directories get ``mode`` and, when given, ``uid:gid``.
        Returns the directory's host path and the directories created, outermost first."""
        created: list[Path] = []
        for _ in range(MAX_SYMLINKS):
            resolved = self.resolve(unsafe)
            if resolved.is_dir:
                return self.path.joinpath(*resolved.parts), created
            if resolved.exists:
                raise NotADirectoryError(
                    errno.ENOTDIR,
                    f"cannot use {unsafe!r} as a directory: /{resolved.rel} is not a directory",
                    str(self.path),
                )
            self._mkdir_one(resolved, mode, uid, gid, created)
        raise PathOutsideError(
            f"cannot create {unsafe!r}: it keeps changing", context=[f"inside {self.path}"]
        )

    def _mkdir_one(
        self,
        resolved: ResolvedPath,
        mode: int,
        uid: int | None,
        gid: int | None,
        created: list[Path],
    ) -> None:
        """Create the first missing directory of ``resolved`` (canonical parts)."""
        fd = os.dup(self._fd)
        try:
            for i, part in enumerate(resolved.parts):
                try:
                    nfd = os.open(part, _O_PATH_DIR, dir_fd=fd)
                except FileNotFoundError:
                    os.mkdir(part, mode, dir_fd=fd)
                    _set_owner_mode(fd, part, mode, uid, gid)
                    created.append(self.path.joinpath(*resolved.parts[: i + 1]))
                    return
                os.close(fd)
                fd = nfd
        finally:
            os.close(fd)


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _set_owner_mode(dir_fd: int, name: str, mode: int, uid: int | None, gid: int | None) -> None:
    """Owner, then the exact mode (mkdir's passes through the umask; chown clears setgid)."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


# -- openat2 ---------------------------------------------------------------------------

_openat2_state: list[bool] = []  # [] unknown, [True] works, [False] unavailable


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _syscall_openat2(dir_fd: int, path: str, flags: int, mode: int, resolve: int) -> int:
    libc = _libc()
    how = ctypes.create_string_buffer(
        struct.pack("=QQQ", flags, mode if flags & os.O_CREAT else 0, resolve)
    )
    fd = int(
        libc.syscall(_SYS_OPENAT2, dir_fd, os.fsencode(path), how, ctypes.c_size_t(len(how.raw)))
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def _openat2_works() -> bool:
    """Whether this kernel (and any seccomp filter around us) allows ``openat2``."""
    if not _openat2_state:
        probe = os.open("/", os.O_PATH | os.O_CLOEXEC)
        try:
            os.close(_syscall_openat2(probe, ".", os.O_PATH, 0, _RESOLVE_IN_ROOT))
            _openat2_state.append(True)
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
                raise
            _openat2_state.append(False)
        finally:
            os.close(probe)
    return _openat2_state[0]


def _openat2_retrying(root_fd: int, path: str, flags: int, mode: int) -> int:
    # EAGAIN: a rename somewhere raced the lookup; the kernel asks to try again.
    for _ in range(16):
        try:
            return _syscall_openat2(
                root_fd,
                path.lstrip("/") or ".",
                flags,
                mode,
                _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS,
            )
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                raise
    raise OSError(errno.EAGAIN, "path kept changing while it was resolved", path)
