"""``.dockerignore``: reading the rules and matching context paths like moby's
``patternmatcher`` and ``ignorefile`` (what BuildKit and the docker CLI use).

Rules: one pattern per line; lines starting with ``#`` are comments; blank
lines are ignored; a leading ``!`` makes an exception that re-includes what
earlier patterns excluded (the last matching rule wins); patterns are cleaned
(``filepath.Clean``) and a leading ``/`` is dropped (paths are relative to the
context root). ``*`` matches any run of non-separator characters, ``?`` one
non-separator character, ``[...]`` a character class (``[^...]``/``[!...]``
negated, ``\\`` escapes), ``**`` any number of directories (also none). A
pattern that matches a directory excludes everything below it.

The Dockerfile and the ignore file itself are read by the frontend directly,
so excluding them only hides them from COPY/ADD, as with BuildKit.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from pathlib import Path

from mason.dockerfile.errors import DockerfileError
from mason.structs import Struct

__all__ = [
    "IgnoreMatcher",
    "IgnorePattern",
    "ignore_file_for",
    "load_ignore_rules",
    "read_ignore_file",
]

_BOM = b"\xef\xbb\xbf"


def _clean(p: str) -> str:
    """Go's ``filepath.Clean`` (POSIX)."""
    if p == "":
        return "."
    out = posixpath.normpath(p)
    if out.startswith("//"):
        out = "/" + out.lstrip("/")  # normpath keeps two leading slashes, Clean does not
    return out


def read_ignore_file(data: bytes) -> list[str]:
    """``ignorefile.ReadAll``: the patterns of a .dockerignore, in order."""
    out: list[str] = []
    lines = data.split(b"\n")
    for i, raw in enumerate(lines):
        if i == 0 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        text = raw.decode("utf-8", "surrogateescape")
        if text.startswith("#"):
            continue
        text = text.strip(" \t\n\v\f\r\x85\xa0")
        if not text:
            continue
        invert = text.startswith("!")
        if invert:
            text = text[1:].strip(" \t\n\v\f\r\x85\xa0")
        if text:
            text = _clean(text)
            if len(text) > 1 and text.startswith("/"):
                text = text[1:]
        out.append("!" + text if invert else text)
    return out


def ignore_file_for(dockerfile: str | Path, context: str | Path) -> Path | None:
    """The ignore file that applies: ``<Dockerfile>.dockerignore`` beside the
    Dockerfile if it exists, else ``<context>/.dockerignore`` if it exists."""
    specific = Path(str(dockerfile) + ".dockerignore")
    if specific.is_file():
        return specific
    default = Path(context) / ".dockerignore"
    return default if default.is_file() else None


def load_ignore_rules(dockerfile: str | Path, context: str | Path) -> IgnoreMatcher:
    """Read the applicable ignore file (see ignore_file_for) into a matcher."""
    path = ignore_file_for(dockerfile, context)
    if path is None:
        return IgnoreMatcher(())
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DockerfileError(
            f"cannot read {path}: {exc.strerror or exc}", file=str(path), section="dockerignore"
        ) from exc
    return IgnoreMatcher(read_ignore_file(data), source=str(path))


def _double_star(pattern: str, i: int, kind: str, first: bool) -> tuple[str, str, int]:
    """``**`` (``i`` just after it): its regexp, the pattern's kind after it, where to go on."""
    n = len(pattern)
    if i < n and pattern[i] == "/":
        i += 1
    piece = ""
    if i >= n:
        if kind == "exact":
            kind = "prefix"
        else:
            piece, kind = ".*", "regexp"
    else:
        piece, kind = "(.*/)?", "regexp"
    if first:
        kind = "suffix"
    return piece, kind, i


def _char_class(pattern: str, i: int) -> tuple[str, int]:
    """A character class (``i`` just after its ``[``), copied with Go syntax translated; its
    regexp and the index after its ``]``."""
    n = len(pattern)
    j = i
    cls = ["["]
    if j < n and pattern[j] in "^!":
        cls.append("^")
        j += 1
    while j < n and pattern[j] != "]":
        c = pattern[j]
        if c == "\\" and j + 1 < n:
            cls.append(re.escape(pattern[j + 1]))
            j += 2
            continue
        cls.append("\\" + c if c in "[&~|^" else c)
        j += 1
    if j >= n:
        raise ValueError("syntax error in pattern")
    cls.append("]")
    return "".join(cls), j + 1


def _translate(pattern: str) -> tuple[str, re.Pattern[str] | None]:
    """Pattern.compile: ("exact"|"prefix"|"suffix"|"regexp", compiled regexp)."""
    out = ["^"]
    kind = "exact"
    i = 0
    n = len(pattern)
    first = True
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                piece, kind, i = _double_star(pattern, i + 1, kind, first)
                out.append(piece)
            else:
                out.append("[^/]*")
                kind = "regexp"
        elif ch == "?":
            out.append("[^/]")
            kind = "regexp"
        elif ch in ".+()|{}$":
            out.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                out.append(re.escape(pattern[i]))
                i += 1
                kind = "regexp"
            else:
                out.append("\\\\")
        elif ch == "[":
            piece, i = _char_class(pattern, i)
            out.append(piece)
            kind = "regexp"
        elif ch == "]":
            out.append("\\]")
            kind = "regexp"
        elif ch in "^":
            out.append("\\^")
        else:
            out.append(ch)
        first = False
    if kind != "regexp":
        return kind, None
    out.append("$")
    return kind, re.compile("".join(out), re.DOTALL)


def _validate(pattern: str) -> None:
    """filepath.Match(pattern, "."): reject malformed classes and trailing escapes."""
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise ValueError("syntax error in pattern")
            i += 2
            continue
        if c == "[":
            j = i + 1
            if j < n and pattern[j] in "^!":
                j += 1
            if j < n and pattern[j] == "]":
                raise ValueError("syntax error in pattern")  # empty class
            while j < n and pattern[j] != "]":
                if pattern[j] == "\\":
                    j += 1
                j += 1
            if j >= n:
                raise ValueError("syntax error in pattern")
            i = j + 1
            continue
        i += 1


class IgnorePattern(Struct, frozen=True):
    pattern: str
    exclusion: bool
    kind: str
    regexp: re.Pattern[str] | None
    dirs: int

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.pattern
        if self.kind == "prefix":
            return path.startswith(self.pattern[:-2])
        if self.kind == "suffix":
            suffix = self.pattern[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        assert self.regexp is not None
        return self.regexp.match(path) is not None


class IgnoreMatcher:
    """Decides which context paths a build sees (``PatternMatcher``)."""

    def __init__(self, patterns: Iterable[str], *, source: str = ".dockerignore") -> None:
        self.source = source
        self.patterns: list[IgnorePattern] = []
        for raw in patterns:
            p = raw.strip(" \t\n\v\f\r\x85\xa0")
            if not p:
                continue
            p = _clean(p)
            exclusion = p.startswith("!")
            if exclusion:
                if len(p) == 1:
                    raise DockerfileError(
                        'illegal exclusion pattern: "!"', file=source, section="dockerignore"
                    )
                p = p[1:]
            if len(p) > 1 and p.startswith("/"):
                p = p[1:]  # context-relative, as read_ignore_file does
            try:
                _validate(p)
                kind, rx = _translate(p)
            except ValueError:
                raise DockerfileError(
                    f"syntax error in pattern {p!r}", file=source, section="dockerignore",
                    hint="close every '[' with ']' and do not end a pattern with '\\\\'",
                ) from None  # fmt: skip
            self.patterns.append(IgnorePattern(p, exclusion, kind, rx, len(p.split("/"))))
        self.has_exclusions = any(p.exclusion for p in self.patterns)

    def excluded(self, relpath: str) -> bool:
        """Whether the context path ``relpath`` (``/``-separated, relative to the
        context root) is excluded from the build context."""
        path = _clean(relpath.lstrip("/")) if relpath else "."
        if path == ".":
            return False
        parent = posixpath.dirname(path) or "."
        parent_dirs = parent.split("/")
        matched = False
        for pat in self.patterns:
            if pat.exclusion != matched:
                continue
            match = pat.match(path)
            if not match and parent != ".":
                # a pattern that matches a parent directory covers the file
                for i in range(len(parent_dirs)):
                    if pat.match("/".join(parent_dirs[: i + 1])):
                        match = True
                        break
            if match:
                matched = not pat.exclusion
        return matched

    def can_skip_dir(self, relpath: str) -> bool:
        """Whether a whole directory can be left out without walking it: it is
        excluded and no ``!`` exception could re-include anything below it."""
        if not self.excluded(relpath):
            return False
        if not self.has_exclusions:
            return True
        path = _clean(relpath.lstrip("/"))
        parts = path.split("/")
        for pat in self.patterns:
            if pat.exclusion and _may_match_below(pat.pattern, parts):
                return False
        return True


def _may_match_below(pattern: str, dir_parts: list[str]) -> bool:
    """Conservatively: could ``pattern`` match some path under the directory?"""
    pparts = pattern.split("/")
    for i, dp in enumerate(dir_parts):
        if i >= len(pparts):
            return True  # the pattern names an ancestor: matched by excluded() already
        pp = pparts[i]
        if "**" in pp:
            return True
        try:
            _kind, rx = _translate(pp)
        except ValueError:
            return True
        if rx is None and pp != dp:
            return False
        if rx is not None and rx.match(dp) is None:
            return False
    return True
