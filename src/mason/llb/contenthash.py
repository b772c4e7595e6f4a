"""BuildKit's content checksum of a directory tree (``cache/contenthash``, v0.32.2).

What a COPY (or a read-only bind mount) is keyed by, instead of its source's own key:

- a file, symlink or directory *header* hashes as the tarsum-v1 header
  (``name`` empty, ``mode`` = permission and setuid/setgid/sticky bits, ``uid``,
  ``gid``, ``size``, ``typeflag``, ``linkname``, ``uname``/``gname`` empty,
  ``devmajor``/``devminor``; no mtime; then the xattrs it keeps, sorted) followed by
  a regular file's bytes;
- a directory hashes as the concatenation, in key order, of each direct entry's
  key (its path below the directory with every ``/`` written as NUL, the
  directory's own header being the key ``"\\0"``) and that entry's digest, a
  subdirectory contributing its own directory digest (a Merkle tree);
- a wildcard or include/exclude selection hashes the matching headers and files
  the same way, keyed by their paths below the pattern's fixed prefix.

Two kinds of tree, as BuildKit has two ways of filling its checksum cache:

- ``ContentTree.for_context``: the build context (a ``local://`` source). BuildKit
  hashes the file metadata the client *sent* (``HandleChange``): every owner is 0:0
  whatever is on disk, no xattrs, and the root's own header is the sha256 of nothing.
- ``ContentTree.for_snapshot``: any other op's result (a RUN's rootfs, a file op's
  output, an image's layers, a download). BuildKit scans the snapshot (``scanPath``)
  and ``lstat``s each entry, so owners, modes and xattrs are the tree's own (as
  ``security.capability`` and the non-``security.``/``system.`` xattrs; overlayfs's
  own ``trusted.overlay.*``/``user.overlay.*`` are never visible through a mounted
  overlay, so they are left out too), and the root has a real header.

Both read their directory lazily, one directory listing at a time, through the
root's ``FsRoot`` (nothing outside the root is read; symlinks are resolved in the
tree, never by the kernel), and give the digests a full scan would. A context tree given
``digests`` (``FileDigests``: the root's kept per-file digests, ``mason.engine.filedigests``)
takes an unchanged file's digest from there instead of reading the file again.
"""

from __future__ import annotations

import bisect
import enum
import errno
import os
import posixpath
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from mason.digest import Digest, digest_of, new_sha256, sha256_bytes
from mason.errors import DiagnosticError
from mason.fsroot import FsRoot
from mason.llb.cachemap import Selector, contains_wildcards
from mason.structs import Struct, field

if TYPE_CHECKING:  # start-up (issue 14): loaded by a selector with patterns or wildcards
    from mason.llb.patterns import MatchInfo, PatternMatcher

__all__ = [
    "CONTEXT_FILE_KIND",
    "EMPTY_DIGEST",
    "SHA256_KIND",
    "ChecksumError",
    "ContentTree",
    "Excluded",
    "FileDigests",
    "file_header",
    "header_digest",
]

#: the sha256 of no bytes: an empty file's content digest
EMPTY_DIGEST = sha256_bytes(b"")
_MAX_SYMLINKS = 255
#: xattrs overlayfs keeps for itself: hidden in a mounted overlay, where BuildKit reads.
_OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")

#: ``excluded(rel_path, is_dir)``: True for a context entry the client does not send.
Excluded = Callable[[str, bool], bool]
#: The kind of digest a context tree keeps per file: the header (owners 0:0, no xattrs) and
#: the bytes, which the file's mode, size and content decide.
CONTEXT_FILE_KIND = "buildkit.context.v1"
#: The kind of a file's plain content sha256 (mason's own key, ``engine.context``): a context
#: tree notes it from the same read, so the file is not read a second time for it.
SHA256_KIND = "sha256"


class FileDigests(Protocol):
    """Per-file digests kept between builds (``mason.engine.filedigests.RootDigests``)."""

    def get(self, rel: str, kind: str, st: os.stat_result) -> str | None:
        """The digest kept for ``rel`` if it was read under the same stat, else None."""

    def put(
        self,
        rel: str,
        kind: str,
        st: os.stat_result,
        digest: str,
        *,
        since_ns: int,
        after: os.stat_result,
    ) -> None:
        """Keep ``rel``'s digest, read under ``st`` (taken after the clock read ``since_ns``);
        ``after``: the file's ``fstat`` once read (unless it is ``st``, nothing is kept)."""


class ChecksumError(DiagnosticError):
    """A selected path is missing, resolves through too many symlinks, or cannot be read."""

    reference = "content-checksum"


class RecordType(enum.Enum):
    FILE = "file"
    DIR = "dir"  # the directory as a whole: its Merkle digest
    DIR_HEADER = "dir-header"  # the directory's own header
    SYMLINK = "symlink"


class _Record(Struct):
    type: RecordType
    rel: str = ""  # the path below the root, for reading the entry ("" is the root)
    st: os.stat_result | None = None  # lstat, taken when the directory was listed
    linkname: str = ""
    xattrs: tuple[tuple[str, bytes], ...] = ()
    digest: Digest | None = None


def file_header(
    st: os.stat_result,
    linkname: str = "",
    *,
    uid: int | None = None,
    gid: int | None = None,
    xattrs: Iterable[tuple[str, bytes]] = (),
) -> bytes:
    """The tarsum-v1 header BuildKit hashes for one entry (``WriteV1TarsumHeaders``);
    ``xattrs`` sorted by name, already filtered to those BuildKit keeps."""
    mode = stat.S_IMODE(st.st_mode)
    size = 0
    if stat.S_ISREG(st.st_mode):
        flag, size = "0", st.st_size
    elif stat.S_ISDIR(st.st_mode):
        flag = "5"
    elif stat.S_ISLNK(st.st_mode):
        flag, mode = "2", mode | 0o777
    elif stat.S_ISCHR(st.st_mode):
        flag = "3"
    elif stat.S_ISBLK(st.st_mode):
        flag = "4"
    elif stat.S_ISFIFO(st.st_mode):
        flag = "6"
    elif stat.S_ISSOCK(st.st_mode):
        # BuildKit clears the socket bit first, so tar's header is a regular file
        # with the socket's size (0), and no content is read.
        flag = "0"
    else:
        raise ChecksumError(f"cannot checksum an unknown file type (mode {st.st_mode:o})")
    major = minor = 0
    if flag in ("3", "4"):
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    fields = (
        ("name", ""),
        ("mode", str(mode)),
        ("uid", str(st.st_uid if uid is None else uid)),
        ("gid", str(st.st_gid if gid is None else gid)),
        ("size", str(size)),
        ("typeflag", flag),
        ("linkname", linkname),
        ("uname", ""),
        ("gname", ""),
        ("devmajor", str(major)),
        ("devminor", str(minor)),
    )
    header = "".join(k + v for k, v in fields).encode("utf-8", "surrogateescape")
    return header + b"".join(k.encode("utf-8", "surrogateescape") + v for k, v in xattrs)


def header_digest(host_path: str, *, uid: int | None = None, gid: int | None = None) -> Digest:
    """One lone entry's checksum (its header, then a regular file's bytes), e.g. the
    Dockerfile as the client sends it (``uid=gid=0``). Trees use ``ContentTree``."""
    st = os.lstat(host_path)
    link = os.readlink(host_path) if stat.S_ISLNK(st.st_mode) else ""
    h = new_sha256(file_header(st, link, uid=uid, gid=gid))
    if stat.S_ISREG(st.st_mode) and st.st_size > 0:
        with open(host_path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return digest_of(h)


def _kept_xattr(name: str) -> bool:
    """``v1TarHeaderSelect``: security.capability and every non-security/system xattr."""
    if name.startswith(_OVERLAY_XATTRS):
        return False
    return name == "security.capability" or not name.startswith(("security.", "system."))


def _read_xattrs(dir_fd: int, name: str) -> tuple[tuple[str, bytes], ...]:
    # Through the listed directory's descriptor: the entry itself, never a symlink's target.
    path = f"/proc/self/fd/{dir_fd}/{name}"
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return ()
        raise
    found = []
    for attr in sorted(n for n in names if _kept_xattr(n)):
        try:
            found.append((attr, os.getxattr(path, attr, follow_symlinks=False)))
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
    return tuple(sorted(found, key=lambda kv: kv[0].encode("utf-8", "surrogateescape")))


def _key(path: str) -> bytes:
    """A tree key: the rooted path with every ``/`` as NUL (the root is ``b""``)."""
    p = posixpath.normpath("/" + path.lstrip("/")) if path not in ("", "/") else "/"
    return b"" if p == "/" else p.encode("utf-8", "surrogateescape").replace(b"/", b"\0")


def _path(key: bytes) -> str:
    return key.replace(b"\0", b"/").decode("utf-8", "surrogateescape")


class ContentTree:
    """A directory tree as BuildKit's checksum cache sees it, read and hashed lazily.

    Build one per tree with ``for_context`` or ``for_snapshot`` and keep it as long as
    the tree does not change: each entry is listed, read and hashed at most once,
    whatever number of selectors ask for it. ``checksum(selector)`` is one selector's
    checksum; ``mason.llb.keys.content_key`` turns an input's selectors into its content
    key. Safe to call from several threads. ``trace`` holds every digest computed so
    far with its kind and preimage (a file's content left out): what ``--explain-cache``
    can name, and what tests compare.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        context: bool,
        excluded: Excluded | None,
        digests: FileDigests | None = None,
    ):
        # before any stat of the tree: what a kept digest's racy check compares with
        self._since_ns = time.time_ns()
        self._digests = digests if context else None
        try:
            self._root = FsRoot(root)
        except OSError as exc:
            raise ChecksumError(f"cannot read the tree {os.fspath(root)!r}: {exc}") from exc
        self._context = context
        self._excluded = excluded
        self._lock = threading.RLock()
        root_st = os.stat(self._root.path)
        self.records: dict[bytes, _Record] = {
            b"": _Record(RecordType.DIR),
            b"\0": _Record(
                RecordType.DIR_HEADER, st=root_st, digest=EMPTY_DIGEST if context else None
            ),
        }
        self._listed: set[bytes] = set()
        self._subdirs: dict[bytes, list[bytes]] = {}
        self._failed: ChecksumError | None = None
        self._sorted: list[bytes] = []
        self._unsorted: list[bytes] = list(self.records)  # keys not yet in _sorted
        self.trace: dict[Digest, tuple[str, bytes]] = {}

    @classmethod
    def for_context(
        cls,
        root: str | os.PathLike[str],
        *,
        excluded: Excluded | None = None,
        digests: FileDigests | None = None,
    ) -> ContentTree:
        """The build context at ``root`` as the client sends it: owners 0:0, no xattrs,
        an empty root header. ``excluded`` drops what the client does not send
        (``.dockerignore``); an excluded directory is not descended into. ``digests``:
        the per-file digests kept from earlier builds of this root, read and filled."""
        return cls(root, context=True, excluded=excluded, digests=digests)

    @classmethod
    def for_snapshot(cls, root: str | os.PathLike[str]) -> ContentTree:
        """An op's result at ``root`` (the merged tree: a RUN's rootfs, a stage, a file
        op's output, a download's directory), hashed as it is on disk: owners, modes and
        xattrs included. The tree must not change while the object is used."""
        return cls(root, context=False, excluded=None)

    @property
    def root(self) -> str:
        return str(self._root.path)

    def close(self) -> None:
        self._root.close()

    def __enter__(self) -> ContentTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading the tree ----------------------------------------------------------------

    def _get(self, k: bytes) -> _Record | None:
        """The record at ``k``, listing the directories above it first (a full scan's
        records: an entry exists when every component above it is a real directory)."""
        rec = self.records.get(k)
        if rec is not None or not k:
            return rec
        if k.endswith(b"\0"):  # a directory's header comes with the directory's entry
            self._get(k[:-1])
        else:
            self._list(k[: k.rfind(b"\0")])
        return self.records.get(k)

    def _list(self, k: bytes) -> None:
        if k in self._listed:
            return
        rec = self._get(k)
        self._listed.add(k)
        if rec is None or rec.type is not RecordType.DIR:
            return
        rel = _path(k).lstrip("/")
        subdirs: list[bytes] = []
        try:
            fd = self._root.open(rel or ".", os.O_RDONLY | os.O_DIRECTORY, follow=False)
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        sub = self._add(fd, posixpath.join(rel, entry.name), entry)
                        if sub is not None:
                            subdirs.append(sub)
            finally:
                os.close(fd)
        except OSError as exc:
            # A half-listed directory would hash as a different one: the tree is unusable.
            self._failed = ChecksumError(
                f"cannot list {'/' + rel!r}: {exc.strerror}", context=[f"in {self.root}"]
            )
            raise self._failed from exc
        self._subdirs[k] = subdirs

    def _add(self, dir_fd: int, rel: str, entry: os.DirEntry[str]) -> bytes | None:
        """Record one listed entry; returns its key when it is a directory."""
        st = entry.stat(follow_symlinks=False)
        is_dir = stat.S_ISDIR(st.st_mode)
        if self._excluded is not None and self._excluded(rel, is_dir):
            return None
        xattrs = () if self._context else _read_xattrs(dir_fd, entry.name)
        k = _key(rel)
        if is_dir:
            self.records[k] = _Record(RecordType.DIR, rel)
            self.records[k + b"\0"] = _Record(RecordType.DIR_HEADER, rel, st, xattrs=xattrs)
            self._unsorted += (k, k + b"\0")
            return k
        if stat.S_ISLNK(st.st_mode):
            link = os.readlink(entry.name, dir_fd=dir_fd)
            self.records[k] = _Record(RecordType.SYMLINK, rel, st, link, xattrs)
        else:
            self.records[k] = _Record(RecordType.FILE, rel, st, xattrs=xattrs)
        self._unsorted.append(k)
        return None

    def _load_subtree(self, k: bytes) -> None:
        """List ``k`` and every directory below it (what a directory digest reads)."""
        pending = [k]
        while pending:
            d = pending.pop()
            self._list(d)
            pending.extend(self._subdirs.get(d, ()))

    def _sorted_keys(self) -> list[bytes]:
        if self._unsorted:
            # Two sorted runs: Python's sort merges them in linear time.
            self._sorted = sorted(self._sorted + sorted(self._unsorted))
            self._unsorted = []
        return self._sorted

    def _entry_digest(self, rec: _Record) -> Digest:
        assert rec.st is not None
        digests = self._digests
        if digests is None or not stat.S_ISREG(rec.st.st_mode) or rec.st.st_size == 0:
            return self._read_digest(rec)[0]  # nothing to read, or nothing kept
        found = digests.get(rec.rel, CONTEXT_FILE_KIND, rec.st)
        if found is not None:
            return Digest(found)
        plain = new_sha256()
        dgst, after = self._read_digest(rec, plain)
        if after is not None:
            since_ns = self._since_ns
            digests.put(rec.rel, CONTEXT_FILE_KIND, rec.st, dgst, since_ns=since_ns, after=after)
            digests.put(
                rec.rel, SHA256_KIND, rec.st, digest_of(plain), since_ns=since_ns, after=after
            )
        return dgst

    def _read_digest(self, rec: _Record, plain: Any = None) -> tuple[Digest, os.stat_result | None]:
        """The entry's digest, and for a regular file its ``fstat`` after the read; ``plain``
        is fed the file's bytes too."""
        assert rec.st is not None
        owner = 0 if self._context else None
        h = new_sha256(file_header(rec.st, rec.linkname, uid=owner, gid=owner, xattrs=rec.xattrs))
        after = None
        if stat.S_ISREG(rec.st.st_mode) and rec.st.st_size > 0:
            try:
                fd = self._root.open(rec.rel, follow=False)
            except OSError as exc:
                raise ChecksumError(
                    f"cannot read {'/' + rec.rel!r}: {exc.strerror}", context=[f"in {self.root}"]
                ) from exc
            with os.fdopen(fd, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    if plain is not None:
                        plain.update(chunk)
                after = os.fstat(f.fileno())
        return digest_of(h), after

    # --- digests -------------------------------------------------------------------------

    def _digest(self, k: bytes, follow_trailing: bool = False) -> tuple[bytes, _Record]:
        asked = k
        k, rec = self._follow(k, follow_trailing)
        if rec is None:
            raise ChecksumError(f"{_path(asked) or '/'!r} not found", context=[f"in {self.root}"])
        if rec.digest is None:
            if rec.type is RecordType.DIR:
                rec.digest = self._dir_digest(k)
            else:
                rec.digest = self._entry_digest(rec)
                self.trace[rec.digest] = ("file", b"")
        return k, rec

    def _dir_digest(self, k: bytes) -> Digest:
        self._list(k)  # its direct entries: a subdirectory lists itself for its own digest
        keys = self._sorted_keys()
        h = _ListHash()
        prefix = k + b"\0"
        i = bisect.bisect_left(keys, prefix)
        while i < len(keys) and keys[i].startswith(prefix):
            subk = keys[i]
            _, rec = self._digest(subk)
            assert rec.digest is not None
            h.update(subk[len(k) :])
            h.update(rec.digest.encode())
            if rec.type is RecordType.DIR:
                # A subdirectory counts once, by its own digest: seek past it as BuildKit does.
                i = bisect.bisect_left(keys, subk + b"\0\xff")
            else:
                i += 1
        return h.done(self.trace)

    def _follow(self, k: bytes, follow_trailing: bool) -> tuple[bytes, _Record | None]:
        """``getFollowLinks``: resolve symlinked components inside the tree."""
        rec = self._get(k)
        if rec is not None and (not follow_trailing or rec.type is not RecordType.SYMLINK):
            return k, rec
        if not k:
            return k, None
        current, remaining, walked = "/", _path(k).strip("/"), 0
        trailing = _path(k).endswith("/")
        rec = None
        while remaining:
            part, _, remaining = remaining.partition("/")
            nxt = posixpath.normpath(posixpath.join(current, part))
            nxt = "/" if nxt in ("", "//") else nxt
            rec = self._get(_key(nxt))
            if (
                rec is None
                or rec.type is not RecordType.SYMLINK
                or (not follow_trailing and not remaining)
            ):
                current = nxt
                continue
            walked += 1
            if walked > _MAX_SYMLINKS:
                raise ChecksumError(
                    f"too many symlinks resolving {_path(k)!r}", context=[f"in {self.root}"]
                )
            remaining = rec.linkname + ("/" + remaining if remaining else "")
            if rec.linkname.startswith("/"):
                current = "/"
        if trailing:
            rec = self._get(_key(current) + b"\0")
            return _key(current) + b"\0", rec
        return _key(current), rec

    # --- selections ----------------------------------------------------------------------

    def checksum(self, sel: Selector) -> Digest:
        """One selector's checksum (``contenthash.Checksum`` of ``/`` + its path).

        Raises ``ChecksumError`` when the path (or a required path) is missing, or a
        directory cannot be listed (then on every later call too)."""
        with self._lock:
            if self._failed is not None:
                raise self._failed
            return self._checksum(sel)

    def _checksum(self, sel: Selector) -> Digest:
        p = posixpath.join("/", sel.path)
        if not sel.has_wildcard_or_filters:
            _, rec = self._digest(_key(p), sel.follow_links)
            assert rec.digest is not None
            return rec.digest
        prefix, included = self._included(p, sel)
        for item in included:
            if item.follow and item.record.type is RecordType.SYMLINK:
                item.digest = self._checksum(Selector(item.path, follow_links=sel.follow_links))
        if not included:
            return EMPTY_DIGEST
        if len(included) == 1 and posixpath.basename(p) == posixpath.basename(included[0].path):
            return Digest(included[0].digest)
        h = _ListHash()
        for item in included:
            rel = item.path[len(prefix) :] if item.path.startswith(prefix) else item.path
            h.update(_key(rel) if rel else b"\0")
            h.update(item.digest.encode())
        return h.done(self.trace)

    def _included(self, p: str, sel: Selector) -> tuple[str, list[_Included]]:
        ends_in_sep = p.endswith("/")
        p = "" if posixpath.normpath(p) == "/" else posixpath.normpath(p)
        include = exclude = match = None
        if sel.include_patterns or sel.exclude_patterns or sel.wildcard:
            from mason.llb.patterns import PatternMatcher, go_path_match

            include = PatternMatcher(sel.include_patterns) if sel.include_patterns else None
            exclude = PatternMatcher(sel.exclude_patterns) if sel.exclude_patterns else None
            match = go_path_match if sel.wildcard else None
        if sel.wildcard:
            self._load_subtree(b"")  # as BuildKit, which scans the whole tree for this
            orig_prefix, k, found = self._wildcard_prefix(p)
        else:
            orig_prefix = p
            k, rec = self._follow(_key(p), False)
            found = rec is not None
            if found:
                # The walk below stops at the first path outside the prefix: its subtree
                # is all it reads (the whole tree for the root).
                self._load_subtree(k)
        resolved_prefix = _path(k) if orig_prefix else ""
        keys = self._sorted_keys()
        # The walk starts at the prefix's own record (a file or symlink prefix is a
        # candidate itself; a directory's whole digest is computed but never included).
        start = bisect.bisect_left(keys, k) if found or not orig_prefix else len(keys)
        walk = _Walk(p, ends_in_sep, match, include, exclude)
        for key in keys[start:]:
            fn = _path(key)
            if resolved_prefix and fn.startswith(resolved_prefix):
                fn = orig_prefix + fn[len(resolved_prefix) :]
            if not walk.visit(self, key, fn):
                break
        for required in sel.required_paths:
            if not any(i.path.startswith(required) for i in walk.included):
                raise ChecksumError(f"{required!r} not found", context=[f"in {self.root}"])
        return orig_prefix, walk.included

    def _wildcard_prefix(self, p: str) -> tuple[str, bytes, bool]:
        fixed, rest = _split_wildcards(p)
        if fixed == "/":
            return "", b"", False
        k, rec = self._follow(_key(fixed), rest != "")
        return fixed, k, rec is not None


class _ListHash(Struct):
    """A file-list digest that keeps its preimage for the trace."""

    parts: list[bytes] = field(default_factory=list)

    def update(self, data: bytes) -> None:
        self.parts.append(data)

    def done(self, trace: dict[Digest, tuple[str, bytes]]) -> Digest:
        preimage = b"".join(self.parts)
        dgst = sha256_bytes(preimage)
        trace[dgst] = ("file-list", preimage)
        return dgst


class _Included(Struct):
    path: str
    record: _Record
    digest: str = ""
    follow: bool = False
    included: bool = False
    include_info: MatchInfo | None = None
    exclude_info: MatchInfo | None = None


class _Walk(Struct):
    """The iteration of ``includedPaths``: headers and files that match, with their parents' headers."""

    p: str
    ends_in_sep: bool
    #: Go's ``path.Match`` for a wildcard selector (``mason.llb.patterns.go_path_match``)
    wildcard: Callable[[str, str], bool] | None
    include: PatternMatcher | None
    exclude: PatternMatcher | None
    included: list[_Included] = field(default_factory=list)
    parents: list[_Included] = field(default_factory=list)
    last_matched_dir: str = ""

    def visit(self, tree: ContentTree, key: bytes, fn: str) -> bool:
        """Handle one key; False ends the walk (past the selected prefix)."""
        while self.parents and not fn.startswith(self.parents[-1].path + "/"):
            self.parents.pop()
        parent = self.parents[-1] if self.parents else None
        dir_header = key.endswith(b"\0")
        if dir_header:
            fn = fn[:-1]
            if fn == self.p and self.ends_in_sep:
                return True
        item = _Included(path=fn, record=tree.records[key], follow=parent is None)
        if self.wildcard is not None:
            if self.p and (
                not self.last_matched_dir or not fn.startswith(self.last_matched_dir + "/")
            ):
                if not self.wildcard(self.p, fn):
                    return True
                self.last_matched_dir = fn
            candidate = (fn + "/").removeprefix(self.last_matched_dir + "/").removesuffix("/")
        else:
            if not (fn + "/").startswith(self.p + "/"):
                return False
            candidate = (fn + "/").removeprefix(self.p + "/").removesuffix("/")
        keep = self._should_include(candidate, item, parent)
        if not keep and not dir_header:
            return True
        _, rec = tree._digest(key)
        if rec.type is RecordType.DIR:
            keep = False  # headers and files only: a directory may be partly excluded
        item.record = rec
        item.digest = rec.digest or ""
        if keep:
            for parent_dir in self.parents:
                if not parent_dir.included:
                    self.included.append(parent_dir)
                    parent_dir.included = True
            self.included.append(item)
            item.included = True
        if rec.type is RecordType.DIR_HEADER:
            self.parents.append(item)
        return True

    def _should_include(self, candidate: str, item: _Included, parent: _Included | None) -> bool:
        if self.include is not None:
            ok, item.include_info = self.include.matches_using_parent(
                candidate, parent.include_info if parent else None
            )
            if not ok:
                return False
        if self.exclude is not None:
            hit, item.exclude_info = self.exclude.matches_using_parent(
                candidate, parent.exclude_info if parent else None
            )
            if hit:
                return False
        return True


def _split_wildcards(p: str) -> tuple[str, str]:
    fixed: list[str] = []
    rest: list[str] = []
    found = False
    for part in posixpath.normpath(p).split("/"):
        if not found and contains_wildcards(part):
            found = True
        part = part or "/"
        (rest if found else fixed).append(part)
    return _go_join(fixed), _go_join(rest)


def _go_join(parts: Sequence[str]) -> str:
    joined = "/".join(x for x in parts if x)
    if not joined:
        return ""
    joined = re.sub(r"/+", "/", joined)
    return posixpath.normpath(joined)
