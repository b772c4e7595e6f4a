"""The path patterns BuildKit's checksums use: ``moby/patternmatcher`` and Go's ``path.Match``.

``COPY --exclude`` and ``COPY --parents`` reach the content checksum as include
and exclude patterns; they must select exactly the files BuildKit selects, or
the key differs. Behaviour follows patternmatcher v0.6 (as vendored by BuildKit
v0.32.2): patterns are cleaned, ``!`` negates, ``**`` spans directories, and a
path also matches when its parent matched.
"""

from __future__ import annotations

import enum
import posixpath
import re
from collections.abc import Sequence

from mason.errors import MasonError
from mason.structs import Struct

__all__ = ["MatchInfo", "PatternError", "PatternMatcher", "go_path_match"]

_REGEX_SPECIAL = frozenset(".+()|{}$")


class PatternError(MasonError):
    """A malformed pattern (``filepath.ErrBadPattern``)."""


class _MatchType(enum.Enum):
    EXACT = 1
    PREFIX = 2
    SUFFIX = 3
    REGEXP = 4


class MatchInfo(Struct, frozen=True):
    """Which patterns a directory matched, so that its entries need not check them again."""

    parent_matched: tuple[bool, ...]


class _Pattern(Struct, frozen=True):
    cleaned: str
    exclusion: bool
    match_type: _MatchType
    regexp: re.Pattern[str] | None

    def match(self, path: str) -> bool:
        if self.match_type is _MatchType.EXACT:
            return path == self.cleaned
        if self.match_type is _MatchType.PREFIX:
            return path.startswith(self.cleaned[:-2])
        if self.match_type is _MatchType.SUFFIX:
            suffix = self.cleaned[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        assert self.regexp is not None
        return self.regexp.match(path) is not None


def _compile(cleaned: str) -> tuple[_MatchType, re.Pattern[str] | None]:
    regex = "^"
    kind = _MatchType.EXACT
    i = 0
    n = len(cleaned)
    while i < n:
        ch = cleaned[i]
        first = i == 0
        i += 1
        if ch == "*":
            if i < n and cleaned[i] == "*":
                i += 1
                if i < n and cleaned[i] == "/":
                    i += 1
                if i >= n:
                    if kind is _MatchType.EXACT:
                        kind = _MatchType.PREFIX
                    else:
                        regex += ".*"
                        kind = _MatchType.REGEXP
                else:
                    regex += "(.*/)?"
                    kind = _MatchType.REGEXP
                if first:
                    kind = _MatchType.SUFFIX
            else:
                regex += "[^/]*"
                kind = _MatchType.REGEXP
        elif ch == "?":
            regex += "[^/]"
            kind = _MatchType.REGEXP
        elif ch in _REGEX_SPECIAL:
            regex += "\\" + ch
        elif ch == "\\":
            if i < n:
                regex += "\\" + cleaned[i]
                i += 1
                kind = _MatchType.REGEXP
            else:
                regex += "\\\\"
        elif ch in "[]":
            regex += ch
            kind = _MatchType.REGEXP
        else:
            regex += re.escape(ch) if ch in "^*?" else ch
    if kind is not _MatchType.REGEXP:
        return kind, None
    try:
        return kind, re.compile(regex + "$", re.DOTALL)
    except re.error as exc:
        raise PatternError(f"bad pattern {cleaned!r}: {exc}") from exc


class PatternMatcher:
    """``patternmatcher.PatternMatcher``: ordered patterns, the last that matches decides."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self._patterns: list[_Pattern] = []
        for raw in patterns:
            text = raw.strip()
            if not text:
                continue
            text = _clean(text)
            exclusion = text.startswith("!")
            if exclusion:
                if len(text) == 1:
                    raise PatternError('illegal exclusion pattern: "!"')
                text = text[1:]
            kind, regexp = _compile(text)
            self._patterns.append(_Pattern(text, exclusion, kind, regexp))

    def matches_using_parent(self, file: str, parent: MatchInfo | None) -> tuple[bool, MatchInfo]:
        """``MatchesUsingParentResults``: ``file`` matches, reusing its directory's results."""
        parent_matched = parent.parent_matched if parent is not None else ()
        matched = False
        results: list[bool] = []
        for i, pattern in enumerate(self._patterns):
            match = parent_matched[i] if parent_matched else False
            if not match:
                # An inclusion already decided, or an exclusion with nothing to undo: skip.
                if pattern.exclusion != matched:
                    results.append(False)
                    continue
                match = pattern.match(file)
                if not match and not parent_matched:
                    match = _parent_matches(pattern, file)
            results.append(match)
            if match:
                matched = not pattern.exclusion
        return matched, MatchInfo(tuple(results))


def _parent_matches(pattern: _Pattern, file: str) -> bool:
    parent = posixpath.dirname(file)
    if parent in ("", "."):
        return False
    dirs = parent.split("/")
    return any(pattern.match("/".join(dirs[: i + 1])) for i in range(len(dirs)))


def _clean(p: str) -> str:
    """Go's ``filepath.Clean`` (Unix)."""
    rooted = p.startswith("/")
    parts: list[str] = []
    for part in p.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    out = "/".join(parts)
    if rooted:
        return "/" + out
    return out or "."


def go_path_match(pattern: str, name: str) -> bool:
    """Go's ``path.Match``: ``*`` and ``?`` never match ``/``; ``[...]`` classes; ``\\`` escapes."""
    regex = ""
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            regex += "[^/]*"
        elif ch == "?":
            regex += "[^/]"
        elif ch == "\\" and i < n:
            regex += re.escape(pattern[i])
            i += 1
        elif ch == "[":
            end = pattern.find("]", i + 1 if i < n and pattern[i] in "^!" else i)
            if end < 0:
                raise PatternError(f"bad pattern {pattern!r}")
            body = pattern[i:end]
            if body.startswith("^"):
                body = "^" + body[1:]
            regex += "[" + body.replace("\\", "\\\\") + "]"
            i = end + 1
        else:
            regex += re.escape(ch)
    return re.fullmatch(regex, name, re.DOTALL) is not None
