"""Go-compatible text primitives (whitespace classes, quoting, JSON decoding).

BuildKit is written in Go; where Go's notion of "space" or of a quoted string
differs from Python's, the frontend must use Go's to read Dockerfiles alike.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "RE_WHITESPACE",
    "go_quote",
    "go_trim_left",
    "go_trim_space",
    "is_go_space",
    "levenshtein",
    "loads_json",
]

# unicode.IsSpace: Latin-1 spaces plus the White_Space property above it.
_LATIN1_SPACES = frozenset("\t\n\v\f\r \x85\xa0")
_WIDE_SPACES = frozenset(
    "\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
_ALL_SPACES = "".join(sorted(_LATIN1_SPACES | _WIDE_SPACES))

# the parser's reWhitespace: ASCII blanks except newline
RE_WHITESPACE = re.compile(r"[\t\v\f\r ]+")


def is_go_space(ch: str) -> bool:
    return ch in _LATIN1_SPACES or ch in _WIDE_SPACES


def go_trim_space(s: str) -> str:
    return s.strip(_ALL_SPACES)


def go_trim_left(s: str) -> str:
    return s.lstrip(_ALL_SPACES)


_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def go_quote(s: str) -> str:
    """strconv.Quote: a double-quoted Go string literal."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif 0xDC80 <= o <= 0xDCFF:  # an undecodable byte kept by surrogateescape
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif o < 0x80:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


class _BadNumber(ValueError):
    pass


def _parse_float(s: str) -> float:
    v = float(s)
    if v in (float("inf"), float("-inf")):
        raise _BadNumber(s)  # Go's decoder rejects numbers out of float64 range
    return v


def _reject_constant(s: str) -> Any:
    raise _BadNumber(s)  # NaN / Infinity are not JSON


_DECODER = json.JSONDecoder(
    parse_float=_parse_float, parse_int=lambda s: _parse_float(s), parse_constant=_reject_constant
)


def loads_json(s: str) -> tuple[bool, Any]:
    """Decode ``s`` as ONE JSON document (blanks around it allowed, nothing else),
    as Go's ``json.Unmarshal`` does. Returns (ok, value)."""
    try:
        value, end = _DECODER.raw_decode(s)
    except (ValueError, RecursionError):
        return False, None
    if s[end:].strip(" \t\n\r"):
        return False, None
    return True, value


def levenshtein(a: str, b: str) -> int:
    if a == b:
        return 0
    if not a:
        return len(b)
    if not b:
        return len(a)
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]
