"""``RUN --mount`` and ``RUN --device`` values (BuildKit v0.32.2's
``commands_runmount.go`` / ``commands_rundevice.go`` rules and wording).

A value is one csv line (``go-csvvalue``: strict quotes, one record); mount
keys are case-insensitive, values are expanded with the stage's variables
before they are checked (only ``from=`` is checked before: it cannot hold a
variable).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mason.dockerfile._support import InstructionError, parse_bool, parse_uint, suggest_error
from mason.dockerfile._text import go_quote
from mason.structs import Struct, replace

__all__ = [
    "MOUNT_KEYS",
    "MOUNT_TYPES",
    "Device",
    "Mount",
    "csv_fields",
    "csv_record",
    "parse_device",
    "parse_mount",
    "ram_in_bytes",
]

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
MOUNT_KEYS = (
    "type", "from", "source", "target", "readonly", "id", "sharing", "required", "size", "mode",
    "uid", "gid", "src", "dst", "destination", "ro", "rw", "readwrite", "env",
)  # fmt: skip
_SHARING = ("shared", "private", "locked")


class Mount(Struct, frozen=True):
    """A ``RUN --mount`` spec. ``mode``/``uid``/``gid`` are None when unset;
    ``env`` (secret mounts) names the variable the secret is put in, None when
    not given ("" asks for the default name)."""

    type: str = "bind"
    from_: str = ""
    source: str = ""
    target: str = ""
    read_only: bool = True
    size_limit: int = 0
    cache_id: str = ""
    cache_sharing: str = ""
    required: bool = False
    env: str | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


class Device(Struct, frozen=True):
    """A ``RUN --device`` request (a CDI device name)."""

    name: str
    required: bool = False


# ---------------------------------------------------------------------------
# csv (github.com/tonistiigi/go-csvvalue)


class _CsvError(ValueError):
    pass


def _csv_error(line: str, pos: int, what: str) -> _CsvError:
    column = len(line[:pos].encode("utf-8", "surrogateescape")) + 1
    return _CsvError(f"parse error on line 1, column {column}: {what}")


_BARE_QUOTE = 'bare " in non-quoted-field'
_QUOTE = 'extraneous or missing " in quoted-field'


def csv_fields(text: str) -> list[str]:
    """The fields of one csv line (a final newline is allowed). Raises _CsvError."""
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise _CsvError("EOF")
    fields: list[str] = []
    pos = 0
    n = len(text)
    while True:
        if pos >= n or text[pos] != '"':
            j = text.find(",", pos)
            end = n if j < 0 else j
            q = text.find('"', pos, end)
            if q >= 0:
                raise _csv_error(text, q, _BARE_QUOTE)
            fields.append(text[pos:end])
            if j < 0:
                return fields
            pos = j + 1
            continue
        pos += 1  # the opening quote
        parts: list[str] = []
        while True:
            j = text.find('"', pos)
            if j < 0:
                raise _csv_error(text, pos, _QUOTE)
            parts.append(text[pos:j])
            pos = j + 1
            if pos < n and text[pos] == '"':
                parts.append('"')
                pos += 1
                continue
            if pos < n and text[pos] == ",":
                fields.append("".join(parts))
                pos += 1
                break
            if pos == n:
                fields.append("".join(parts))
                return fields
            raise _csv_error(text, pos - 1, _QUOTE)


def csv_record(text: str) -> list[str]:
    """The csv fields of ``text``, or [] when it is empty or malformed."""
    try:
        return csv_fields(text)
    except _CsvError:
        return []


# ---------------------------------------------------------------------------
# sizes (github.com/docker/go-units v0.5.0 RAMInBytes)

_RE_GO_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"|0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+)\Z"
)
_BINARY_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}


def _go_int64(value: float) -> int:
    # Go's float64 -> int64 conversion of an out-of-range value gives MinInt64 on amd64
    return int(value) if value < 2**63 else -(2**63)


def ram_in_bytes(value: str) -> int | None:
    """``units.RAMInBytes``: ``64m``, ``1.5GiB``, ``1024``; None when invalid."""
    sep = max(value.rfind(c) for c in "0123456789. ")
    if sep < 0:
        return None
    if value[sep] != " ":
        num, sfx = value[: sep + 1], value[sep + 1 :]
    else:
        num, sfx = value[:sep], value[sep + 1 :]
    if not _RE_GO_FLOAT.match(num):
        return None
    size = float.fromhex(num) if "x" in num.lower() else float(num)
    if size < 0 or size == float("inf"):
        return None
    if not sfx:
        return _go_int64(size)
    sfx = sfx.lower()
    if len(sfx) > 3:
        return None
    if sfx[0] == "b":
        return _go_int64(size) if len(sfx) == 1 else None
    mul = _BINARY_UNITS.get(sfx[0])
    if mul is None or (len(sfx) == 2 and sfx[1] != "b") or (len(sfx) == 3 and sfx[1:] != "ib"):
        return None
    return _go_int64(size * mul)


# ---------------------------------------------------------------------------
# --mount


def _bool_value(key: str, value: str) -> bool:
    b = parse_bool(value)
    if b is None:
        raise InstructionError(f"invalid value for {key}: {value}")
    return b


def _fields(value: str, what: str) -> list[str]:
    try:
        return csv_fields(value)
    except _CsvError as exc:
        raise InstructionError(f"failed to parse csv {what}: {exc}") from None


def _flag_field(m: dict[str, object], key: str, fld: str) -> None:
    """A field without ``=``: ``ro``, ``rw`` or ``required``."""
    if key in ("readonly", "ro", "readwrite", "rw"):
        m["read_only"] = key in ("readonly", "ro")
        m["ro_auto"] = False
    elif key == "required":
        if m["type"] not in ("secret", "ssh"):
            raise InstructionError(f"unexpected key '{key}' for mount type '{m['type']}'")
        m["required"] = True
    else:
        raise InstructionError(f"invalid field '{fld}' must be a key=value pair")


def _value_field(m: dict[str, object], key: str, val: str, fld: str) -> None:
    mtype = m["type"]
    if key == "type":
        if val.lower() not in MOUNT_TYPES:
            raise suggest_error(
                f"unsupported mount type {go_quote(val)}", val, MOUNT_TYPES, case_sensitive=True
            )
        m["type"] = val.lower()
    elif key == "from":
        m["from_"] = val
    elif key in ("source", "src"):
        m["source"] = val
    elif key in ("target", "dst", "destination"):
        m["target"] = val
    elif key in ("readonly", "ro", "readwrite", "rw"):
        b = _bool_value(key, val)
        m["read_only"] = b if key in ("readonly", "ro") else not b
        m["ro_auto"] = False
    elif key == "required":
        if mtype not in ("secret", "ssh"):
            raise InstructionError(f"unexpected key '{key}' for mount type '{mtype}'")
        m["required"] = _bool_value(key, val)
    elif key == "size":
        size = ram_in_bytes(val) if mtype == "tmpfs" else None
        if mtype != "tmpfs":
            raise InstructionError(f"unexpected key '{key}' for mount type '{mtype}'")
        if size is None:
            raise InstructionError(f"invalid value for {key}: {val}")
        m["size_limit"] = size
    elif key == "id":
        m["cache_id"] = val
    elif key == "sharing":
        if val.lower() not in _SHARING:
            raise suggest_error(
                f"unsupported sharing value {go_quote(val)}", val, _SHARING, case_sensitive=True
            )
        m["cache_sharing"] = val.lower()
    elif key in ("mode", "uid", "gid"):
        num = parse_uint(val, 8 if key == "mode" else 10, 2**32)
        if num is None:
            raise InstructionError(f"invalid value {val} for {key}")
        m[key] = num
    elif key == "env":
        m["env"] = val
    else:
        raise suggest_error(
            f"unexpected key '{key}' in '{fld}'", key, MOUNT_KEYS, case_sensitive=True
        )


def parse_mount(value: str, expander: Callable[[str], str] | None) -> Mount | None:
    """Parse one ``--mount`` value. Without ``expander`` only the csv syntax and
    ``from=`` (which may not hold a variable) are checked and None is returned;
    with it every value is expanded and validated. Raises InstructionError
    (or whatever ``expander`` raises)."""
    fields = _fields(value, "mounts")
    m: dict[str, object] = {"type": "bind", "ro_auto": True}
    for fld in fields:
        key, eq, val = fld.partition("=")
        key = key.lower()
        if expander is None:
            dollar = val.find("$")
            if eq and key == "from" and dollar != -1 and dollar != len(val) - 1:
                raise InstructionError(
                    f"'{key}' doesn't support variable expansion, define alias stage instead",
                    hint="add a stage `FROM <image> AS <name>` and mount from=<name>",
                )
            continue  # evaluated when the command is expanded
        if not eq:
            _flag_field(m, key, fld)
            continue
        _value_field(m, key, expander(val), fld)
    if expander is None:
        return None
    ro_auto = m.pop("ro_auto")
    mount = Mount(**m)  # type: ignore[arg-type]
    return _check_mount(mount, bool(ro_auto))


def _check_mount(mount: Mount, ro_auto: bool) -> Mount:
    if mount.type not in ("secret", "ssh", "cache"):
        for attr in ("mode", "uid", "gid"):
            if getattr(mount, attr) is not None:
                raise InstructionError(f'{attr} not allowed for "{mount.type}" type mounts')
    if ro_auto:
        mount = replace(mount, read_only=mount.type not in ("cache", "tmpfs"))
    if mount.type == "secret":
        if mount.from_:
            raise InstructionError("secret mount should not have a from")
        if mount.cache_sharing:
            raise InstructionError("secret mount should not define sharing")
        if not mount.source and not mount.target and not mount.cache_id:
            raise InstructionError("invalid secret mount. one of source, target required")
        if mount.source and mount.cache_id:
            raise InstructionError("both source and id can't be set")
    if mount.cache_sharing and mount.type != "cache":
        raise InstructionError(f"invalid cache sharing set for {mount.type} mount")
    return mount


# ---------------------------------------------------------------------------
# --device


def parse_device(value: str) -> Device:
    """Parse one ``--device`` value (``name[,required[=bool]]``)."""
    name = ""
    required = False
    for fld in _fields(value, "devices"):
        key, eq, val = fld.partition("=")
        key = key.lower()
        if not eq:
            if key == "required":
                required = True
            elif not name:
                name = fld
            else:
                raise InstructionError(f"invalid field '{fld}' must be a key=value pair")
            continue
        if key == "name":
            if name:
                raise InstructionError(f"device name already set to {name}")
            name = val
        elif key == "required":
            b = parse_bool(val)
            if b is None:
                raise InstructionError(f"invalid value for {key}: {val}")
            required = b
        elif not name:
            name = fld
        else:
            raise suggest_error(
                f"unexpected key '{key}' in '{fld}'", key, ("name", "required"), case_sensitive=True
            )
    return Device(name, required)
