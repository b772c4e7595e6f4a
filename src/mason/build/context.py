"""The build context: ``.dockerignore``, source selection with Docker's wildcard
rules, content checksums for cache keys, and COPY's copy semantics.

Checksums cover what a COPY makes of a file -- relative path, type, content,
permission bits, symlink target -- and not mtime or the context's uid/gid
(DESIGN §4), so a fresh checkout of the same tree hits the cache.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mason.errors import BuildError

__all__ = [
    "ContextEntry",
    "CopyOptions",
    "DockerIgnore",
    "Source",
    "checksum_sources",
    "copy_sources",
    "select_sources",
]

_CHUNK = 1 << 20


class DockerIgnore:
    """``.dockerignore`` rules (an adapter over ``mason.dockerfile``'s ``IgnoreMatcher``)."""

    def __init__(self, patterns: Sequence[str] = (), *, matcher: Any = None) -> None:
        from mason.dockerfile.dockerignore import IgnoreMatcher

        self._matcher = matcher if matcher is not None else IgnoreMatcher(patterns)

    @classmethod
    def load(cls, context: Path, dockerfile: Path | None = None) -> DockerIgnore:
        from mason.dockerfile.dockerignore import load_ignore_rules

        return cls(matcher=load_ignore_rules(dockerfile or (context / "Dockerfile"), context))

    def ignored(self, rel: str) -> bool:
        return bool(self._matcher.excluded(rel))

    @property
    def has_exceptions(self) -> bool:
        return bool(self._matcher.has_exclusions)

    def can_skip_dir(self, rel: str) -> bool:
        """The directory is excluded and no ``!`` exception can re-include anything below it."""
        return bool(self._matcher.can_skip_dir(rel))


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


@dataclass(frozen=True)
class Source:
    """One selected source: its path on the host and its name relative to the source root."""

    path: Path
    rel: str
    is_dir: bool


def _resolve_in(root: Path, rel: str, _depth: int = 0) -> Path:
    """``rel`` under ``root``, resolving symlinks as if ``root`` were ``/`` (never leaving it)."""
    if _depth > 40:
        raise BuildError(f"too many levels of symbolic links resolving {rel}", reference="copy-failed")
    cur = root
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    for i, part in enumerate(parts):
        if part == "..":
            cur = cur.parent if cur != root else root
            continue
        nxt = cur / part
        if nxt.is_symlink():
            target = os.readlink(nxt)
            here = "" if target.startswith("/") else os.path.relpath(cur, root)
            joined = os.path.normpath(os.path.join("/", here, target, *parts[i + 1:]))
            return _resolve_in(root, joined, _depth + 1)
        cur = nxt
    return cur


def select_sources(root: Path, patterns: Sequence[str], ignore: DockerIgnore | None,
                   *, what: str = "build context") -> list[Source]:
    """Expand COPY source patterns against ``root``. A pattern matching nothing is an error
    (unless it has a wildcard, in which case Docker also fails: "no source files were specified")."""
    out: list[Source] = []
    for pattern in patterns:
        norm = os.path.normpath(pattern).lstrip("/")
        if norm.startswith(".."):
            norm = os.path.normpath("/" + norm).lstrip("/")
        if norm in ("", "."):
            out.append(Source(root, ".", True))
            continue
        if _has_wildcard(norm):
            matches = _glob(root, norm.split("/"), "", ignore)
            if not matches:
                raise BuildError(f"no source files were specified: {pattern} matched nothing in the {what}",
                                 reference="source-missing")
            out.extend(matches)
            continue
        p = _resolve_in(root, norm)
        if not os.path.lexists(p) or (ignore is not None and ignore.ignored(norm) and not ignore.has_exceptions):
            raise BuildError(f"failed to compute cache key: \"/{norm}\": not found",
                             reference="source-missing",
                             context=[f"{pattern} is not in the {what}" + (" (or excluded by .dockerignore)" if ignore else "")])
        out.append(Source(p, norm, p.is_dir()))
    return out


def _glob(root: Path, parts: list[str], prefix: str, ignore: DockerIgnore | None) -> list[Source]:
    head, rest = parts[0], parts[1:]
    base = root / prefix if prefix else root
    if not base.is_dir():
        return []
    result: list[Source] = []
    names = sorted(os.listdir(base)) if _has_wildcard(head) else ([head] if os.path.lexists(base / head) else [])
    for name in names:
        if _has_wildcard(head) and not _compile(head).match(name):
            continue
        rel = f"{prefix}/{name}" if prefix else name
        if ignore is not None and ignore.ignored(rel):
            continue
        p = root / rel
        if rest:
            result.extend(_glob(root, rest, rel, ignore))
        else:
            result.append(Source(p, rel, p.is_dir()))
    return result


def _walk(src: Source, ignore: DockerIgnore | None) -> Iterable[tuple[str, Path]]:
    """(relative name under the source, host path) for the source and everything under it."""
    yield "", src.path
    if not src.is_dir:
        return
    excluded_dirs: set[str] = set()  # walked into for a possible exception, not yielded yet
    for dirpath, dirnames, filenames in os.walk(src.path):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, src.path)
        keep = [d for d in dirnames if ignore is None
                or not ignore.can_skip_dir(os.path.normpath(os.path.join(src.rel, rel_dir, d)))]
        # a symlink to a directory is an entry of its own, never walked into
        dirnames[:] = [d for d in keep if not os.path.islink(os.path.join(dirpath, d))]
        walked = set(dirnames)
        for name in sorted(keep + filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if ignore is not None and ignore.ignored(os.path.normpath(os.path.join(src.rel, rel))):
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
                yield d, src.path / d
            yield rel, Path(dirpath) / name


#: one walked entry: (path relative to the context, kind, mode bits, file sha256 or link target)
ContextEntry = tuple[str, str, int, str]


def checksum_sources(
    sources: Sequence[Source], ignore: DockerIgnore | None, entries: list[ContextEntry] | None = None
) -> str:
    """sha256 over (name, type, mode bits, content or link target) of every selected entry.

    With ``entries``, the same pass also appends one ``ContextEntry`` per entry (each file's own
    sha256 from the same read), so explaining a later miss costs no second read of the context."""
    h = hashlib.sha256()
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
                h.update(f"F {rel} {mode:o} {st.st_size}\0".encode())
                own = hashlib.sha256()
                with open(path, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
                        own.update(chunk)
                entry = (name, "file", mode, "sha256:" + own.hexdigest())
            else:
                h.update(f"O {rel} {stat.S_IFMT(st.st_mode):o}\0".encode())
                entry = (name, "other", mode, "")
            if entries is not None:
                entries.append(entry)
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class CopyOptions:
    uid: int | None = None
    gid: int | None = None
    chmod: int | None = None
    #: keep the source's owners when no --chown is given (COPY --from a stage, as BuildKit does;
    #: context files become 0:0)
    preserve_owner: bool = False


def _apply_meta(path: str, opts: CopyOptions, st: os.stat_result, is_link: bool) -> None:
    uid = opts.uid if opts.uid is not None else (st.st_uid if opts.preserve_owner else 0)
    gid = opts.gid if opts.gid is not None else (st.st_gid if opts.preserve_owner else 0)
    os.lchown(path, uid, gid)
    if not is_link:
        mode = opts.chmod if opts.chmod is not None else stat.S_IMODE(st.st_mode)
        os.chmod(path, mode)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _mkdirs(rootfs: Path, rel_dir: str, opts: CopyOptions) -> Path:
    """Create the directories of ``rel_dir`` inside ``rootfs`` (never through a symlink that leaves it)."""
    cur = rootfs
    for part in [p for p in rel_dir.split("/") if p]:
        nxt = cur / part
        if nxt.is_symlink():
            nxt = _resolve_in(rootfs, os.path.relpath(nxt, rootfs))
        if not nxt.exists():
            nxt.mkdir(mode=0o755)
            os.chmod(nxt, 0o755)
            os.lchown(nxt, opts.uid or 0, opts.gid or 0)
        elif not nxt.is_dir():
            raise BuildError(f"cannot copy to {rel_dir}: {os.path.relpath(nxt, rootfs)} is not a directory",
                             reference="copy-failed")
        cur = nxt
    return cur


def _copy_entry(src: Path, dst: Path, opts: CopyOptions, links: dict[tuple[int, int], Path] | None = None) -> None:
    st = os.lstat(src)
    if os.path.lexists(dst) and not (stat.S_ISDIR(st.st_mode) and dst.is_dir() and not dst.is_symlink()):
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        else:
            dst.unlink()
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
        _apply_meta(str(dst), opts, st, True)
    elif stat.S_ISDIR(st.st_mode):
        if not dst.exists():
            dst.mkdir()
        _apply_meta(str(dst), opts, st, False)
    elif stat.S_ISREG(st.st_mode):
        # Files hard-linked to each other in the source stay hard-linked in the copy.
        ident = (st.st_dev, st.st_ino)
        if links is not None and st.st_nlink > 1 and ident in links:
            os.link(links[ident], dst)
            return
        shutil.copyfile(src, dst, follow_symlinks=False)
        _apply_meta(str(dst), opts, st, False)
        if links is not None and st.st_nlink > 1:
            links[ident] = dst
    # sockets, devices and fifos from a context are skipped (as BuildKit does for sockets)


def copy_sources(sources: Sequence[Source], rootfs: Path, dest: str, opts: CopyOptions,
                 ignore: DockerIgnore | None, *, dest_is_dir_hint: bool) -> None:
    """Docker's COPY: a directory copies its contents; a destination ending in ``/`` (or several
    sources, or an existing directory) is a directory the sources go into; else the file is renamed."""
    dest_rel = os.path.normpath(dest).lstrip("/")
    dest_rel = "" if dest_rel == "." else dest_rel
    existing = _resolve_in(rootfs, dest_rel) if dest_rel else rootfs
    into_dir = dest_is_dir_hint or len(sources) > 1 or (existing.is_dir() and dest_rel != "")
    if dest_rel == "":
        into_dir = True
    links: dict[tuple[int, int], Path] = {}
    for src in sources:
        if src.is_dir:
            target = _mkdirs(rootfs, dest_rel, opts)
            for rel, path in _walk(src, ignore):
                if rel == "":
                    continue
                _copy_entry(path, target / rel, opts, links)
        else:
            real = src.path.resolve() if src.path.is_symlink() else src.path  # a top-level symlink is followed
            if into_dir:
                target_dir = _mkdirs(rootfs, dest_rel, opts)
                _copy_entry(real, target_dir / os.path.basename(src.rel), opts)
            else:
                parent, name = os.path.split(dest_rel)
                target_dir = _mkdirs(rootfs, parent, opts)
                _copy_entry(real, target_dir / name, opts)
