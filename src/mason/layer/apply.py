"""Safe application of a layer tar stream to a directory: BuildKit's rule (containerd's
``archive.Apply``), with every path resolved by ``mason.fsroot.FsRoot``.

* The PARENT directory of each entry is resolved inside the root as if it were ``/``:
  symlinks on the way (absolute or relative, from this layer or an earlier one) are
  followed, but never out of the root; missing directories are created there.
* The final component is never followed: an existing entry is replaced (a directory
  entry over a directory merges), files are created with ``O_EXCL | O_NOFOLLOW``.
* A hardlink target is resolved the same way (its directory inside the root, its last
  component not followed) and must exist there and not be a directory.
* ``..`` components and absolute names in an entry or hardlink name are rejected with
  a ``LayerError`` naming the entry, as are whiteout names used as directories, 0/0
  character devices (overlayfs would read them as deletions) and devices unless allowed.

Nothing is ever created outside the root, whatever the tar or the tree holds.

Two modes:

``flat``
    apply onto a merged tree: ``.wh.<name>`` removes ``<name>``, an opaque
    marker removes what the directory held before this layer.
``overlay``
    apply into a fresh snapshot directory that will be an overlayfs layer:
    ``.wh.<name>`` becomes a 0/0 character device and an opaque marker the
    ``trusted.overlay.opaque=y`` xattr (as Docker's overlay2 does). That directory
    alone cannot show the layers below, so an entry whose effect depends on them (a
    parent directory or hardlink target the layer does not hold itself, e.g. a write
    through an earlier layer's symlink) switches the rest of the layer to flat mode on
    a merged view the caller provides (``below``: an overlay mount of the layers below
    with the snapshot directory as upper, where overlayfs itself records whiteouts and
    opaque directories). Layers written by Docker, BuildKit and mason list their parent
    directories and never need the switch, so their snapshot depends on nothing below
    and can be shared by every chain they are in.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Literal, NamedTuple, Protocol, cast

from mason.digest import digest_of, new_sha256
from mason.fsroot import FsRoot, PathOutsideError, ResolvedPath
from mason.layer._fs import is_overlay_xattr, is_whiteout_device
from mason.layer._tarinfo import LayerTarInfo
from mason.layer.diff import AUFS_META_PREFIX, OPAQUE_MARKER, WHITEOUT_PREFIX, LayerInfo
from mason.layer.errors import LayerError

__all__ = [
    "ApplyMode",
    "HashingReader",
    "LowerView",
    "apply_layer",
    "entry_type_problem",
    "split_name",
]

ApplyMode = Literal["flat", "overlay"]

_CHUNK = 1 << 20
_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class HashingReader:
    """A layer tar's stream, hashed as it is read: ``drain`` reads the rest (the padding
    after the end-of-archive marker) and gives the diff ID and size."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self._hash = new_sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        self._hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> LayerInfo:
        while self.read(_CHUNK):
            pass
        return LayerInfo(digest_of(self._hash), self.size)


def apply_layer(
    stream: BinaryIO,
    root: str,
    *,
    mode: ApplyMode = "flat",
    allow_devices: bool | None = None,
    preserve_owners: bool | None = None,
    overlay_xattr_prefix: str = "trusted.overlay.",
    below: Callable[[], str] | None = None,
    lower: LowerView | None = None,
) -> LayerInfo:
    """Apply the uncompressed layer tar read from ``stream`` to directory ``root``.

    ``allow_devices`` and ``preserve_owners`` default to "running as root".
    ``below`` (overlay mode): called at most once, at the first entry whose effect depends
    on the layers below ``root``; it returns a directory showing those layers merged with
    ``root`` (an overlay mount with ``root`` as its upper dir), and that entry and every
    later one are applied there in flat mode. Without it such an entry is a ``LayerError``.
    ``lower`` (overlay mode): the layers below alone, asked whether a whiteout's target exists
    there: a whiteout device where nothing is below would be listed by overlayfs in a
    directory only this layer holds, so such a whiteout is left out (and ``lower`` told: the
    result then holds only on those layers). Without it every whiteout is recorded.
    Returns the diff ID and size of the tar as read (the whole stream is
    consumed). Raises ``LayerError`` for a corrupt or malicious tar; entries
    before the bad one stay applied, so callers apply into a directory they can
    discard.
    """
    if mode not in ("flat", "overlay"):
        raise ValueError(f"unknown apply mode {mode!r}")
    is_root = os.geteuid() == 0
    reader = HashingReader(stream)
    applier = _Applier(
        root,
        mode,
        allow_devices=is_root if allow_devices is None else allow_devices,
        preserve_owners=is_root if preserve_owners is None else preserve_owners,
        prefix=overlay_xattr_prefix,
        below=below,
        lower=lower,
    )
    try:
        with tarfile.open(
            fileobj=cast(Any, reader),
            mode="r|",
            encoding="utf-8",
            errors="surrogateescape",
            tarinfo=LayerTarInfo,
        ) as tf:
            for member in tf:
                applier.apply(tf, member)
        applier.finish()
    except tarfile.TarError as exc:
        raise LayerError(f"corrupt layer tar: {exc}", context=[f"applying into {root}"]) from exc
    finally:
        applier.close()
    return reader.drain()


def split_name(name: str, what: str) -> tuple[str, ...]:
    """Archive name -> path components, rejecting anything that could leave the root."""
    if name.startswith("/"):
        raise LayerError(
            f"layer {what} {name!r} is an absolute path", reference="layer-path-escape"
        )
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise LayerError(
            f"layer {what} {name!r} contains '..', which could leave the root",
            reference="layer-path-escape",
        )
    return parts


def entry_type_problem(member: tarfile.TarInfo, *, allow_devices: bool) -> tuple[str, str] | None:
    """Why a layer entry that is not a hardlink or a whiteout cannot be made (reason,
    reference), or None."""
    if member.ischr() or member.isblk():
        if not allow_devices:
            return "device nodes are only created when running as root", "layer-device-not-allowed"
        if member.ischr() and member.devmajor == 0 and member.devminor == 0:
            # overlayfs reads a 0/0 character device as "deleted": the overlay and the copy
            # snapshotter could not give the same filesystem, so no mode accepts it.
            return (
                "a 0/0 character device is an overlay whiteout, not a file; layers delete "
                "with .wh. entries",
                "layer-bad-whiteout",
            )
    elif not (member.isreg() or member.isdir() or member.issym() or member.isfifo()):
        return f"unsupported tar entry type {member.type!r}", "layer-entry-rejected"
    return None


class LowerView(Protocol):
    """The layers below an overlay-form apply, for its whiteouts (``apply_layer``'s ``lower``)."""

    def path(self) -> str | None:
        """A read-only directory showing them merged (None: there are none)."""
        ...

    def left_out(self) -> None:
        """A whiteout was left out for want of a target below: the result holds on them only."""
        ...


class _NeedsBase(Exception):
    """Overlay mode: the entry's effect depends on the layers below this one."""


def _open_root(root: str) -> FsRoot:
    try:
        return FsRoot(root)
    except OSError as exc:
        raise LayerError(f"cannot open apply target {root!r}: {exc.strerror}") from exc


class _Applier:
    def __init__(
        self,
        root: str,
        mode: ApplyMode,
        *,
        allow_devices: bool,
        preserve_owners: bool,
        prefix: str,
        below: Callable[[], str] | None,
        lower: LowerView | None = None,
    ) -> None:
        self._fs = _open_root(root)
        self._root = root
        self._mode = mode
        self._allow_devices = allow_devices
        self._owners = preserve_owners
        self._prefix = prefix
        self._below = below
        self._lower = lower
        # Paths (canonical: symlink-free, relative to the root) this layer wrote, entries
        # and implicit parents: opaque markers keep them, and a whiteout of one of them is
        # a contradiction.
        self._created: set[tuple[str, ...]] = set()
        # Overlay form into an empty root: the canonical directories this apply made, each
        # mapped to whether what is made in it gets this process's group (the directory's
        # own group, with or without a setgid bit or a grpid mount).
        # A name in one of them exists only if this apply made it (``_created``,
        # ``_whiteouts``), so no lstat asks; a create that finds one anyway fails (O_EXCL,
        # EEXIST) rather than replacing it. Issue 14: a base layer's unpack is mostly such
        # creates, and the lstat and the no-op chown were two of their four system calls.
        self._ids = (os.geteuid(), os.getegid())
        self._fresh: dict[tuple[str, ...], bool] = (
            {(): os.stat(root).st_gid == self._ids[1]}
            if mode == "overlay" and not os.listdir(root)
            else {}
        )
        self._whiteouts: set[tuple[str, ...]] = set()
        #: symlinks put off (``_put_off``), by their directory: a dup'd fd of it and the links
        self._later: dict[tuple[str, ...], tuple[int, list[_Link]]] = {}
        self._later_paths: set[tuple[str, ...]] = set()
        self._dir_times: list[tuple[tuple[str, ...], int]] = []
        self._entry = ""
        #: the last directory ``_dir`` resolved: its parts as named, an O_PATH fd of it and
        #: its canonical parts. An entry changes only what is inside its parent directory,
        #: so the next entry in the same directory (most are) finds it resolved as before.
        self._last_dir: tuple[tuple[str, ...], int, tuple[str, ...]] | None = None

    def close(self) -> None:
        self._forget_dir()
        for fd, _links in self._later.values():
            os.close(fd)
        self._later.clear()
        self._fs.close()

    def _forget_dir(self) -> None:
        if self._last_dir is not None:
            os.close(self._last_dir[1])
            self._last_dir = None

    def _fail(self, reason: str, *, reference: str = "layer-entry-rejected") -> LayerError:
        return LayerError(
            f"layer entry {self._entry!r} rejected: {reason}",
            reference=reference,
            context=[f"applying into {self._root}"],
        )

    @property
    def _strict(self) -> bool:
        """Overlay form into an upper directory alone: only what this layer holds is visible."""
        return self._mode == "overlay"

    def _switch(self) -> None:
        """Go on in flat mode on the merged view of the layers below and this upper dir."""
        if self._below is None:
            raise self._fail(
                "it reaches into the layers below (a parent directory or hardlink target this "
                "layer does not hold itself), and overlay mode was not given them",
                reference="layer-needs-base",
            )
        self._make_later()
        merged = self._below()
        self._fresh.clear()  # the merged view shows the layers below too
        self._forget_dir()
        self._fs.close()
        self._fs = _open_root(merged)
        self._mode = "flat"

    # --- path resolution -------------------------------------------------------------

    @contextlib.contextmanager
    def _dir(
        self, parts: tuple[str, ...], *, create: bool, keep: bool = True
    ) -> Iterator[tuple[int, tuple[str, ...]] | None]:
        """An O_PATH fd of the directory ``parts`` names, resolved inside the root (symlinks
        followed inside it), and its canonical parts; None if missing and not ``create``.
        ``keep``: remembered as the last directory (not where two are open at once)."""
        if self._last_dir is not None and self._last_dir[0] == parts:
            yield self._last_dir[1], self._last_dir[2]
            return
        resolved = self._resolve_dir(parts, create=create)
        if resolved is None:
            yield None
            return
        fd = self._fs.open_dir(resolved)
        if keep:
            self._forget_dir()
            self._last_dir = (parts, fd, resolved.parts)
            yield fd, resolved.parts
            return
        try:
            yield fd, resolved.parts
        finally:
            os.close(fd)

    def _resolve_dir(self, parts: tuple[str, ...], *, create: bool) -> ResolvedPath | None:
        for comp in parts:
            if comp.startswith(WHITEOUT_PREFIX):
                raise self._fail(f"whiteout name {comp!r} used as a directory")
        unsafe = "/".join(parts)
        try:
            resolved = self._fs.resolve(unsafe)
        except PathOutsideError as exc:
            if self._strict:
                raise _NeedsBase from None  # the merged view decides (a lower dir may break the loop)
            raise self._fail(f"directory {unsafe!r}: {exc.message}") from None
        if self._later and (resolved.passed_missing or not resolved.is_dir):
            self._make_later()  # a name on the way may be a symlink put off
            return self._resolve_dir(parts, create=create)
        if self._strict and (resolved.passed_missing or not resolved.is_dir):
            # Missing from this layer (or deleted by it, or not a directory here): what the
            # layers below hold there (a directory, a symlink, nothing) decides the outcome.
            raise _NeedsBase
        if not resolved.exists:
            if not create:
                return None
            resolved = self._mkdirs(unsafe)
        elif not resolved.is_dir:
            raise self._fail(
                f"parent {unsafe!r} leads to /{resolved.rel}, which is not a directory"
            )
        if any(p.startswith(WHITEOUT_PREFIX) for p in resolved.parts):
            raise self._fail(f"parent {unsafe!r} leads to /{resolved.rel}, through a whiteout name")
        return resolved

    def _mkdirs(self, unsafe: str) -> ResolvedPath:
        try:
            _, created = self._fs.mkdirs(unsafe, mode=0o755)
            resolved = self._fs.resolve(unsafe)
        except PathOutsideError as exc:
            raise self._fail(f"directory {unsafe!r}: {exc.message}") from None
        for host in created:
            parts = host.relative_to(self._fs.path).parts
            self._created.add(parts)
            if parts[:-1] in self._fresh:  # a directory made in a plain one is plain too
                self._fresh[parts] = self._fresh[parts[:-1]]
        return resolved

    # --- entries ---------------------------------------------------------------------

    def apply(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self._entry = member.name
        parts = split_name(member.name, "entry")
        if not parts:
            return  # the root itself: its metadata belongs to whoever made the root
        try:
            try:
                self._dispatch(tf, member, parts)
            except _NeedsBase:
                # Raised before the entry changed anything: apply it again on the merged view.
                self._switch()
                self._dispatch(tf, member, parts)
        except LayerError:
            raise
        except OSError as exc:
            raise self._fail(exc.strerror or str(exc)) from exc

    def _dispatch(
        self, tf: tarfile.TarFile, member: tarfile.TarInfo, parts: tuple[str, ...]
    ) -> None:
        if parts[-1].startswith(WHITEOUT_PREFIX):
            self._whiteout(member, parts)
        else:
            self._entry_at(tf, member, parts)

    def _whiteout(self, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        base = parts[-1]
        if member.isdir():
            raise self._fail("a whiteout must not be a directory", reference="layer-bad-whiteout")
        if base == OPAQUE_MARKER:
            self._opaque(parts[:-1])
            return
        if base.startswith(AUFS_META_PREFIX):
            return  # AUFS bookkeeping (.wh..wh.plnk and friends): no meaning in OCI
        name = base[len(WHITEOUT_PREFIX) :]
        if name in ("", ".", ".."):
            raise self._fail(f"whiteout of {name or 'nothing'!r}", reference="layer-bad-whiteout")
        with self._dir(parts[:-1], create=False) as found:
            if found is None:
                return  # the parent does not exist, so neither does the target
            pfd, pparts = found
            target = (*pparts, name)
            if target in self._created:
                raise self._fail(
                    f"the layer both creates and deletes {'/'.join(target)!r}",
                    reference="layer-bad-whiteout",
                )
            existing = _lstat(pfd, name)
            if self._mode == "flat":
                if existing is not None:
                    _remove(pfd, name, existing)
                return
            if existing is not None:
                if is_whiteout_device(existing):
                    return
                _remove(pfd, name, existing)
            if self._lower is not None and not self._lower_holds(target):
                self._lower.left_out()  # nothing below to hide (a device would be listed)
                return
            try:
                os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
            except PermissionError as exc:
                raise self._fail(
                    "overlay whiteouts are 0/0 character devices and need CAP_MKNOD"
                ) from exc
            self._whiteouts.add(target)

    def _lower_holds(self, parts: tuple[str, ...]) -> bool:
        """Whether the layers below hold ``parts`` (canonical: no symlink on the way is
        followed; overlayfs merges by path), looked up in their read-only view."""
        assert self._lower is not None
        view = self._lower.path()
        if view is None:
            return False
        fd = os.open(view, _O_PATH_DIR)
        try:
            for comp in parts[:-1]:
                st = _lstat(fd, comp)
                if st is None or not stat.S_ISDIR(st.st_mode):
                    return False
                inner = os.open(comp, _O_PATH_DIR, dir_fd=fd)
                os.close(fd)
                fd = inner
            return _lstat(fd, parts[-1]) is not None
        finally:
            os.close(fd)

    def _opaque(self, parts: tuple[str, ...]) -> None:
        with self._dir(parts, create=True) as found:
            assert found is not None
            fd, canonical = found
            if self._mode == "overlay":
                if not canonical:
                    # overlayfs never takes an upper root for opaque: the merged view's
                    # whiteouts hide what the layers below hold there instead.
                    raise _NeedsBase
                dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
                try:
                    os.setxattr(dfd, self._prefix + "opaque", b"y")
                finally:
                    os.close(dfd)
                return
            self._clear(fd, canonical)

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

    def _entry_at(
        self, tf: tarfile.TarFile, member: tarfile.TarInfo, parts: tuple[str, ...]
    ) -> None:
        base = parts[-1]
        if member.islnk():
            self._hardlink(member, parts)
            return
        self._check_type(member)
        with self._dir(parts[:-1], create=True) as found:
            assert found is not None
            pfd, pparts = found
            path = (*pparts, base)
            absent = self._surely_absent(pparts, path)
            if path in self._later_paths:
                self._make_later()
            # the final component is never followed
            existing = None if absent else _lstat(pfd, base)
            # Overlay form: a non-directory this layer put here (a whiteout, a file) hid the
            # layers' directory below; a directory in its place must go on hiding it, as the
            # flat replace does.
            hides_below = (
                self._mode == "overlay"
                and existing is not None
                and not stat.S_ISDIR(existing.st_mode)
            )
            if member.isdir():
                if existing is not None and not stat.S_ISDIR(existing.st_mode):
                    _remove(pfd, base, existing)
                    existing = None
                if existing is None:
                    os.mkdir(base, 0o700, dir_fd=pfd)
                if hides_below:
                    self._set_opaque(pfd, base)
                self._dir_times.append((path, _mtime_ns(member)))
            elif absent and member.issym() and not _xattrs(member):
                self._created.add(path)
                self._put_off(member, pfd, pparts, base)
                return
            else:
                if existing is not None:
                    if stat.S_ISDIR(existing.st_mode):
                        self._make_later()  # links put off in it go with it, as if made
                    _remove(pfd, base, existing)
                self._create_node(tf, member, pfd, base)
            self._created.add(path)
            self._set_meta(member, pfd, base, chown=self._needs_chown(member, pparts, existing))
            if member.isdir() and pparts in self._fresh:  # made here: all it holds is known
                self._fresh[path] = member.gid == self._ids[1]

    def _needs_chown(
        self, member: tarfile.TarInfo, pparts: tuple[str, ...], existing: os.stat_result | None
    ) -> bool:
        """False for what was just made here as the entry's owner: made by this process in a
        directory whose group it gets, owned as the process is."""
        made_as_ids = existing is None and self._fresh.get(pparts, False)
        return not made_as_ids or self._ids != (member.uid, member.gid)

    def _put_off(
        self, member: tarfile.TarInfo, pfd: int, pparts: tuple[str, ...], base: str
    ) -> None:
        """A new symlink in a directory this apply made: made later, with the others, by two
        threads taking different directories (``_make_later``). Issue 14: a base image's
        symlinks (busybox's 268 applets) were most of its unpack; the kernel makes entries
        in two directories at once, not two in one. Whatever could see it first makes it."""
        path = (*pparts, base)
        if pparts not in self._later:
            self._later[pparts] = (os.dup(pfd), [])
        link = _Link(
            base,
            member.linkname,
            member.uid,
            member.gid,
            self._needs_chown(member, pparts, None),
            _mtime_ns(member),
            member.name,
        )
        self._later[pparts][1].append(link)
        self._later_paths.add(path)

    def _make_later(self) -> None:
        """Make the symlinks put off so far: in two threads, each its directories, when there
        are enough of them; a failure is the failing entry's."""
        if not self._later:
            return
        later, self._later = self._later, {}
        self._later_paths.clear()
        halves: tuple[list[tuple[int, list[_Link]]], list[tuple[int, list[_Link]]]] = ([], [])
        sizes = [0, 0]
        # the larger batches first, each to the half with fewer links
        for batch in sorted(later.values(), key=lambda b: len(b[1]), reverse=True):
            half = sizes.index(min(sizes))
            halves[half].append(batch)
            sizes[half] += len(batch[1])
        failures: list[tuple[_Link, OSError]] = []
        try:
            if min(sizes) >= _PARALLEL_LINKS:
                helper = threading.Thread(
                    target=_make_links, args=(halves[1], failures, self._owners), daemon=True
                )
                helper.start()
                _make_links(halves[0], failures, self._owners)
                helper.join()
            else:
                _make_links(halves[0] + halves[1], failures, self._owners)
        finally:
            for fd, _links in later.values():
                os.close(fd)
        if failures:
            link, exc = failures[0]
            self._entry = link.entry
            raise self._fail(exc.strerror or str(exc)) from exc

    def _surely_absent(self, pparts: tuple[str, ...], path: tuple[str, ...]) -> bool:
        """Whether ``path`` cannot exist: its directory is one this apply made, and made
        nothing of that name in it."""
        return pparts in self._fresh and path not in self._created and path not in self._whiteouts

    def _check_type(self, member: tarfile.TarInfo) -> None:
        problem = entry_type_problem(member, allow_devices=self._allow_devices)
        if problem is not None:
            reason, reference = problem
            raise self._fail(reason, reference=reference)

    def _create_node(
        self, tf: tarfile.TarFile, member: tarfile.TarInfo, pfd: int, base: str
    ) -> None:
        if member.isreg():
            self._write_file(tf, member, pfd, base)
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=pfd)
        elif member.isfifo():
            os.mknod(base, stat.S_IFIFO | 0o600, dir_fd=pfd)
        else:
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(base, kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=pfd)

    def _write_file(
        self, tf: tarfile.TarFile, member: tarfile.TarInfo, pfd: int, base: str
    ) -> None:
        src = tf.extractfile(member)
        fd = os.open(
            base,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=pfd,
        )
        with os.fdopen(fd, "wb") as out:
            if src is not None:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)

    def _hardlink(self, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        try:
            target = split_name(member.linkname, "hardlink target")
        except LayerError as exc:
            raise self._fail(exc.message, reference=exc.reference) from None
        if not target:
            raise self._fail("hardlink to the root directory", reference="layer-path-escape")
        self._make_later()  # its target or its name may be a symlink put off
        # As for entries: the target's directory is resolved inside the root, its last
        # component is not followed (a link to a symlink links the symlink). A hardlink may
        # replace a directory outside its own: the last directory is resolved anew after it.
        self._forget_dir()
        with self._dir(target[:-1], create=False, keep=False) as tfound:
            tst = _lstat(tfound[0], target[-1]) if tfound is not None else None
            if tfound is None or tst is None or (self._strict and is_whiteout_device(tst)):
                if self._strict:
                    raise _NeedsBase  # perhaps a file of the layers below
                raise self._fail(
                    f"hardlink target {member.linkname!r} does not exist in the tree",
                    reference="layer-path-escape",
                )
            if stat.S_ISDIR(tst.st_mode):
                raise self._fail(f"hardlink target {member.linkname!r} is a directory")
            tfd, tparts = tfound
            with self._dir(parts[:-1], create=True, keep=False) as found:
                assert found is not None
                pfd, pparts = found
                path = (*pparts, parts[-1])
                if path == (*tparts, target[-1]):
                    raise self._fail("hardlink to itself")
                existing = _lstat(pfd, parts[-1])
                if existing is not None:
                    _remove(pfd, parts[-1], existing)
                os.link(
                    target[-1], parts[-1], src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False
                )
        self._created.add(path)

    def _set_meta(
        self, member: tarfile.TarInfo, pfd: int, base: str, *, chown: bool = True
    ) -> None:
        if self._owners and chown:
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
        self._make_later()
        # Directory mtimes last and deepest first: creating children changes them. The
        # canonical paths are opened with O_NOFOLLOW: one replaced since is skipped.
        for parts, ns in sorted(self._dir_times, key=lambda item: len(item[0]), reverse=True):
            self._entry = "/".join(parts)
            try:
                pfd = self._fs.open_dir(ResolvedPath(parts[:-1], None))
            except OSError:
                continue
            try:
                if _lstat(pfd, parts[-1]) is not None:
                    os.utime(parts[-1], ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)
            finally:
                os.close(pfd)


#: symlinks put off that the second thread must get before one is started for them
_PARALLEL_LINKS = 32


class _Link(NamedTuple):
    """A symlink put off: its name in its directory, target, owner, whether to chown it,
    mtime (ns) and the tar entry's name (for errors)."""

    base: str
    target: str
    uid: int
    gid: int
    chown: bool
    mtime_ns: int
    entry: str


def _make_links(
    batches: list[tuple[int, list[_Link]]], failures: list[tuple[_Link, OSError]], owners: bool
) -> None:
    """Make each directory's links (``dir_fd``, never following the last component); the first
    failure stops this thread's work and is recorded."""
    for dir_fd, links in batches:
        for link in links:
            try:
                os.symlink(link.target, link.base, dir_fd=dir_fd)
                if owners and link.chown:
                    os.chown(link.base, link.uid, link.gid, dir_fd=dir_fd, follow_symlinks=False)
                ns = link.mtime_ns
                os.utime(link.base, ns=(ns, ns), dir_fd=dir_fd, follow_symlinks=False)
            except OSError as exc:
                failures.append((link, exc))
                return


def _xattrs(member: tarfile.TarInfo) -> bool:
    return any(key.startswith("SCHILY.xattr.") for key in member.pax_headers)


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
