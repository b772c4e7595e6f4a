"""Safe application of a layer tar stream to a directory.

Every path is resolved one component at a time from an ``O_PATH`` descriptor
of the target root with ``O_NOFOLLOW``: a ``..`` component, an absolute name,
a symlink in a parent component (absolute or relative, whatever it points to)
or a hardlink to a name outside the tree is rejected with a ``LayerError``
naming the entry, and nothing is ever created outside the root. Final
components are never followed either (files are created with ``O_EXCL |
O_NOFOLLOW``, existing entries are removed first).

Two modes:

``flat``
    apply onto a merged tree: ``.wh.<name>`` removes ``<name>``, an opaque
    marker removes what the directory held before this layer.
``overlay``
    apply into a fresh snapshot directory that will be an overlayfs lower
    directory: ``.wh.<name>`` becomes a 0/0 character device and an opaque
    marker the ``trusted.overlay.opaque=y`` xattr (as Docker's overlay2 does).

A symlink in a parent component is always rejected rather than followed inside
the root, so that both modes give the same filesystem (an overlay lower dir
cannot see the symlinks of the layers below it). Layers written by Docker,
BuildKit and mason never go through symlinks.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from typing import Any, BinaryIO, Literal, cast

from mason.digest import Digest
from mason.layer._fs import is_overlay_xattr, is_whiteout_device
from mason.layer.diff import OPAQUE_MARKER, WHITEOUT_PREFIX, LayerInfo
from mason.layer.errors import LayerError

__all__ = ["ApplyMode", "apply_layer"]

ApplyMode = Literal["flat", "overlay"]

_AUFS_META_PREFIX = ".wh..wh."
_CHUNK = 1 << 20
_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _HashingReader:
    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        self._hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> LayerInfo:
        while self.read(_CHUNK):
            pass
        return LayerInfo(Digest("sha256:" + self._hash.hexdigest()), self.size)


def apply_layer(
    stream: BinaryIO,
    root: str,
    *,
    mode: ApplyMode = "flat",
    allow_devices: bool | None = None,
    preserve_owners: bool | None = None,
    overlay_xattr_prefix: str = "trusted.overlay.",
) -> LayerInfo:
    """Apply the uncompressed layer tar read from ``stream`` to directory ``root``.

    ``allow_devices`` and ``preserve_owners`` default to "running as root".
    Returns the diff ID and size of the tar as read (the whole stream is
    consumed). Raises ``LayerError`` for a corrupt or malicious tar; entries
    before the bad one stay applied, so callers apply into a directory they can
    discard.
    """
    if mode not in ("flat", "overlay"):
        raise ValueError(f"unknown apply mode {mode!r}")
    is_root = os.geteuid() == 0
    reader = _HashingReader(stream)
    applier = _Applier(
        root,
        mode,
        allow_devices=is_root if allow_devices is None else allow_devices,
        preserve_owners=is_root if preserve_owners is None else preserve_owners,
        prefix=overlay_xattr_prefix,
    )
    try:
        with tarfile.open(
            fileobj=cast(Any, reader), mode="r|", encoding="utf-8", errors="surrogateescape"
        ) as tf:
            for member in tf:
                applier.apply(tf, member)
        applier.finish()
    except tarfile.TarError as exc:
        raise LayerError(f"corrupt layer tar: {exc}", context=[f"applying into {root}"]) from exc
    finally:
        applier.close()
    return reader.drain()


def _split(name: str, what: str) -> tuple[str, ...]:
    """Archive name -> path components, rejecting anything that could leave the root."""
    if name.startswith("/"):
        raise LayerError(f"layer {what} {name!r} is an absolute path", reference="layer-path-escape")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise LayerError(
            f"layer {what} {name!r} contains '..', which could leave the root",
            reference="layer-path-escape",
        )
    return parts


class _Applier:
    def __init__(
        self,
        root: str,
        mode: ApplyMode,
        *,
        allow_devices: bool,
        preserve_owners: bool,
        prefix: str,
    ) -> None:
        try:
            self._root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise LayerError(f"cannot open apply target {root!r}: {exc.strerror}") from exc
        self._root = root
        self._mode = mode
        self._allow_devices = allow_devices
        self._owners = preserve_owners
        self._prefix = prefix
        # Paths this layer wrote (entries and implicit parents): opaque markers
        # keep them, and a whiteout of one of them is a contradiction.
        self._created: set[tuple[str, ...]] = set()
        self._whiteouts: set[tuple[str, ...]] = set()
        self._dir_times: list[tuple[tuple[str, ...], int]] = []
        self._entry = ""

    def close(self) -> None:
        os.close(self._root_fd)

    def _fail(self, reason: str, *, reference: str = "layer-entry-rejected") -> LayerError:
        return LayerError(
            f"layer entry {self._entry!r} rejected: {reason}",
            reference=reference,
            context=[f"applying into {self._root}"],
        )

    # --- path resolution -------------------------------------------------------------

    @contextlib.contextmanager
    def _parent(self, parts: tuple[str, ...], *, create: bool) -> Iterator[int | None]:
        """An O_PATH fd of the directory ``parts`` (None if missing and not ``create``)."""
        fd = os.dup(self._root_fd)
        try:
            for i, comp in enumerate(parts):
                if comp.startswith(WHITEOUT_PREFIX):
                    raise self._fail(f"whiteout name {comp!r} used as a directory")
                try:
                    nfd = os.open(comp, _O_PATH_DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        yield None
                        return
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    self._created.add(parts[: i + 1])
                    nfd = os.open(comp, _O_PATH_DIR, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    nfd = self._not_a_directory(fd, comp, parts[: i + 1], create)
                os.close(fd)
                fd = nfd
            yield fd
        finally:
            os.close(fd)

    def _not_a_directory(self, fd: int, comp: str, sub: tuple[str, ...], create: bool) -> int:
        st = os.stat(comp, dir_fd=fd, follow_symlinks=False)
        where = "/".join(sub)
        if stat.S_ISLNK(st.st_mode):
            raise self._fail(
                f"parent {where!r} is a symlink (to {os.readlink(comp, dir_fd=fd)!r}); "
                "paths through symlinks could leave the root",
                reference="layer-path-escape",
            )
        if create and self._mode == "overlay" and sub in self._whiteouts and is_whiteout_device(st):
            # Deleted earlier in this layer, now a directory again: an opaque one,
            # so that the lower directory's content stays deleted.
            os.unlink(comp, dir_fd=fd)
            self._whiteouts.discard(sub)
            os.mkdir(comp, 0o755, dir_fd=fd)
            self._created.add(sub)
            self._set_opaque(fd, comp)
            return os.open(comp, _O_PATH_DIR, dir_fd=fd)
        raise self._fail(f"parent {where!r} is not a directory")

    # --- entries ---------------------------------------------------------------------

    def apply(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self._entry = member.name
        parts = _split(member.name, "entry")
        if not parts:
            return  # the root itself: its metadata belongs to whoever made the root
        try:
            base = parts[-1]
            if base.startswith(WHITEOUT_PREFIX):
                self._whiteout(member, parts)
            else:
                self._entry_at(tf, member, parts)
        except LayerError:
            raise
        except OSError as exc:
            raise self._fail(exc.strerror or str(exc)) from exc

    def _whiteout(self, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        base = parts[-1]
        parent = parts[:-1]
        if member.isdir():
            raise self._fail("a whiteout must not be a directory", reference="layer-bad-whiteout")
        if base == OPAQUE_MARKER:
            self._opaque(parent)
            return
        if base.startswith(_AUFS_META_PREFIX):
            return  # AUFS bookkeeping (.wh..wh.plnk and friends): no meaning in OCI
        name = base[len(WHITEOUT_PREFIX) :]
        if name in ("", ".", ".."):
            raise self._fail(f"whiteout of {name or 'nothing'!r}", reference="layer-bad-whiteout")
        target = (*parent, name)
        if target in self._created:
            raise self._fail(
                f"the layer both creates and deletes {'/'.join(target)!r}",
                reference="layer-bad-whiteout",
            )
        with self._parent(parent, create=self._mode == "overlay") as pfd:
            if pfd is None:
                return  # flat: the parent does not exist, so neither does the target
            existing = _lstat(pfd, name)
            if self._mode == "flat":
                if existing is not None:
                    _remove(pfd, name, existing)
                return
            if existing is not None:
                if is_whiteout_device(existing):
                    return
                _remove(pfd, name, existing)
            try:
                os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
            except PermissionError as exc:
                raise self._fail(
                    "overlay whiteouts are 0/0 character devices and need CAP_MKNOD"
                ) from exc
            self._whiteouts.add(target)

    def _opaque(self, parts: tuple[str, ...]) -> None:
        with self._parent(parts, create=True) as fd:
            assert fd is not None
            if self._mode == "overlay":
                dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
                try:
                    os.setxattr(dfd, self._prefix + "opaque", b"y")
                finally:
                    os.close(dfd)
                return
            self._clear(fd, parts)

    def _clear(self, fd: int, parts: tuple[str, ...]) -> None:
        """Remove what directory ``parts`` held that this layer did not write."""
        dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        try:
            names = os.listdir(dfd)
        finally:
            os.close(dfd)
        for name in names:
            sub = (*parts, name)
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if sub not in self._created:
                _remove(fd, name, st)
            elif stat.S_ISDIR(st.st_mode):
                cfd = os.open(name, _O_PATH_DIR, dir_fd=fd)
                try:
                    self._clear(cfd, sub)
                finally:
                    os.close(cfd)

    def _set_opaque(self, pfd: int, name: str) -> None:
        dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            os.setxattr(dfd, self._prefix + "opaque", b"y")
        finally:
            os.close(dfd)

    def _entry_at(self, tf: tarfile.TarFile, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        base = parts[-1]
        if member.islnk():
            self._hardlink(member, parts)
            return
        if member.ischr() or member.isblk():
            if not self._allow_devices:
                raise self._fail(
                    "device nodes are only created when running as root",
                    reference="layer-device-not-allowed",
                )
        elif not (member.isreg() or member.isdir() or member.issym() or member.isfifo()):
            raise self._fail(f"unsupported tar entry type {member.type!r}")
        with self._parent(parts[:-1], create=True) as pfd:
            assert pfd is not None
            existing = _lstat(pfd, base)
            replaced_whiteout = (
                existing is not None and self._mode == "overlay" and parts in self._whiteouts
            )
            if member.isdir():
                if existing is not None and not stat.S_ISDIR(existing.st_mode):
                    _remove(pfd, base, existing)
                    existing = None
                if existing is None:
                    os.mkdir(base, 0o700, dir_fd=pfd)
                if replaced_whiteout:
                    self._set_opaque(pfd, base)
                self._dir_times.append((parts, _mtime_ns(member)))
            else:
                if existing is not None:
                    _remove(pfd, base, existing)
                if member.isreg():
                    self._write_file(tf, member, pfd, base)
                elif member.issym():
                    os.symlink(member.linkname, base, dir_fd=pfd)
                elif member.isfifo():
                    os.mknod(base, stat.S_IFIFO | 0o600, dir_fd=pfd)
                else:
                    kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
                    os.mknod(base, kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=pfd)
            self._whiteouts.discard(parts)
            self._created.add(parts)
            self._set_meta(member, pfd, base)

    def _write_file(self, tf: tarfile.TarFile, member: tarfile.TarInfo, pfd: int, base: str) -> None:
        src = tf.extractfile(member)
        fd = os.open(
            base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd
        )
        with os.fdopen(fd, "wb") as out:
            if src is not None:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)

    def _hardlink(self, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        try:
            target = _split(member.linkname, "hardlink target")
        except LayerError as exc:
            raise self._fail(exc.message, reference=exc.reference) from None
        if not target:
            raise self._fail("hardlink to the root directory", reference="layer-path-escape")
        if target == parts:
            raise self._fail("hardlink to itself")
        with self._parent(target[:-1], create=False) as tfd:
            tst = _lstat(tfd, target[-1]) if tfd is not None else None
            if tfd is None or tst is None:
                raise self._fail(
                    f"hardlink target {member.linkname!r} does not exist in this layer's tree",
                    reference="layer-path-escape",
                )
            if stat.S_ISDIR(tst.st_mode):
                raise self._fail(f"hardlink target {member.linkname!r} is a directory")
            with self._parent(parts[:-1], create=True) as pfd:
                assert pfd is not None
                existing = _lstat(pfd, parts[-1])
                if existing is not None:
                    _remove(pfd, parts[-1], existing)
                os.link(target[-1], parts[-1], src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        self._whiteouts.discard(parts)
        self._created.add(parts)

    def _set_meta(self, member: tarfile.TarInfo, pfd: int, base: str) -> None:
        if self._owners:
            os.chown(base, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False)
        if not member.issym():
            # After chown, which clears setuid/setgid.
            os.chmod(base, stat.S_IMODE(member.mode), dir_fd=pfd)
        proc_path = f"/proc/self/fd/{pfd}/{base}"
        for key, value in sorted(member.pax_headers.items()):
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr.") :]
            if is_overlay_xattr(name):
                continue  # never let a layer steer overlayfs (redirects, metacopy, opaque)
            try:
                os.setxattr(
                    proc_path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False
                )
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise self._fail(f"cannot set xattr {name!r}: {exc.strerror}") from exc
        if not member.isdir():
            ns = _mtime_ns(member)
            os.utime(base, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)

    def finish(self) -> None:
        # Directory mtimes last and deepest first: creating children changes them.
        for parts, ns in sorted(self._dir_times, key=lambda item: len(item[0]), reverse=True):
            self._entry = "/".join(parts)
            with self._parent(parts[:-1], create=False) as pfd:
                if pfd is not None and _lstat(pfd, parts[-1]) is not None:
                    os.utime(parts[-1], ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)


def _mtime_ns(member: tarfile.TarInfo) -> int:
    return int(member.mtime * 1_000_000_000)


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(dir_fd: int, name: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        # rmtree with dir_fd walks by descriptors and never follows symlinks.
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)
