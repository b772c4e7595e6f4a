"""BuildKit's content checksum of a directory tree (``cache/contenthash``, v0.32.2).

What a COPY from the build context (or a read-only bind mount) is keyed by,
instead of the input's own key:

- a file, symlink or directory *header* hashes as the tarsum-v1 header
  (``name`` empty, ``mode`` = permission and setuid/setgid/sticky bits, ``uid``,
  ``gid``, ``size``, ``typeflag``, ``linkname``, ``uname``/``gname`` empty,
  ``devmajor``/``devminor``; no mtime) followed by a regular file's bytes;
- a directory hashes as the concatenation, in key order, of each direct entry's
  key (its path below the directory with every ``/`` written as NUL, the
  directory's own header being the key ``"\\0"``) and that entry's digest, a
  subdirectory contributing its own directory digest (a Merkle tree);
- a wildcard or include/exclude selection hashes the matching headers and files
  the same way, keyed by their paths below the pattern's fixed prefix.

The owner is what the sender declared: the BuildKit client sends every context
file as 0:0, so a context tree is hashed with ``uid = gid = 0`` whatever is on
disk, and the context root's own header is the sha256 of nothing. Extended
attributes are not read (BuildKit hashes ``security.capability`` and user xattrs;
the Dockerfile client does not send them).
"""

from __future__ import annotations

import enum
import os
import posixpath
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from mason.digest import Digest, digest_of, new_sha256, sha256_bytes
from mason.errors import MasonError
from mason.llb.cachemap import Selector, contains_wildcards
from mason.llb.patterns import MatchInfo, PatternMatcher, go_path_match

__all__ = ["ChecksumError", "ContentTree", "file_header", "header_digest"]

EMPTY_DIGEST = sha256_bytes(b"")
_MAX_SYMLINKS = 255


class ChecksumError(MasonError):
    """A selected path is missing or resolves through too many symlinks."""


class RecordType(enum.Enum):
    FILE = "file"
    DIR = "dir"  # the directory as a whole: its Merkle digest
    DIR_HEADER = "dir-header"  # the directory's own header
    SYMLINK = "symlink"


@dataclass
class _Record:
    type: RecordType
    host_path: str | None = None
    linkname: str = ""
    digest: Digest | None = None


def file_header(
    st: os.stat_result, linkname: str = "", *, uid: int | None = None, gid: int | None = None
) -> bytes:
    """The tarsum-v1 header BuildKit hashes for one entry (``WriteV1TarsumHeaders``)."""
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
    else:
        raise ChecksumError(f"cannot checksum a socket or unknown file type (mode {st.st_mode:o})")
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
    return "".join(k + v for k, v in fields).encode("utf-8", "surrogateescape")


def header_digest(host_path: str, *, uid: int | None = None, gid: int | None = None) -> Digest:
    """One entry's checksum: its header, then a regular file's bytes."""
    st = os.lstat(host_path)
    link = os.readlink(host_path) if stat.S_ISLNK(st.st_mode) else ""
    h = new_sha256(file_header(st, link, uid=uid, gid=gid))
    if stat.S_ISREG(st.st_mode) and st.st_size > 0:
        with open(host_path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return digest_of(h)


def _key(path: str) -> bytes:
    """A tree key: the rooted path with every ``/`` as NUL (the root is ``b""``)."""
    p = posixpath.normpath("/" + path.lstrip("/")) if path not in ("", "/") else "/"
    return b"" if p == "/" else p.encode("utf-8", "surrogateescape").replace(b"/", b"\0")


def _path(key: bytes) -> str:
    return key.replace(b"\0", b"/").decode("utf-8", "surrogateescape")


@dataclass
class ContentTree:
    """A directory tree as BuildKit's checksum cache sees it, with lazily computed digests.

    ``context=True`` is a build context as the client sent it: owner 0:0 and an
    empty root header. ``excluded(rel_path, is_dir)`` drops what the client did
    not send (``.dockerignore``); an excluded directory is not descended into.
    """

    records: dict[bytes, _Record] = field(default_factory=dict)
    uid: int | None = None
    gid: int | None = None
    _sorted: list[bytes] = field(default_factory=list)
    #: Every digest computed so far with its kind and preimage (a file's content is
    #: left out): what ``--explain-cache`` can name, and what tests compare.
    trace: dict[Digest, tuple[str, bytes]] = field(default_factory=dict)

    @classmethod
    def from_directory(
        cls, root: str, *, context: bool = True, excluded: object = None
    ) -> ContentTree:
        tree = cls(uid=0 if context else None, gid=0 if context else None)
        tree.records[b""] = _Record(RecordType.DIR)
        tree.records[b"\0"] = _Record(
            RecordType.DIR_HEADER, host_path=root, digest=EMPTY_DIGEST if context else None
        )
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            rel_dir = "" if rel_dir == "." else rel_dir
            kept_dirs = []
            for name in sorted(dirnames + filenames):
                rel = posixpath.join(rel_dir, name) if rel_dir else name
                host = os.path.join(dirpath, name)
                is_dir = name in dirnames and not os.path.islink(host)
                if callable(excluded) and excluded(rel, is_dir):
                    continue
                tree._add(rel, host, is_dir)
                if is_dir:
                    kept_dirs.append(name)
            dirnames[:] = kept_dirs
        tree._sorted = sorted(tree.records)
        return tree

    def _add(self, rel: str, host: str, is_dir: bool) -> None:
        k = _key(rel)
        if is_dir:
            self.records[k] = _Record(RecordType.DIR)
            self.records[k + b"\0"] = _Record(RecordType.DIR_HEADER, host_path=host)
        elif os.path.islink(host):
            self.records[k] = _Record(
                RecordType.SYMLINK, host_path=host, linkname=os.readlink(host)
            )
        else:
            self.records[k] = _Record(RecordType.FILE, host_path=host)

    # --- digests -------------------------------------------------------------------------

    def _digest(self, k: bytes, follow_trailing: bool = False) -> tuple[bytes, _Record]:
        k, rec = self._follow(k, follow_trailing)
        if rec is None:
            raise ChecksumError(f"{_path(k) or '/'!r} not found")
        if rec.digest is None:
            if rec.type is RecordType.DIR:
                rec.digest = self._dir_digest(k)
            else:
                assert rec.host_path is not None
                rec.digest = header_digest(rec.host_path, uid=self.uid, gid=self.gid)
                self.trace[rec.digest] = ("file", b"")
        return k, rec

    def _dir_digest(self, k: bytes) -> Digest:
        h = _ListHash()
        prefix = k + b"\0"
        skip: bytes | None = None
        for subk in self._keys_from(prefix):
            if not subk.startswith(prefix):
                break
            if skip is not None and subk.startswith(skip):
                continue
            skip = None
            _, rec = self._digest(subk)
            h.update(subk[len(k) :])
            assert rec.digest is not None
            h.update(rec.digest.encode())
            if rec.type is RecordType.DIR:
                skip = subk + b"\0"  # a subdirectory counts once, by its own digest
        return h.done(self.trace)

    def _keys_from(self, lower: bytes) -> Iterator[bytes]:
        import bisect

        i = bisect.bisect_left(self._sorted, lower)
        yield from self._sorted[i:]

    def _follow(self, k: bytes, follow_trailing: bool) -> tuple[bytes, _Record | None]:
        """``getFollowLinks``: resolve symlinked components inside the tree."""
        rec = self.records.get(k)
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
            rec = self.records.get(_key(nxt))
            if (
                rec is None
                or rec.type is not RecordType.SYMLINK
                or (not follow_trailing and not remaining)
            ):
                current = nxt
                continue
            walked += 1
            if walked > _MAX_SYMLINKS:
                raise ChecksumError(f"too many symlinks resolving {_path(k)!r}")
            remaining = rec.linkname + ("/" + remaining if remaining else "")
            if rec.linkname.startswith("/"):
                current = "/"
        if trailing:
            rec = self.records.get(_key(current) + b"\0")
            return _key(current) + b"\0", rec
        return _key(current), rec

    # --- selections ----------------------------------------------------------------------

    def checksum(self, sel: Selector) -> Digest:
        """One selector's checksum (``contenthash.Checksum`` of ``/`` + its path)."""
        p = posixpath.join("/", sel.path)
        if not sel.has_wildcard_or_filters:
            _, rec = self._digest(_key(p), sel.follow_links)
            assert rec.digest is not None
            return rec.digest
        prefix, included = self._included(p, sel)
        for item in included:
            if item.follow and item.record.type is RecordType.SYMLINK:
                item.digest = self.checksum(Selector(item.path, follow_links=sel.follow_links))
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
        include = PatternMatcher(sel.include_patterns) if sel.include_patterns else None
        exclude = PatternMatcher(sel.exclude_patterns) if sel.exclude_patterns else None
        if sel.wildcard:
            orig_prefix, k, found = self._wildcard_prefix(p)
        else:
            orig_prefix = p
            k, rec = self._follow(_key(p), False)
            found = rec is not None
        resolved_prefix = _path(k) if orig_prefix else ""
        start = (k + b"\0") if orig_prefix else b""
        keys = self._keys_from(start) if (found or not orig_prefix) else iter(())
        walk = _Walk(p, ends_in_sep, sel.wildcard, include, exclude)
        for key in keys:
            fn = _path(key)
            if resolved_prefix and fn.startswith(resolved_prefix):
                fn = orig_prefix + fn[len(resolved_prefix) :]
            if not walk.visit(self, key, fn):
                break
        for required in sel.required_paths:
            if not any(i.path.startswith(required) for i in walk.included):
                raise ChecksumError(f"{required!r} not found")
        return orig_prefix, walk.included

    def _wildcard_prefix(self, p: str) -> tuple[str, bytes, bool]:
        fixed, rest = _split_wildcards(p)
        if fixed == "/":
            return "", b"", False
        k, rec = self._follow(_key(fixed), rest != "")
        return fixed, k, rec is not None


@dataclass
class _ListHash:
    """A file-list digest that keeps its preimage for the trace."""

    parts: list[bytes] = field(default_factory=list)

    def update(self, data: bytes) -> None:
        self.parts.append(data)

    def done(self, trace: dict[Digest, tuple[str, bytes]]) -> Digest:
        preimage = b"".join(self.parts)
        dgst = sha256_bytes(preimage)
        trace[dgst] = ("file-list", preimage)
        return dgst


@dataclass
class _Included:
    path: str
    record: _Record
    digest: str = ""
    follow: bool = False
    included: bool = False
    include_info: MatchInfo | None = None
    exclude_info: MatchInfo | None = None


@dataclass
class _Walk:
    """The iteration of ``includedPaths``: headers and files that match, with their parents' headers."""

    p: str
    ends_in_sep: bool
    wildcard: bool
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
        if self.wildcard:
            if self.p and (
                not self.last_matched_dir or not fn.startswith(self.last_matched_dir + "/")
            ):
                if not go_path_match(self.p, fn):
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
