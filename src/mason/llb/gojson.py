"""Go ``encoding/json`` output, byte for byte, for the values BuildKit hashes.

BuildKit's cache-map digests are sha256 of what Go's ``json.Marshal`` writes for
its structs, so mason must write the same bytes, not merely equivalent JSON:

- struct fields in declaration order (``GoStruct.go_json_fields``), never sorted;
  ``omitempty`` drops ``false``, ``0``, ``""``, nil and empty slices and maps,
  but never a non-nil pointer to an empty struct (``"cacheOpt":{}``);
- ``None`` is Go's nil (``null``): a nil slice without ``omitempty`` is ``null``,
  an empty one ``[]``;
- ``bytes`` (``[]byte``) as standard base64 with padding;
- map keys sorted (Go sorts them as strings);
- strings with Go's escapes: ``<``, ``>``, ``&`` as ``\\u003c`` ``\\u003e``
  ``\\u0026`` (HTML-safe by default), U+2028/U+2029 escaped, control characters
  as ``\\b \\f \\n \\r \\t`` or ``\\u00XX``, no other non-ASCII escaped;
- integers in decimal, floats as Go's ``strconv.FormatFloat(f, 'f'|'e', -1, 64)``.
"""

from __future__ import annotations

import base64
import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from mason.errors import MasonError

__all__ = ["GoJSONError", "GoStruct", "RawJSON", "go_json", "go_json_string", "is_empty"]


class GoJSONError(MasonError):
    """A value has no Go ``encoding/json`` form (NaN, a non-string map key...)."""


@runtime_checkable
class GoStruct(Protocol):
    """A value that marshals as a Go struct: (json name, value, omitempty) in field order."""

    def go_json_fields(self) -> Iterable[tuple[str, object, bool]]: ...


class RawJSON(bytes):
    """Bytes already in JSON form (Go's ``json.RawMessage``), written as they are."""


def go_json(value: object) -> bytes:
    """``json.Marshal(value)`` as Go writes it."""
    out: list[str] = []
    _write(value, out)
    return "".join(out).encode("utf-8")


def is_empty(value: object) -> bool:
    """Go's ``omitempty`` test: false, 0, "", nil, or an empty slice or map."""
    if value is None or value is False:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return value == 0
    if isinstance(value, str | bytes | list | tuple | dict):
        return len(value) == 0
    # A struct value is never empty in Go; a struct pointer only when nil.
    return False


def _write(value: object, out: list[str]) -> None:
    if isinstance(value, str):  # the most common value first
        out.append(go_json_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_go_float(value))
    elif isinstance(value, RawJSON):
        out.append(value.decode("utf-8"))
    elif isinstance(value, bytes | bytearray):
        out.append('"' + base64.b64encode(bytes(value)).decode("ascii") + '"')
    elif hasattr(type(value), "go_json_fields"):  # a GoStruct (faster than the Protocol check)
        _write_struct(value, out)  # type: ignore[arg-type]
    elif isinstance(value, Mapping):
        _write_map(value, out)
    elif isinstance(value, Sequence):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise GoJSONError(f"no Go JSON form for {type(value).__name__}")


def _write_struct(value: GoStruct, out: list[str]) -> None:
    out.append("{")
    first = True
    for name, field_value, omitempty in value.go_json_fields():
        if omitempty and is_empty(field_value):
            continue
        if not first:
            out.append(",")
        first = False
        out.append(go_json_string(name))
        out.append(":")
        _write(field_value, out)
    out.append("}")


def _write_map(value: Mapping[object, object], out: list[str]) -> None:
    keys: list[tuple[str, object]] = []
    for key in value:
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise GoJSONError(f"map key {key!r} has no Go JSON form")
        keys.append((str(key), key))
    keys.sort(key=lambda item: item[0].encode("utf-8"))
    out.append("{")
    for i, (text, key) in enumerate(keys):
        if i:
            out.append(",")
        out.append(go_json_string(text))
        out.append(":")
        _write(value[key], out)
    out.append("}")


_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
# HTML-safe escaping is json.Marshal's default; the line separators break JavaScript.
_U_ESCAPED = frozenset("<>&\u2028\u2029")


#: a string Go writes as it is between quotes (most of what BuildKit hashes)
_PLAIN = re.compile(r'[^"\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]*')


@functools.lru_cache(maxsize=4096)  # field names and paths recur in every op of a build
def go_json_string(text: str) -> str:
    """A Go JSON string literal (``encoding/json``'s ``appendString`` with HTML escaping)."""
    if _PLAIN.fullmatch(text):
        return '"' + text + '"'
    parts = ['"']
    for ch in text:
        short = _SHORT_ESCAPES.get(ch)
        if short is not None:
            parts.append(short)
        elif ch < " " or ch in _U_ESCAPED:
            parts.append(f"\\u{ord(ch):04x}")
        elif "\ud800" <= ch <= "\udfff":
            # A lone surrogate is invalid UTF-8 in Go's string: it writes U+FFFD.
            parts.append("\ufffd")
        else:
            parts.append(ch)
    parts.append('"')
    return "".join(parts)


def _go_float(value: float) -> str:
    """``encoding/json``'s float64 form: shortest digits, 'e' only outside [1e-6, 1e21)."""
    if math.isnan(value) or math.isinf(value):
        raise GoJSONError(f"unsupported float value {value!r}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    magnitude = abs(value)
    if magnitude < 1e-6 or magnitude >= 1e21:
        # repr uses exponent form throughout this range.
        mantissa, _, exponent = repr(value).partition("e")
        if mantissa.endswith(".0"):
            mantissa = mantissa[:-2]
        digits = exponent.lstrip("+-").lstrip("0") or "0"
        # strconv writes two exponent digits at least; json.Marshal then trims e-07 to e-7.
        if exponent.startswith("-"):
            return f"{mantissa}e-{digits}"
        return f"{mantissa}e+{digits.zfill(2)}"
    # repr gives the shortest digits that round-trip, as Go's -1 precision does; decimal
    # is imported here, as floats are rare in what BuildKit hashes (start-up, issue 14)
    from decimal import Decimal

    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
