"""Deterministic layer tars from directories: overlay diffs, whole trees, tree comparisons.

Every writer streams a POSIX.1-2001 (PAX) tar into a binary writer and returns
its diff ID (sha256 of the uncompressed tar) and size. The same filesystem
always gives the same bytes:

- entries in depth-first order, names sorted by their bytes within a directory;
  a directory's opaque marker right after the directory itself;
- names relative to the layer root, no ``./`` prefix, directories end in ``/``;
- uid, gid, mode bits (with setuid/setgid/sticky), xattrs as ``SCHILY.xattr.*``
  PAX records sorted by name (overlayfs' own ``trusted.overlay.*`` /
  ``user.overlay.*`` are never written); user and group names left empty;
- mtimes in whole seconds, clamped to ``source_date_epoch`` when given;
  whiteouts and opaque markers have uid 0, gid 0, mode 0, mtime 0;
- files hard-linked within the layer: the first name is the file, the later
  ones tar hardlinks to it; sockets are skipped.
"""

from __future__ import annotations

import functools
import os
import stat
import tarfile
from collections.abc import Callable
from typing import Any, BinaryIO, cast

from mason.digest import Digest, HashingWriter
from mason.layer._fs import is_whiteout_device, list_xattrs, nofollow_opener, xattr_names
from mason.layer._tarinfo import ustar_header
from mason.layer.errors import LayerError
from mason.structs import Struct

__all__ = [
    "AUFS_META_PREFIX",
    "OPAQUE_MARKER",
    "WHITEOUT_PREFIX",
    "LayerInfo",
    "clamp_tar_times",
    "diff_headers",
    "write_diff_tar",
    "write_dir_tar",
    "write_tree_diff_tar",
]

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
#: AUFS bookkeeping (``.wh..wh.plnk`` and friends): no meaning in OCI, skipped
AUFS_META_PREFIX = ".wh..wh."

_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_WHITEOUT_XATTRS = ("trusted.overlay.whiteout", "user.overlay.whiteout")
# overlayfs features that leave a copied-up entry incomplete in the upper dir;
# mounts are made with them off, so finding them means the diff is not self-contained.
_UNSUPPORTED_XATTRS = (
    "trusted.overlay.redirect",
    "user.overlay.redirect",
    "trusted.overlay.metacopy",
    "user.overlay.metacopy",
)


class LayerInfo(Struct, frozen=True):
    """The uncompressed layer's diff ID and size in bytes."""

    diff_id: Digest
    size: int


def _overlay_value(path: str, names: list[str], wanted: tuple[str, ...]) -> bytes | None:
    """The value of the first of ``wanted`` among the entry's xattr ``names`` (None: none)."""
    for name in wanted:
        if name in names:
            try:
                return os.getxattr(path, name, follow_symlinks=False)
            except OSError:
                continue
    return None


#: Small writes (headers, padding) reach the hash and the compressor in pieces this big.
_GATHER = 1 << 16
#: A file's bytes go through in pieces this big.
_COPY_CHUNK = 1 << 20


class _TarStream:
    """The one tar dialect mason writes (PAX, UTF-8, names that are not UTF-8 kept as bytes),
    as ``tarfile``'s "w" mode writes it, into ``out``; ``close`` it to end the archive.
    Headers that need no extended record are encoded by ``ustar_header`` (issue 14). Small
    writes (headers, padding, small files) are gathered, so that the hash and the compressor
    see few big pieces (tarfile's "w|" mode cut every write into 10 KiB pieces: a 20 MiB
    file took ~40% longer)."""

    def __init__(self, out: HashingWriter) -> None:
        self._out = out
        self._small = bytearray()

    def add(self, info: tarfile.TarInfo, read: Callable[[int], bytes] | None = None) -> None:
        """The entry ``info``; a file's ``info.size`` bytes come from ``read`` (OSError when it
        ends sooner: the file shrank while it was read)."""
        header = ustar_header(info)
        if header is None:
            header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        self._write(header)
        if read is None:
            return
        left = info.size
        while left:
            chunk = read(min(left, _COPY_CHUNK))
            if not chunk:
                raise OSError("unexpected end of data")
            self._write(chunk)
            left -= len(chunk)
        self._write(tarfile.NUL * (-info.size % tarfile.BLOCKSIZE))

    def close(self) -> None:
        """Two zero blocks, then zeros up to a whole record (``tar -b20``)."""
        self._write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        self._write(tarfile.NUL * (-(self._out.size + len(self._small)) % tarfile.RECORDSIZE))
        self._flush()

    def _write(self, data: bytes) -> None:
        if len(data) >= _GATHER:
            self._flush()
            self._out.write(data)
            return
        self._small += data
        if len(self._small) >= _GATHER:
            self._flush()

    def _flush(self) -> None:
        if self._small:
            self._out.write(bytes(self._small))
            self._small.clear()


class _TarBuilder:
    """Entries as tar headers: written to ``dst``, or (``dst`` None) kept in ``headers`` with
    every file empty, as objects (what ``mason.layer.sparse`` reads of a snapshot: no tar to
    encode and parse again)."""

    def __init__(self, dst: BinaryIO | None, source_date_epoch: int | None) -> None:
        self.headers: list[tarfile.TarInfo] = []
        self._out = HashingWriter(dst) if dst is not None else None
        self._tar = _TarStream(self._out) if self._out is not None else None
        self._sde = source_date_epoch
        self._links: dict[tuple[int, int], str] = {}

    def _emit(self, info: tarfile.TarInfo, read: Callable[[int], bytes] | None = None) -> None:
        if self._tar is None:
            self.headers.append(info)
        else:
            self._tar.add(info, read)

    def _mtime(self, st: os.stat_result) -> int:
        mtime = st.st_mtime_ns // 1_000_000_000
        if self._sde is not None and mtime > self._sde:
            return self._sde
        return max(mtime, 0)

    def add(
        self, name: str, path: str, st: os.stat_result, xattrs: list[str] | None = None
    ) -> None:
        """Add the entry at ``path`` (already lstat-ed; ``xattrs``: its xattr names, when
        known) under archive name ``name``."""
        mode = st.st_mode
        info = tarfile.TarInfo(name)
        info.mode = stat.S_IMODE(mode)
        info.uid = st.st_uid
        info.gid = st.st_gid
        info.uname = ""
        info.gname = ""
        info.mtime = self._mtime(st)
        info.pax_headers = {
            "SCHILY.xattr." + key: value.decode("utf-8", "surrogateescape")
            for key, value in list_xattrs(path, names=xattrs)
        }
        if not stat.S_ISDIR(mode) and st.st_nlink > 1:
            key2 = (st.st_dev, st.st_ino)
            first = self._links.get(key2)
            if first is not None:
                info.type = tarfile.LNKTYPE
                info.linkname = first
                info.size = 0
                self._emit(info)
                return
            self._links[key2] = name
        if stat.S_ISREG(mode):
            info.type = tarfile.REGTYPE
            if self._tar is None:
                self._emit(info)  # headers only: the file empty
                return
            info.size = st.st_size
            try:
                fd = nofollow_opener(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    self._emit(info, functools.partial(os.read, fd))
                finally:
                    os.close(fd)
            except OSError as exc:
                raise LayerError(f"cannot read {path!r} for the layer tar: {exc}") from exc
            return
        if stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(path)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor = os.major(st.st_rdev)
            info.devminor = os.minor(st.st_rdev)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
        else:
            return  # sockets
        self._emit(info)

    def add_marker(self, name: str) -> None:
        """A whiteout or opaque marker: an empty file with fixed metadata."""
        info = tarfile.TarInfo(name)
        info.type = tarfile.REGTYPE
        info.mode = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.size = 0
        self._emit(info)

    def finish(self) -> LayerInfo:
        assert self._tar is not None and self._out is not None
        self._tar.close()
        return LayerInfo(self._out.digest, self._out.size)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _check_root(root: str) -> None:
    try:
        st = os.lstat(root)
    except OSError as exc:
        raise LayerError(f"cannot read layer directory {root!r}: {exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise LayerError(f"layer directory {root!r} is not a directory")


def write_diff_tar(
    diff_dir: str, dst: BinaryIO, *, source_date_epoch: int | None = None
) -> LayerInfo:
    """Tar an overlayfs upper directory, turning overlay whiteouts into OCI ones.

    0/0 character devices (and files with an ``overlay.whiteout`` xattr) become
    ``.wh.<name>``; directories with ``overlay.opaque=y`` get ``.wh..wh..opq``.
    """
    _check_root(diff_dir)
    builder = _TarBuilder(dst, source_date_epoch)
    _walk(builder, diff_dir, "", overlay=True)
    return builder.finish()


def diff_headers(diff_dir: str) -> list[tarfile.TarInfo]:
    """The headers ``write_diff_tar`` would write for ``diff_dir``, in its order, every
    file empty (what ``mason.layer.sparse`` reads of a snapshot)."""
    _check_root(diff_dir)
    builder = _TarBuilder(None, None)
    _walk(builder, diff_dir, "", overlay=True)
    return builder.headers


def write_dir_tar(root: str, dst: BinaryIO, *, source_date_epoch: int | None = None) -> LayerInfo:
    """Tar every entry under ``root`` as it is (no whiteout conversion).

    For layers the builder makes directly (COPY, FROM-less trees).
    """
    _check_root(root)
    builder = _TarBuilder(dst, source_date_epoch)
    _walk(builder, root, "", overlay=False)
    return builder.finish()


def _is_overlay_whiteout(st: os.stat_result, xattrs: list[str]) -> bool:
    return is_whiteout_device(st) or (
        stat.S_ISREG(st.st_mode) and any(n in xattrs for n in _WHITEOUT_XATTRS)
    )


def _walk(builder: _TarBuilder, directory: str, prefix: str, *, overlay: bool) -> None:
    entries = []
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        st = os.lstat(path)
        # one listxattr per entry answers every overlay question below (issue 14)
        xattrs = xattr_names(path) if overlay else None
        whiteout = xattrs is not None and _is_overlay_whiteout(st, xattrs)
        encoded = os.fsencode(".wh." + name if whiteout else name)
        entries.append((encoded, name, path, st, whiteout, xattrs))
    # Sorted by the name written, so whiteouts sort like any other entry.
    entries.sort(key=lambda e: e[0])
    for _, name, path, st, whiteout, xattrs in entries:
        rel = _join(prefix, name)
        if whiteout:
            builder.add_marker(_join(prefix, ".wh." + name))
            continue
        bad = next((n for n in _UNSUPPORTED_XATTRS if n in xattrs), None) if xattrs else None
        if bad is not None:
            raise LayerError(
                f"overlay diff entry {rel!r} has {bad}: the upper directory is not a complete diff",
                hint="mount overlayfs with redirect_dir=off and metacopy=off",
            )
        if name.startswith(WHITEOUT_PREFIX):
            raise LayerError(
                f"cannot put {rel!r} in a layer: names starting with {WHITEOUT_PREFIX!r} are reserved for whiteouts"
            )
        builder.add(rel, path, st, xattrs)
        if stat.S_ISDIR(st.st_mode):
            if xattrs and _overlay_value(path, xattrs, _OPAQUE_XATTRS) == b"y":
                builder.add_marker(_join(rel, OPAQUE_MARKER))
            _walk(builder, path, rel, overlay=overlay)


# --- comparing two plain trees (copy mode) ---------------------------------------------


def _same_meta(a: os.stat_result, b: os.stat_result) -> bool:
    return (
        stat.S_IFMT(a.st_mode) == stat.S_IFMT(b.st_mode)
        and a.st_mode == b.st_mode
        and a.st_uid == b.st_uid
        and a.st_gid == b.st_gid
    )


def _same_content(
    lower: str,
    upper: str,
    a: os.stat_result,
    b: os.stat_result,
    copied_before_ns: int | None = None,
) -> bool:
    """Whether two entries of the same type and metadata also have the same content."""
    mode = b.st_mode
    if list_xattrs(lower) != list_xattrs(upper):
        return False
    if stat.S_ISDIR(mode):
        return True
    if stat.S_ISLNK(mode):
        return os.readlink(lower) == os.readlink(upper)
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return a.st_rdev == b.st_rdev
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return True
    if a.st_size != b.st_size or a.st_mtime_ns != b.st_mtime_ns:
        return False
    if b.st_mtime_ns % 1_000_000_000:
        # Same size and a nanosecond-exact mtime: a copy that nobody touched.
        return True
    if copied_before_ns is not None and b.st_ctime_ns < copied_before_ns:
        # Its inode has not changed since the snapshot was copied: the copy itself.
        return True
    # Whole-second mtimes (coarse filesystems, or clamped by tools): compare bytes.
    return _same_bytes(lower, upper)


def _same_bytes(a: str, b: str) -> bool:
    with open(a, "rb", opener=nofollow_opener) as fa, open(b, "rb", opener=nofollow_opener) as fb:
        while True:
            ca = fa.read(1 << 20)
            cb = fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def write_tree_diff_tar(
    lower: str | None,
    upper: str,
    dst: BinaryIO,
    *,
    source_date_epoch: int | None = None,
    copied_before_ns: int | None = None,
) -> LayerInfo:
    """Tar the changes that turn tree ``lower`` (None: empty) into tree ``upper``.

    Added and changed entries are written with their parent directories; a
    removed entry becomes ``.wh.<name>`` (a removed directory one whiteout, not
    one per child; a directory emptied and refilled gets per-child whiteouts
    where overlayfs would mark it opaque: the unpacked result is the same).
    A directory that replaces a non-directory is written whole.
    Unchanged files are recognised by type, mode, owner, xattrs, size and mtime
    (bytes compared when mtimes are whole seconds, unless the file's ctime is
    before ``copied_before_ns``: ``upper`` was copied from ``lower`` before then,
    so the inode is the untouched copy). When one name of a hard-linked file is
    added or changed, every name of it is written, so the layer keeps the link.
    """
    _check_root(upper)
    if lower is not None:
        _check_root(lower)
    builder = _TarBuilder(dst, source_date_epoch)
    pending: list[tuple[str, str, os.stat_result]] = []
    if lower is None:
        _walk(builder, upper, "", overlay=False)
    else:
        ctx = _DiffContext(copied_before_ns)
        ctx.linked = _changed_link_groups(lower, upper, ctx)
        _diff_dirs(builder, lower, upper, "", pending, ctx)
    return builder.finish()


class _DiffContext:
    def __init__(self, copied_before_ns: int | None) -> None:
        self.copied_before_ns = copied_before_ns
        #: (st_dev, st_ino) of hard-linked files in ``upper`` that the layer must carry.
        self.linked: set[tuple[int, int]] = set()

    def changed(self, lpath: str, upath: str, lst: os.stat_result, ust: os.stat_result) -> bool:
        return not (
            _same_meta(lst, ust) and _same_content(lpath, upath, lst, ust, self.copied_before_ns)
        )


def _changed_link_groups(lower: str, upper: str, ctx: _DiffContext) -> set[tuple[int, int]]:
    """Inodes with several names in ``upper`` of which at least one is new or changed."""
    groups: dict[tuple[int, int], list[tuple[str, os.stat_result]]] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(upper, rel) if rel else upper) as it:
            for e in it:
                name = _join(rel, e.name)
                if e.is_dir(follow_symlinks=False):
                    stack.append(name)
                    continue
                st = e.stat(follow_symlinks=False)
                if st.st_nlink > 1:
                    groups.setdefault((st.st_dev, st.st_ino), []).append((name, st))
    changed: set[tuple[int, int]] = set()
    for key, members in groups.items():
        for name, ust in members:
            lpath = os.path.join(lower, name)
            try:
                lst = os.lstat(lpath)
            except (FileNotFoundError, NotADirectoryError):
                changed.add(key)
                break
            if stat.S_IFMT(lst.st_mode) != stat.S_IFMT(ust.st_mode) or ctx.changed(
                lpath, os.path.join(upper, name), lst, ust
            ):
                changed.add(key)
                break
    return changed


def _flush(builder: _TarBuilder, pending: list[tuple[str, str, os.stat_result]]) -> None:
    """Write the unchanged parent directories of a change that is about to be written."""
    for rel, path, st in pending:
        builder.add(rel, path, st)
    pending.clear()


def _diff_dirs(
    builder: _TarBuilder,
    lower: str,
    upper: str,
    prefix: str,
    pending: list[tuple[str, str, os.stat_result]],
    ctx: _DiffContext,
) -> None:
    lower_names = set(os.listdir(lower))
    upper_names = set(os.listdir(upper))
    for name in sorted(
        lower_names | upper_names, key=lambda n: os.fsencode(_out_name(n, upper_names))
    ):
        rel = _join(prefix, name)
        lpath = os.path.join(lower, name)
        upath = os.path.join(upper, name)
        if name not in upper_names:
            _flush(builder, pending)
            builder.add_marker(_join(prefix, ".wh." + name))
            continue
        ust = os.lstat(upath)
        if stat.S_ISSOCK(ust.st_mode):
            continue
        if name.startswith(WHITEOUT_PREFIX):
            raise LayerError(
                f"cannot put {rel!r} in a layer: names starting with {WHITEOUT_PREFIX!r} are reserved for whiteouts"
            )
        lst = os.lstat(lpath) if name in lower_names else None
        if lst is None or stat.S_IFMT(lst.st_mode) != stat.S_IFMT(ust.st_mode):
            _flush(builder, pending)
            builder.add(rel, upath, ust)
            if stat.S_ISDIR(ust.st_mode):
                _walk(builder, upath, rel, overlay=False)
            continue
        changed = ctx.changed(lpath, upath, lst, ust) or (
            ust.st_nlink > 1
            and not stat.S_ISDIR(ust.st_mode)
            and (ust.st_dev, ust.st_ino) in ctx.linked
        )
        if stat.S_ISDIR(ust.st_mode):
            if changed:
                _flush(builder, pending)
                builder.add(rel, upath, ust)
            else:
                # Written only if something below it changes (as a parent).
                pending.append((rel, upath, ust))
            _diff_dirs(builder, lpath, upath, rel, pending, ctx)
            if pending and pending[-1][0] == rel:
                pending.pop()
            continue
        if changed:
            _flush(builder, pending)
            builder.add(rel, upath, ust)


def _out_name(name: str, upper_names: set[str]) -> str:
    # Sort deleted entries by the whiteout name they are written as.
    return name if name in upper_names else ".wh." + name


_TIME_KEYS = ("mtime", "atime", "ctime")


def clamp_tar_times(src: BinaryIO, dst: BinaryIO, epoch: int) -> LayerInfo:
    """Copy the uncompressed layer tar ``src`` to ``dst`` with every time after ``epoch`` set to
    ``epoch`` and the rest kept (BuildKit's ``rewrite-timestamp`` converter: modification,
    access and change times, clamped, never raised). Entries, order, owners, modes, xattrs
    and hardlinks are copied as they are."""
    out = HashingWriter(dst)
    writer = _TarStream(out)
    try:
        with tarfile.open(
            fileobj=cast(Any, src), mode="r|", encoding="utf-8", errors="surrogateescape"
        ) as reader:
            for member in reader:
                if member.mtime > epoch:
                    member.mtime = epoch
                pax = dict(member.pax_headers)
                for key in _TIME_KEYS:
                    if key in pax and float(pax[key]) > epoch:
                        pax[key] = str(epoch)
                member.pax_headers = pax
                data = reader.extractfile(member) if member.isreg() else None
                writer.add(member, data.read if data is not None else None)
            writer.close()
    except (tarfile.TarError, ValueError) as exc:
        raise LayerError(f"cannot rewrite the layer's timestamps: {exc}") from exc
    return LayerInfo(out.digest, out.size)
