"""The build context: ``.dockerignore``, source selection with Docker's wildcard
rules, content checksums for cache keys, and COPY's copy semantics.

Checksums cover what a COPY makes of a file -- relative path, type, content,
permission bits, symlink target -- and not mtime or the context's uid/gid
(docs/architecture.md §4), so a fresh checkout of the same tree hits the cache.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import posixpath
import re
import stat
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mason.digest import digest_of, new_sha256
from mason.errors import BuildError
from mason.fsroot import FsRoot, PathOutsideError, clean_path
from mason.llb.contenthash import EMPTY_DIGEST, SHA256_KIND
from mason.structs import Struct, replace

if TYPE_CHECKING:
    from mason.engine.chmod import ModeSet
    from mason.engine.filedigests import RootDigests

__all__ = [
    "ContextEntry",
    "CopyOptions",
    "DockerIgnore",
    "Source",
    "checksum_sources",
    "copy_sources",
    "select_copy_sources",
    "select_sources",
]

_CHUNK = 1 << 20


class DockerIgnore:
    """``.dockerignore`` rules (an adapter over ``mason.dockerfile``'s ``IgnoreMatcher``)."""

    def __init__(self, patterns: Sequence[str] = (), *, matcher: Any = None) -> None:
        from mason.dockerfile.dockerignore import IgnoreMatcher

        self._matcher = matcher if matcher is not None else IgnoreMatcher(patterns)
        #: rel -> ignored: a build asks for each context file several times (its size for the
        #: progress line, BuildKit's checksum, mason's); the rules never change
        self._memo: dict[str, bool] = {}

    @classmethod
    def load(cls, context: Path, dockerfile: Path | None = None) -> DockerIgnore:
        """``<Dockerfile>.dockerignore`` beside the Dockerfile (a file the user names), else the
        context's ``.dockerignore``, opened inside the context: a symlink out of it is no file."""
        from mason.dockerfile.dockerignore import IgnoreMatcher, read_ignore_file

        specific = Path(str(dockerfile or (context / "Dockerfile")) + ".dockerignore")
        try:
            if specific.is_file():
                data, source = specific.read_bytes(), str(specific)
            else:
                data, source = (
                    _read_in_context(context, ".dockerignore"),
                    str(context / ".dockerignore"),
                )
        except OSError as exc:
            raise BuildError(
                f"cannot read the .dockerignore of {context}: {exc.strerror or exc}",
                reference="dockerignore",
            ) from exc
        return cls(matcher=IgnoreMatcher(read_ignore_file(data) if data else (), source=source))

    @classmethod
    def load_named(cls, root: Path) -> DockerIgnore:
        """A named directory context's rules: only the ``.dockerignore`` at its root, as
        BuildKit's dockerui reads it for ``--build-context NAME=DIR`` (no Dockerfile beside it)."""
        from mason.dockerfile.dockerignore import IgnoreMatcher, read_ignore_file

        try:
            data = _read_in_context(root, ".dockerignore")
        except OSError as exc:
            raise BuildError(
                f"cannot read the .dockerignore of {root}: {exc.strerror or exc}",
                reference="dockerignore",
            ) from exc
        source = str(root / ".dockerignore")
        return cls(matcher=IgnoreMatcher(read_ignore_file(data) if data else (), source=source))

    def ignored(self, rel: str) -> bool:
        found = self._memo.get(rel)
        if found is None:
            found = self._memo[rel] = bool(self._matcher.excluded(rel))
        return found

    @property
    def empty(self) -> bool:
        """No rules: every file of the context is in it."""
        return not self._matcher.patterns

    @property
    def has_exceptions(self) -> bool:
        return bool(self._matcher.has_exclusions)

    def can_skip_dir(self, rel: str) -> bool:
        """The directory is excluded and no ``!`` exception can re-include anything below it."""
        return bool(self._matcher.can_skip_dir(rel))


def _read_in_context(context: Path, name: str) -> bytes:
    """A regular file of the context, resolved inside it; b"" when there is none."""
    try:
        with FsRoot(context) as fs:
            fd = fs.open(name, os.O_RDONLY | os.O_NONBLOCK)
    except PathOutsideError:
        return b""
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return b""
        raise
    with os.fdopen(fd, "rb") as f:
        return f.read() if stat.S_ISREG(os.fstat(f.fileno()).st_mode) else b""


def _compile(pattern: str) -> re.Pattern[str]:
    out = ["^"]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if i < len(pattern) and pattern[i] == "/":
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                cls = pattern[i + 1 : j]
                if cls.startswith("^"):
                    cls = "!" + cls[1:]
                out.append(fnmatch.translate("[" + cls + "]")[4:-3])
                i = j
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    out.append("$")
    return re.compile("".join(out), re.DOTALL)


def _has_wildcard(s: str) -> bool:
    return any(ch in s for ch in "*?[")


class Source(Struct, frozen=True):
    """One selected source: its path on the host and its name relative to the source root.

    ``include`` and ``exclude`` (COPY --parents, COPY/ADD --exclude) filter what a directory source
    copies, matched as BuildKit's copy (tonistiigi/fsutil) matches them: against paths relative to
    the source, with .dockerignore's rules (moby/patternmatcher), never against the source itself."""

    path: Path
    rel: str
    is_dir: bool
    include: DockerIgnore | None = None
    exclude: DockerIgnore | None = None


def _in_root(root: Path, what: str) -> FsRoot:
    try:
        return FsRoot(root)
    except OSError as exc:
        raise BuildError(
            f"cannot open the {what} at {root}: {exc.strerror}", reference="copy-failed"
        ) from exc


def _resolved_source(fs: FsRoot, rel: str, pattern: str, what: str, *, ignored: bool) -> Source:
    """One source, a top-level symlink followed inside the root (as BuildKit's copy does)."""
    try:
        res = fs.resolve(rel)
    except PathOutsideError as exc:
        raise BuildError(
            exc.message, reference="source-missing", context=[f"{pattern} in the {what}"]
        ) from None
    if not res.exists or ignored:
        raise BuildError(
            f'failed to compute cache key: "/{rel}": not found',
            reference="source-missing",
            context=[
                f"{pattern} is not in the {what}"
                + (" (or excluded by .dockerignore)" if what == "build context" else "")
            ],
        )
    return Source(fs.path.joinpath(*res.parts), rel, res.is_dir)


def select_sources(
    root: Path,
    patterns: Sequence[str],
    ignore: DockerIgnore | None,
    *,
    what: str = "build context",
    allow_empty_wildcard: bool = False,
) -> list[Source]:
    """Expand source patterns against ``root``, every path resolved inside it
    (``mason.fsroot``). A path without wildcards must exist; a wildcard matching nothing is
    "no source files were specified" unless ``allow_empty_wildcard`` (COPY and ADD in
    frontend 1.26, whose copy actions set ``allowEmptyWildcard``: it copies nothing)."""
    out: list[Source] = []
    with _in_root(root, what) as fs:
        for pattern in patterns:
            norm = clean_path(pattern).lstrip("/")
            if norm == "":
                out.append(Source(root, ".", True))
                continue
            if _has_wildcard(norm):
                matches = _glob(fs, norm.split("/"), "", ignore)
                if not matches and not allow_empty_wildcard:
                    raise BuildError(
                        f"no source files were specified: {pattern} matched nothing in the {what}",
                        reference="source-missing",
                    )
                out.extend(
                    _resolved_source(fs, rel, pattern, what, ignored=False) for rel in matches
                )
                continue
            ignored = ignore is not None and ignore.ignored(norm) and not ignore.has_exceptions
            out.append(_resolved_source(fs, norm, pattern, what, ignored=ignored))
    return out


def select_copy_sources(
    root: Path,
    patterns: Sequence[str],
    ignore: DockerIgnore | None,
    *,
    what: str = "build context",
    parents: bool = False,
    exclude: Sequence[str] = (),
) -> list[Source]:
    """COPY/ADD's sources with ``--parents`` and ``--exclude`` as BuildKit v0.32.2 reads them.

    With ``--parents`` each pattern ``dir/./sub`` (or ``sub``: the pivot is the root) copies the
    pivot directory's contents that ``sub`` includes (``*``, ``**``; a directory includes what is
    under it), with the directories on the way, so the paths below the pivot are kept. A pattern
    without wildcards must exist. ``--exclude`` patterns are relative to each source."""
    excluded = DockerIgnore(exclude) if exclude else None
    if not parents:
        return [
            replace(s, exclude=excluded)
            for s in select_sources(root, patterns, ignore, what=what, allow_empty_wildcard=True)
        ]
    out: list[Source] = []
    for pattern in patterns:
        pivot, sep, sub = pattern.partition("/./")
        if not sep:
            pivot, sub = "/", pattern
        sub = clean_path("/" + sub).lstrip("/")
        if not _has_wildcard(pivot) and not _has_wildcard(sub):
            select_sources(root, [posixpath.join(pivot, sub)], ignore, what=what)  # must exist
        for base in select_sources(root, [pivot], ignore, what=what, allow_empty_wildcard=True):
            if not base.is_dir:
                raise BuildError(
                    f"COPY --parents: {pattern}: {base.rel} is not a directory",
                    reference="source-missing",
                )
            out.append(
                replace(base, include=DockerIgnore([sub]) if sub else None, exclude=excluded)
            )
    return out


def _glob(fs: FsRoot, parts: list[str], prefix: str, ignore: DockerIgnore | None) -> list[str]:
    """The names under ``fs`` matching ``parts``; directories on the way are resolved
    inside the root, so a symlinked directory never lists the host."""
    head, rest = parts[0], parts[1:]
    try:
        base = fs.resolve(prefix)
    except PathOutsideError:
        return []
    if not base.is_dir:
        return []
    base_path = fs.path.joinpath(*base.parts)
    if _has_wildcard(head):
        pattern = _compile(head)
        names = [n for n in sorted(os.listdir(base_path)) if pattern.match(n)]
    else:
        names = [head] if os.path.lexists(base_path / head) else []
    result: list[str] = []
    for name in names:
        rel = f"{prefix}/{name}" if prefix else name
        if ignore is not None and ignore.ignored(rel):
            continue
        result.extend(_glob(fs, rest, rel, ignore) if rest else [rel])
    return result


def _skip_dir(src: Source, ignore: DockerIgnore | None, rel: str) -> bool:
    """Nothing under the directory ``rel`` (relative to the source) can be copied."""
    if ignore is not None and ignore.can_skip_dir(os.path.normpath(os.path.join(src.rel, rel))):
        return True
    return src.exclude is not None and src.exclude.can_skip_dir(rel)


def _hidden(src: Source, ignore: DockerIgnore | None, rel: str) -> bool:
    """The entry ``rel`` (relative to the source) is left out: .dockerignore'd, ``--exclude``d, or
    not included by ``--parents``' pattern (a directory on the way comes with what it holds)."""
    if ignore is not None and ignore.ignored(os.path.normpath(os.path.join(src.rel, rel))):
        return True
    if src.exclude is not None and src.exclude.ignored(rel):
        return True
    return src.include is not None and not src.include.ignored(rel)


def _walk(src: Source, ignore: DockerIgnore | None) -> Iterable[tuple[str, str]]:
    """(relative name under the source, host path) for the source and everything under it
    (strings: a ``Path`` per entry costs more than the rest of a checksum's walk)."""
    yield "", str(src.path)
    if not src.is_dir:
        return
    excluded_dirs: set[str] = set()  # walked into for a possible exception, not yielded yet
    for dirpath, dirnames, filenames in os.walk(src.path):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, src.path)
        keep = [
            d
            for d in dirnames
            if not _skip_dir(src, ignore, os.path.normpath(os.path.join(rel_dir, d)))
        ]
        # a symlink to a directory is an entry of its own, never walked into
        dirnames[:] = [d for d in keep if not os.path.islink(os.path.join(dirpath, d))]
        walked = set(dirnames)
        for name in sorted(keep + filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if _hidden(src, ignore, rel):
                if name in walked:
                    excluded_dirs.add(rel)
                continue
            # an excluded directory an exception re-includes something from comes first (as
            # BuildKit's walker adds the parents of what it includes)
            parent = os.path.dirname(rel)
            missing = []
            while parent in excluded_dirs:
                excluded_dirs.discard(parent)
                missing.append(parent)
                parent = os.path.dirname(parent)
            for d in reversed(missing):
                yield d, os.path.join(src.path, d)
            yield rel, os.path.join(dirpath, name)


#: one walked entry: (path relative to the context, kind, mode bits, file sha256 or link target)
ContextEntry = tuple[str, str, int, str]


def checksum_sources(
    sources: Sequence[Source],
    ignore: DockerIgnore | None,
    entries: list[ContextEntry] | None = None,
    digests: RootDigests | None = None,
) -> str:
    """sha256 over (name, type, mode bits, content sha256 or link target) of every selected entry.

    With ``entries``, the same pass also appends one ``ContextEntry`` per entry, so explaining a
    later miss costs no second read of the context. ``digests``: the kept file digests of the
    root the sources were selected in; an unchanged file is not read again."""
    since_ns = time.time_ns()  # before any stat: what a kept digest's racy check compares with
    base = digests.prefix if digests is not None else None
    h = new_sha256()
    for src in sources:
        h.update(f"source {src.rel}\0".encode())
        for rel, path in _walk(src, ignore):
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            name = os.path.normpath(os.path.join(src.rel, rel)) if rel else src.rel
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                h.update(f"L {rel} {mode:o} {target}\0".encode())
                entry = (name, "symlink", mode, target)
            elif stat.S_ISDIR(st.st_mode):
                h.update(f"D {rel} {mode:o}\0".encode())
                entry = (name, "dir", mode, "")
            elif stat.S_ISREG(st.st_mode):
                kept = None
                if digests is not None and base is not None and path.startswith(base):
                    kept = (digests, path[len(base) :], since_ns)
                own = _file_sha256(path, st, kept)
                # "f": the content's digest, not its bytes (mason.v1 before had "F" and the bytes)
                h.update(f"f {rel} {mode:o} {st.st_size} {own}\0".encode())
                entry = (name, "file", mode, own)
            else:
                h.update(f"O {rel} {stat.S_IFMT(st.st_mode):o}\0".encode())
                entry = (name, "other", mode, "")
            if entries is not None:
                entries.append(entry)
    return digest_of(h)


def _file_sha256(path: str, st: os.stat_result, kept: tuple[RootDigests, str, int] | None) -> str:
    """A regular file's sha256 (``st``: its lstat), from the kept digests when unchanged."""
    if st.st_size == 0:
        return EMPTY_DIGEST  # nothing to read
    if kept is not None and (found := kept[0].get(kept[1], SHA256_KIND, st)) is not None:
        return found
    dgst, after = _read_sha256(path)
    if kept is not None:
        kept[0].put(kept[1], SHA256_KIND, st, dgst, since_ns=kept[2], after=after)
    return dgst


def _read_sha256(path: str) -> tuple[str, os.stat_result]:
    """The file's sha256 and its ``fstat`` once read (the only place a context file is read
    for ``checksum_sources``)."""
    own = new_sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            own.update(chunk)
        return digest_of(own), os.fstat(f.fileno())


class CopyOptions(Struct, frozen=True):
    uid: int | None = None
    gid: int | None = None
    chmod: int | None = None
    #: keep the source's owners when no --chown is given (COPY --from a stage, as BuildKit does;
    #: context files become 0:0)
    preserve_owner: bool = False
    #: a symbolic --chmod (``u+x``), applied to each entry's own mode (``chmod`` wins when set)
    mode_set: ModeSet | None = None


def _owner_and_mode(opts: CopyOptions, st: os.stat_result) -> tuple[int, int, int]:
    """The copy's uid, gid and (for what is not a symlink) permission bits of an entry."""
    uid = opts.uid if opts.uid is not None else (st.st_uid if opts.preserve_owner else 0)
    gid = opts.gid if opts.gid is not None else (st.st_gid if opts.preserve_owner else 0)
    mode = opts.chmod if opts.chmod is not None else stat.S_IMODE(st.st_mode)
    if opts.chmod is None and opts.mode_set is not None:
        mode = opts.mode_set.apply(mode, stat.S_ISDIR(st.st_mode))
    return uid, gid, mode


def _apply_meta(path: str, opts: CopyOptions, st: os.stat_result, is_link: bool) -> None:
    uid, gid, mode = _owner_and_mode(opts, st)
    os.lchown(path, uid, gid)
    if not is_link:
        os.chmod(path, mode)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _copy_file(
    src: str | Path,
    dst: Path,
    opts: CopyOptions,
    st: os.stat_result,
    *,
    made_owner: tuple[int, int] | None = None,
) -> None:
    """A regular file's bytes into ``dst``, which must not exist (nothing is followed
    there), its owner, mode and times set on the open file (issue 14: a few syscalls per
    file fewer than a copy by path, for contexts of many small files). ``made_owner``: the
    owner a create in ``dst``'s directory gives (when known), so a copy owned so needs no
    chown."""
    fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd_out = os.open(dst, flags, 0o600)
        try:
            _copy_bytes(fd_in, fd_out)
            uid, gid, mode = _owner_and_mode(opts, st)
            if (uid, gid) != made_owner:
                os.fchown(fd_out, uid, gid)
            os.fchmod(fd_out, mode)  # after the chown, which clears set-id bits
            os.utime(fd_out, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def _copy_bytes(fd_in: int, fd_out: int) -> None:
    try:
        while os.sendfile(fd_out, fd_in, None, 1 << 30):
            pass
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
        while chunk := os.read(fd_in, 1 << 20):  # a source sendfile cannot read from
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd_out, view) :]


def _mkdirs(rootfs: Path, rel_dir: str, opts: CopyOptions) -> Path:
    """Create the directories of ``rel_dir`` inside ``rootfs`` (symlinks on the way followed
    inside it, never out of it); new ones are 0755 and owned by the copy's owner."""
    return _made_dirs(rootfs, rel_dir, opts)[0]


def _made_dirs(rootfs: Path, rel_dir: str, opts: CopyOptions) -> tuple[Path, bool]:
    """``_mkdirs``, and whether it made the directory itself (it is empty then)."""
    try:
        with _in_root(rootfs, "destination") as fs:
            path, created = fs.mkdirs(rel_dir, mode=0o755, uid=opts.uid or 0, gid=opts.gid or 0)
            return path, bool(created) and created[-1] == path
    except (NotADirectoryError, PathOutsideError) as exc:
        reason = exc.message if isinstance(exc, PathOutsideError) else exc.strerror
        raise BuildError(f"cannot copy to {rel_dir}: {reason}", reference="copy-failed") from None


def _copy_entry(
    src: str | Path,
    dst: Path,
    opts: CopyOptions,
    links: dict[tuple[int, int], Path] | None = None,
    *,
    fresh: bool = False,
    made_owner: tuple[int, int] | None = None,
) -> int | None:
    """Copy one entry to ``dst`` (replacing what is there unless both are directories);
    ``fresh``: ``dst``'s directory was made by this copy, so nothing is there;
    ``made_owner``: the owner a create there gives, when known (``_copy_file``). The group
    of the directory it made, if it made one (None otherwise)."""
    import shutil

    st = os.lstat(src)
    made_group = None
    if (
        not fresh
        and os.path.lexists(dst)
        and not (stat.S_ISDIR(st.st_mode) and dst.is_dir() and not dst.is_symlink())
    ):
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        else:
            dst.unlink()
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
        _apply_meta(str(dst), opts, st, True)
    elif stat.S_ISDIR(st.st_mode):
        if fresh or not dst.exists():
            dst.mkdir()
            made_group = _owner_and_mode(opts, st)[1]
        _apply_meta(str(dst), opts, st, False)
    elif stat.S_ISREG(st.st_mode):
        # Files hard-linked to each other in the source stay hard-linked in the copy.
        ident = (st.st_dev, st.st_ino)
        if links is not None and st.st_nlink > 1 and ident in links:
            os.link(links[ident], dst)
            return None
        _copy_file(src, dst, opts, st, made_owner=made_owner if fresh else None)
        if links is not None and st.st_nlink > 1:
            links[ident] = dst
    # sockets, devices and fifos from a context are skipped (as BuildKit does for sockets)
    return made_group


def copy_sources(
    sources: Sequence[Source],
    rootfs: Path,
    dest: str,
    opts: CopyOptions,
    ignore: DockerIgnore | None,
    *,
    dest_is_dir_hint: bool,
) -> None:
    """Docker's COPY: a directory copies its contents; a destination ending in ``/`` (or several
    sources, or an existing directory) is a directory the sources go into; else the file is renamed."""
    dest_rel = clean_path(dest).lstrip("/")
    into_dir = (
        dest_is_dir_hint or len(sources) > 1 or (dest_rel != "" and _is_dir_in(rootfs, dest_rel))
    )
    if dest_rel == "":
        into_dir = True
    links: dict[tuple[int, int], Path] = {}
    ids = (os.geteuid(), os.getegid())
    for src in sources:
        if src.is_dir:
            target, made_target = _made_dirs(rootfs, dest_rel, opts)
            # the directories this copy made, nothing to replace in them, with the owner a
            # create in each gives: this process's where the directory has its group
            made: dict[str, tuple[int, int] | None] = {}
            if made_target:
                made[""] = ids if (opts.gid or 0) == ids[1] else None
            for rel, path in _walk(src, ignore):
                if rel == "":
                    continue
                parent = os.path.dirname(rel)
                fresh = parent in made
                group = _copy_entry(
                    path, target / rel, opts, links, fresh=fresh, made_owner=made.get(parent)
                )
                if group is not None:
                    made[rel] = ids if group == ids[1] else None
        else:
            # src.path is already the in-root target of a top-level symlink (select_sources)
            if into_dir:
                target_dir = _mkdirs(rootfs, dest_rel, opts)
                _copy_entry(src.path, target_dir / os.path.basename(src.rel), opts)
            else:
                parent, name = os.path.split(dest_rel)
                target_dir = _mkdirs(rootfs, parent, opts)
                _copy_entry(src.path, target_dir / name, opts)


def copy_looks_at(
    sources: Sequence[Source], dest: str, ignore: DockerIgnore | None
) -> list[tuple[str, bool]]:
    """The paths ``copy_sources(sources, rootfs, dest, ...)`` resolves in ``rootfs`` (unsafe,
    whether a final symlink is followed; ``Snapshotter.mount``'s ``looks_at``): the
    destination (followed: is it a directory?), its parent, and each entry's place under it
    (not followed: what is there is replaced)."""
    dest_rel = clean_path(dest).lstrip("/")
    paths = [(dest_rel, True), (dest_rel, False), (os.path.dirname(dest_rel), True)]
    for src in sources:
        if src.is_dir:
            paths += [(f"{dest_rel}/{rel}", False) for rel, _ in _walk(src, ignore) if rel]
        else:
            paths.append((f"{dest_rel}/{os.path.basename(src.rel)}", False))
    return paths


def _is_dir_in(rootfs: Path, rel: str) -> bool:
    try:
        with _in_root(rootfs, "destination") as fs:
            return fs.resolve(rel).is_dir
    except PathOutsideError:
        return False
