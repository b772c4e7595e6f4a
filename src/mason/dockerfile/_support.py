"""Go-compatible helpers of the instruction layer: BuildKit's error type and
``did you mean`` suggestions, Go's ``strconv``/``time`` parsers as BuildKit
calls them (their error messages are part of BuildKit's)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from mason.dockerfile._text import go_quote, levenshtein

__all__ = [
    "InstructionError",
    "opt_interval",
    "parse_bool",
    "parse_duration",
    "parse_uint",
    "suggest",
    "suggest_error",
]

_MIN_DURATION_NS = 1_000_000  # time.Millisecond


class InstructionError(ValueError):
    """A reason an instruction is invalid (BuildKit's wording); wrapped into a
    DockerfileError with the instruction's location by the caller."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def suggest(value: str, options: Sequence[str], *, case_sensitive: bool) -> str | None:
    """BuildKit's ``suggest.WrapError``: the option within edit distance 2, if any."""
    val = value if case_sensitive else value.lower()
    best: str | None = None
    mindist = (3, 0)
    for opt in sorted(options):
        o = opt if case_sensitive else opt.lower()
        if o == val:
            return None  # an exact match: the error is about something else
        if abs(len(o) - len(val)) >= 3:
            continue  # the distance is at least the length difference: too far, and
            # computing it for a long word would cost time for nothing
        # BuildKit picks any option under distance 3 (map order); ties go to
        # the option closest when a swap of two letters counts as one edit
        dist = (levenshtein(val, o), _swap_distance(val, o))
        if dist[0] < 3 and dist < mindist:
            mindist = dist
            if case_sensitive:
                best = o
            elif value == value.lower():
                best = o.lower()
            elif value == value.upper():
                best = o.upper()
            else:
                best = o
    return best


def _swap_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (adjacent transpositions cost 1)."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def suggest_error(
    message: str, value: str, options: Sequence[str], *, case_sensitive: bool
) -> InstructionError:
    match = suggest(value, options, case_sensitive=case_sensitive)
    if match is None:
        return InstructionError(message)
    return InstructionError(f"{message} (did you mean {match}?)", hint=f"did you mean {match}?")


# ---------------------------------------------------------------------------
# durations (Go's time.ParseDuration)

_DURATION_UNITS = {
    "ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
    "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
}  # fmt: skip
_RE_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]+)")


def parse_duration(s: str) -> int:
    orig = s
    bad = InstructionError(f"time: invalid duration {go_quote(orig)}")
    neg = False
    if s[:1] in ("-", "+"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise bad
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _RE_DURATION_PART.match(s, pos)
        if m is None:
            if _RE_NUM_ONLY.match(s, pos):
                raise InstructionError(f"time: missing unit in duration {go_quote(orig)}")
            raise bad
        num, unit = m.groups()
        if num in ("", "."):
            raise bad
        if unit not in _DURATION_UNITS:
            raise InstructionError(
                f"time: unknown unit {go_quote(unit)} in duration {go_quote(orig)}"
            )
        total += float(num) * _DURATION_UNITS[unit]
        pos = m.end()
    if total > 2**63 - 1:
        raise bad
    value = int(total)
    return -value if neg else value


_RE_NUM_ONLY = re.compile(r"[0-9]*(?:\.[0-9]*)?\Z")


def opt_interval(name: str, value: str) -> int:
    if value == "":
        return 0
    d = parse_duration(value)
    if d == 0:
        return 0
    if d < _MIN_DURATION_NS:
        raise InstructionError(f'Interval "{name}" cannot be less than 1ms')
    return d


_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def parse_bool(value: str) -> bool | None:
    """``strconv.ParseBool``: None when ``value`` is not a Go boolean."""
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    return None


def parse_uint(value: str, base: int, limit: int) -> int | None:
    """``strconv.ParseUint`` (no sign, no prefix, no underscore): None when invalid
    or not below ``limit``."""
    if not value or not all(c in "0123456789"[:base] for c in value):
        return None
    v = int(value, base)
    return v if v < limit else None
