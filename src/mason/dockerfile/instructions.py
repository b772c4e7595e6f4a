"""Typed instructions: the AST converted into stages and commands (BuildKit's
``instructions`` layer), with flags validated and RUN mounts parsed.

Nothing here expands variables; see :mod:`mason.dockerfile.expand`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict, cast

from mason.dockerfile._text import go_quote, go_trim_space, levenshtein
from mason.dockerfile.errors import DockerfileError
from mason.dockerfile.parser import Heredoc, Node, parse_heredoc_word

__all__ = [
    "INSTRUCTION_NAMES",
    "AddCommand",
    "ArgCommand",
    "ArgSpec",
    "CmdCommand",
    "Command",
    "CommandBase",
    "CopyCommand",
    "EntrypointCommand",
    "EnvCommand",
    "ExposeCommand",
    "HealthcheckCommand",
    "InlineFile",
    "InstructionError",
    "KeyValue",
    "LabelCommand",
    "MaintainerCommand",
    "Mount",
    "OnbuildCommand",
    "RunCommand",
    "ShellCommand",
    "SourceContent",
    "Stage",
    "StopSignalCommand",
    "UserCommand",
    "VolumeCommand",
    "WorkdirCommand",
    "convert",
    "convert_node",
    "csv_record",
    "parse_mount",
    "suggest",
]

INSTRUCTION_NAMES = (
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
)  # fmt: skip

NETWORK_MODES = ("default", "none", "host")
MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_MOUNT_KEYS = (
    "type", "from", "source", "target", "readonly", "id", "sharing", "required", "mode",
    "uid", "gid", "src", "dst", "ro", "rw", "readwrite",
)  # fmt: skip
_SHARING = ("shared", "private", "locked")
_MIN_DURATION_NS = 1_000_000  # container.MinimumDuration (1ms)


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


def _suggest_error(message: str, value: str, options: Sequence[str], *, case_sensitive: bool) -> InstructionError:
    match = suggest(value, options, case_sensitive=case_sensitive)
    if match is None:
        return InstructionError(message)
    return InstructionError(f"{message} (did you mean {match}?)", hint=f"did you mean {match}?")


# ---------------------------------------------------------------------------
# models


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str


@dataclass(frozen=True)
class ArgSpec:
    """One ``NAME[=default]`` of an ARG; ``value`` is None without ``=``."""

    key: str
    value: str | None = None
    comment: str = ""


@dataclass(frozen=True)
class SourceContent:
    """A heredoc source of COPY/ADD: written to a file named ``path``."""

    path: str
    data: str
    expand: bool


@dataclass(frozen=True)
class InlineFile:
    """A heredoc of RUN/CMD/ENTRYPOINT (``data`` not chomped; ``chomp`` says whether to)."""

    name: str
    data: str
    chomp: bool


@dataclass(frozen=True)
class Mount:
    """A ``RUN --mount`` spec. ``mode``/``uid``/``gid`` are None when unset."""

    type: str = "bind"
    from_: str = ""
    source: str = ""
    target: str = ""
    read_only: bool = True
    size_limit: int = 0
    cache_id: str = ""
    cache_sharing: str = ""
    required: bool = False
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True)
class CommandBase:
    """What every command has: the keyword as written, the trimmed source and lines."""

    name: str
    code: str
    start_line: int
    end_line: int

    @property
    def keyword(self) -> str:
        return self.name.lower()

    @property
    def lines(self) -> tuple[int, ...]:
        return tuple(range(self.start_line, max(self.start_line, self.end_line) + 1))


@dataclass(frozen=True)
class ArgCommand(CommandBase):
    args: tuple[ArgSpec, ...] = ()


@dataclass(frozen=True)
class EnvCommand(CommandBase):
    env: tuple[KeyValue, ...] = ()


@dataclass(frozen=True)
class LabelCommand(CommandBase):
    labels: tuple[KeyValue, ...] = ()


@dataclass(frozen=True)
class MaintainerCommand(CommandBase):
    maintainer: str = ""


@dataclass(frozen=True)
class CopyCommand(CommandBase):
    sources: tuple[str, ...] = ()
    contents: tuple[SourceContent, ...] = ()
    dest: str = ""
    from_: str = ""
    chown: str = ""
    chmod: str = ""
    link: bool = False


@dataclass(frozen=True)
class AddCommand(CommandBase):
    sources: tuple[str, ...] = ()
    contents: tuple[SourceContent, ...] = ()
    dest: str = ""
    chown: str = ""
    chmod: str = ""
    link: bool = False
    keep_git_dir: bool = False
    checksum: str = ""


@dataclass(frozen=True)
class RunCommand(CommandBase):
    """``cmd_line`` is the exec vector (``prepend_shell`` False) or one shell string.

    ``mount_specs`` are the raw ``--mount`` values; ``mounts`` are filled in by
    expansion (:func:`mason.dockerfile.expand.expand_command`)."""

    cmd_line: tuple[str, ...] = ()
    prepend_shell: bool = True
    files: tuple[InlineFile, ...] = ()
    flags_used: tuple[str, ...] = ()
    network: str = "default"
    mount_specs: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] | None = None


@dataclass(frozen=True)
class CmdCommand(CommandBase):
    cmd_line: tuple[str, ...] = ()
    prepend_shell: bool = True
    files: tuple[InlineFile, ...] = ()


@dataclass(frozen=True)
class EntrypointCommand(CommandBase):
    """``cmd_line`` is None for a bare ``ENTRYPOINT`` (it resets the entrypoint)."""

    cmd_line: tuple[str, ...] | None = None
    prepend_shell: bool = True
    files: tuple[InlineFile, ...] = ()


@dataclass(frozen=True)
class ShellCommand(CommandBase):
    shell: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkdirCommand(CommandBase):
    path: str = ""


@dataclass(frozen=True)
class UserCommand(CommandBase):
    user: str = ""


@dataclass(frozen=True)
class VolumeCommand(CommandBase):
    volumes: tuple[str, ...] = ()


@dataclass(frozen=True)
class StopSignalCommand(CommandBase):
    signal: str = ""


@dataclass(frozen=True)
class ExposeCommand(CommandBase):
    ports: tuple[str, ...] = ()


@dataclass(frozen=True)
class HealthcheckCommand(CommandBase):
    """``test`` is ``("NONE",)``, ``("CMD", *argv)`` or ``("CMD-SHELL", cmd)``;
    durations are integer nanoseconds (0 = unset)."""

    test: tuple[str, ...] = ()
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    retries: int = 0


@dataclass(frozen=True)
class OnbuildCommand(CommandBase):
    """``expression`` is the trigger as it goes into the image config."""

    expression: str = ""


Command = (
    ArgCommand | EnvCommand | LabelCommand | MaintainerCommand | CopyCommand | AddCommand
    | RunCommand | CmdCommand | EntrypointCommand | ShellCommand | WorkdirCommand | UserCommand
    | VolumeCommand | StopSignalCommand | ExposeCommand | HealthcheckCommand | OnbuildCommand
)


@dataclass(frozen=True)
class Stage:
    """A ``FROM`` and its commands. ``name`` is the lowercased ``AS`` name or "";
    ``base_name`` and ``platform`` are as written (unexpanded)."""

    index: int
    name: str
    base_name: str
    platform: str
    comment: str
    source_code: str
    start_line: int
    end_line: int
    commands: tuple[Command, ...] = field(default=())

    @property
    def lines(self) -> tuple[int, ...]:
        return tuple(range(self.start_line, max(self.start_line, self.end_line) + 1))


# ---------------------------------------------------------------------------
# flags


class _Flags:
    """``BFlags``: the allowed flags of one instruction, checked against the raw words."""

    def __init__(self, args: Sequence[str]) -> None:
        self.args = args
        self.kinds: dict[str, str] = {}
        self.values: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}
        self.used: dict[str, None] = {}

    def add_bool(self, name: str) -> None:
        self.kinds[name] = "bool"
        self.values[name] = "false"

    def add_string(self, name: str, default: str = "") -> None:
        self.kinds[name] = "string"
        self.values[name] = default

    def add_strings(self, name: str) -> None:
        self.kinds[name] = "strings"
        self.lists[name] = []

    def parse(self) -> None:
        for arg in self.args:
            if not arg.startswith("--"):
                raise InstructionError(f"arg should start with -- : {arg}")
            if arg == "--":
                return
            arg = arg[2:]
            name, eq, value = arg.partition("=")
            kind = self.kinds.get(name)
            if kind is None:
                raise _suggest_error(f"unknown flag: {name}", name, list(self.kinds), case_sensitive=True)
            if name in self.used and kind != "strings":
                raise InstructionError(f"duplicate flag specified: {name}")
            self.used[name] = None
            if kind == "bool":
                if eq and value == "":
                    raise InstructionError(f"missing a value on flag: {name}")
                low = value.lower()
                if low == "":
                    self.values[name] = "true"
                elif low in ("true", "false"):
                    self.values[name] = low
                else:
                    raise InstructionError(f"expecting boolean value for flag {name}, not: {value}")
            elif kind == "string":
                if not eq:
                    raise InstructionError(f"missing a value on flag: {name}")
                self.values[name] = value
            else:
                if not eq:
                    raise InstructionError(f"missing a value on flag: {name}")
                self.lists[name].append(value)


# ---------------------------------------------------------------------------
# RUN --mount


class _CsvError(ValueError):
    pass


def csv_record(text: str) -> list[str]:
    """The first csv record of ``text``, or [] when it has none or is malformed."""
    try:
        return _csv_record(text)
    except _CsvError:
        return []


def _csv_record(text: str) -> list[str]:
    """The first record of ``text`` as Go's encoding/csv reads it (strict quotes)."""
    # encoding/csv skips empty lines; a value with no record is io.EOF
    lines = text.split("\n")
    line_no = 0
    line = ""
    for i, ln in enumerate(lines):
        if ln.rstrip("\r") != "":
            line_no = i + 1
            line = ln
            break
    else:
        raise _CsvError("EOF")
    if line.endswith("\r"):
        line = line[:-1]
    fields: list[str] = []
    pos = 0
    n = len(line)
    while True:
        if pos < n and line[pos] == '"':
            pos += 1
            buf: list[str] = []
            while True:
                j = line.find('"', pos)
                if j < 0:
                    raise _CsvError(
                        f'parse error on line {line_no}, column {n + 1}: extraneous or missing " in quoted-field'
                    )
                buf.append(line[pos:j])
                pos = j + 1
                if pos < n and line[pos] == '"':
                    buf.append('"')
                    pos += 1
                    continue
                if pos == n:
                    fields.append("".join(buf))
                    return fields
                if line[pos] == ",":
                    fields.append("".join(buf))
                    pos += 1
                    break
                raise _CsvError(
                    f'parse error on line {line_no}, column {pos + 1}: extraneous or missing " in quoted-field'
                )
            if pos == n:
                fields.append("")
                return fields
            continue
        j = line.find(",", pos)
        end = n if j < 0 else j
        value = line[pos:end]
        q = value.find('"')
        if q >= 0:
            raise _CsvError(f'parse error on line {line_no}, column {pos + q + 1}: bare " in non-quoted-field')
        fields.append(value)
        if j < 0:
            return fields
        pos = j + 1


_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def _parse_bool(key: str, value: str) -> bool:
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise InstructionError(f"invalid value for {key}: {value}")


def _parse_uint(value: str, base: int, limit: int) -> int | None:
    if not value or not all(c in "0123456789abcdef"[:base] for c in value):
        return None
    v = int(value, base)
    return v if v < limit else None


_RAM_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
_RE_RAM = re.compile(r"^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?\Z")


def _ram_in_bytes(value: str) -> int | None:
    """go-units ``RAMInBytes``: ``64m``, ``1.5GiB``, ``1024``."""
    m = _RE_RAM.match(value)
    if m is None:
        return None
    return int(float(m.group(1)) * _RAM_UNITS[(m.group(2) or "").lower()])


def parse_mount(value: str, expander: Callable[[str], str] | None) -> Mount | None:
    """Parse one ``--mount`` value. Without ``expander`` only the csv syntax and
    ``from=`` (which may not hold a variable) are checked and None is returned;
    with it every value is expanded and validated. Raises InstructionError
    (or whatever ``expander`` raises)."""
    try:
        fields = _csv_record(value)
    except _CsvError as exc:
        raise InstructionError(f"failed to parse csv mounts: {exc}") from None
    m: dict[str, object] = {"type": "bind"}
    ro_auto = True
    for fld in fields:
        key, eq, val = fld.partition("=")
        key = key.lower()
        mtype = str(m["type"])
        if not eq:
            if expander is None:
                continue
            if key in ("readonly", "ro"):
                m["read_only"] = True
                ro_auto = False
                continue
            if key in ("readwrite", "rw"):
                m["read_only"] = False
                ro_auto = False
                continue
            if key == "required":
                if mtype in ("secret", "ssh"):
                    m["required"] = True
                    continue
                raise InstructionError(f"unexpected key '{key}' for mount type '{mtype}'")
            raise InstructionError(f"invalid field '{fld}' must be a key=value pair")
        if expander is not None:
            val = expander(val)
        elif key == "from":
            if re.search(r"\$.", val, re.DOTALL):
                raise InstructionError(
                    f"'{key}' doesn't support variable expansion, define alias stage instead",
                    hint="add a stage `FROM <image> AS <name>` and mount from=<name>",
                )
            continue
        else:
            continue
        if key == "type":
            low = val.lower()
            if low not in MOUNT_TYPES:
                raise _suggest_error(f"unsupported mount type {go_quote(val)}", val, MOUNT_TYPES, case_sensitive=True)
            m["type"] = low
        elif key == "from":
            m["from_"] = val
        elif key in ("source", "src"):
            m["source"] = val
        elif key in ("target", "dst", "destination"):
            m["target"] = val
        elif key in ("readonly", "ro"):
            m["read_only"] = _parse_bool(key, val)
            ro_auto = False
        elif key in ("readwrite", "rw"):
            m["read_only"] = not _parse_bool(key, val)
            ro_auto = False
        elif key == "required":
            if mtype not in ("secret", "ssh"):
                raise InstructionError(f"unexpected key '{key}' for mount type '{mtype}'")
            m["required"] = _parse_bool(key, val)
        elif key == "size":
            if mtype != "tmpfs":
                raise InstructionError(f"unexpected key '{key}' for mount type '{mtype}'")
            size = _ram_in_bytes(val)
            if size is None:
                raise InstructionError(f"invalid value for {key}: {val}")
            m["size_limit"] = size
        elif key == "id":
            m["cache_id"] = val
        elif key == "sharing":
            if val.lower() not in _SHARING:
                raise InstructionError(f"unsupported sharing value {go_quote(val)}")
            m["cache_sharing"] = val.lower()
        elif key in ("mode", "uid", "gid"):
            num = _parse_uint(val, 8 if key == "mode" else 10, 2**32)
            if num is None:
                raise InstructionError(f"invalid value {val} for {key}")
            m[key] = num
        else:
            raise _suggest_error(f"unexpected key '{key}' in '{fld}'", key, _MOUNT_KEYS, case_sensitive=True)
    if expander is None:
        return None
    mount = Mount(**cast(Any, m))
    file_info = mount.type in ("secret", "ssh", "cache")
    for attr in ("mode", "uid", "gid"):
        if getattr(mount, attr) is not None and not file_info:
            raise InstructionError(f"{attr} not allowed for {go_quote(mount.type)} type mounts")
    if ro_auto:
        mount = _replace(mount, read_only=mount.type not in ("cache", "tmpfs"))
    if mount.cache_sharing and mount.type != "cache":
        raise InstructionError(f"invalid cache sharing set for {mount.type} mount")
    if mount.type == "secret":
        if mount.from_:
            raise InstructionError("secret mount should not have a from")
        if mount.cache_sharing:
            raise InstructionError("secret mount should not define sharing")
        if not mount.source and not mount.target and not mount.cache_id:
            raise InstructionError("invalid secret mount. one of source, target required")
        if mount.source and mount.cache_id:
            raise InstructionError("both source and id can't be set")
    return mount


def _replace(mount: Mount, **changes: object) -> Mount:
    import dataclasses

    return dataclasses.replace(mount, **cast(Any, changes))


# ---------------------------------------------------------------------------
# durations (Go's time.ParseDuration)

_DURATION_UNITS = {
    "ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
    "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
}  # fmt: skip
_RE_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]+)")


def _parse_duration(s: str) -> int:
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
            raise InstructionError(f"time: unknown unit {go_quote(unit)} in duration {go_quote(orig)}")
        total += float(num) * _DURATION_UNITS[unit]
        pos = m.end()
    if total > 2**63 - 1:
        raise bad
    value = int(total)
    return -value if neg else value


_RE_NUM_ONLY = re.compile(r"[0-9]*(?:\.[0-9]*)?\Z")


def _opt_interval(name: str, value: str) -> int:
    if value == "":
        return 0
    d = _parse_duration(value)
    if d == 0:
        return 0
    if d < _MIN_DURATION_NS:
        raise InstructionError(f'Interval "{name}" cannot be less than 1ms')
    return d


# ---------------------------------------------------------------------------
# conversion


def _node_args(node: Node) -> list[str]:
    """BuildKit's ``nodeArgs``: for ONBUILD, the trigger keyword and its args."""
    if node.child is not None:
        return [node.child.value, *_node_args(node.child)]
    return list(node.args)


class _Base(TypedDict):
    name: str
    code: str
    start_line: int
    end_line: int


def _base(node: Node) -> _Base:
    return {
        "name": node.value,
        "code": go_trim_space(node.original),
        "start_line": node.start_line,
        "end_line": node.end_line,
    }


def _comment_for(comments: Sequence[str], name: str) -> str:
    if not name:
        return ""
    prefix = name + " "
    for line in comments:
        if line.startswith(prefix):
            return line[len(prefix) :]
    return ""


def _kvps(args: list[str], cmd: str) -> tuple[KeyValue, ...]:
    if not args:
        raise InstructionError(f"{cmd} requires at least one argument")
    if len(args) % 2:
        raise InstructionError(f"Bad input to {cmd}, too many arguments")
    out = []
    for i in range(0, len(args), 2):
        if not args[i]:
            raise InstructionError(f"{cmd} names can not be blank")
        out.append(KeyValue(args[i], args[i + 1]))
    return tuple(out)


def _cmdline(node: Node, args: list[str]) -> tuple[tuple[str, ...], tuple[InlineFile, ...], bool]:
    files = tuple(InlineFile(h.name, h.content, h.chomp) for h in node.heredocs)
    if not args:
        vec: tuple[str, ...] = ()
    elif node.json:
        vec = tuple(args)
    else:
        vec = (" ".join(args),)
    return vec, files, not node.json


def _chomp(text: str) -> str:
    return re.sub(r"(?m)^\t+", "", text)


def _sources_and_dest(node: Node, args: list[str], cmd: str) -> tuple[tuple[str, ...], tuple[SourceContent, ...], str]:
    dest = args[-1]
    if _heredoc_word(dest) is not None:
        raise InstructionError(f"{cmd} cannot accept a heredoc as a destination")
    lookup = {h.name: h for h in node.heredocs}
    paths: list[str] = []
    contents: list[SourceContent] = []
    for src in args[:-1]:
        h = _heredoc_word(src)
        if h is None:
            paths.append(src)
            continue
        body = lookup.get(h.name)
        data = body.content if body is not None else ""
        if h.chomp:
            data = _chomp(data)
        contents.append(SourceContent(h.name, data, h.expand))
    return tuple(paths), tuple(contents), dest


def _heredoc_word(word: str) -> Heredoc | None:
    try:
        return parse_heredoc_word(word)
    except Exception:  # MustParseHeredoc ignores lexing errors
        return None


_RE_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_\.]*\Z")
_RE_ONBUILD_PREFIX = re.compile(r"(?i)^[\t\n\f\r ]*ONBUILD[\t\n\f\r ]*")


def convert_node(node: Node, *, stage_index: int = 0) -> Command | Stage:
    """Convert one AST node (``ParseInstruction``). Raises InstructionError."""
    kw = node.keyword
    args = _node_args(node)
    flags = _Flags(node.flags)
    base = _base(node)
    if kw == "env":
        flags.parse()
        return EnvCommand(**base, env=_kvps(args, "ENV"))
    if kw == "maintainer":
        if len(args) != 1:
            raise InstructionError("MAINTAINER requires exactly one argument")
        flags.parse()
        return MaintainerCommand(**base, maintainer=args[0])
    if kw == "label":
        flags.parse()
        return LabelCommand(**base, labels=_kvps(args, "LABEL"))
    if kw in ("add", "copy"):
        cmd = kw.upper()
        if len(args) < 2:
            raise InstructionError(
                f"{cmd} requires at least two arguments, but only one was provided. Destination could not be determined"
            )
        flags.add_string("chown")
        if kw == "copy":
            flags.add_string("from")
        flags.add_string("chmod")
        flags.add_bool("link")
        if kw == "add":
            flags.add_bool("keep-git-dir")
            flags.add_string("checksum")
        flags.parse()
        srcs, contents, dest = _sources_and_dest(node, args, cmd)
        v = flags.values
        if kw == "copy":
            return CopyCommand(
                **base, sources=srcs, contents=contents, dest=dest, from_=v["from"],
                chown=v["chown"], chmod=v["chmod"], link=v["link"] == "true",
            )  # fmt: skip
        return AddCommand(
            **base, sources=srcs, contents=contents, dest=dest, chown=v["chown"],
            chmod=v["chmod"], link=v["link"] == "true", keep_git_dir=v["keep-git-dir"] == "true",
            checksum=v["checksum"],
        )  # fmt: skip
    if kw == "from":
        name = ""
        if len(args) == 3 and args[1].lower() == "as":
            name = args[2].lower()
            if not _RE_STAGE_NAME.match(name):
                raise InstructionError(
                    f"invalid name for build stage: {go_quote(args[2])}, name can't start with a number or contain symbols"
                )
        elif len(args) != 1:
            raise InstructionError("FROM requires either one or three arguments")
        flags.add_string("platform")
        flags.parse()
        return Stage(
            index=stage_index, name=name, base_name=args[0], platform=flags.values["platform"],
            comment=_comment_for(node.prev_comment, name), source_code=go_trim_space(node.original),
            start_line=node.start_line, end_line=node.end_line,
        )  # fmt: skip
    if kw == "onbuild":
        if not args:
            raise InstructionError("ONBUILD requires at least one argument")
        flags.parse()
        trigger = go_trim_space(args[0]).upper()
        if trigger == "ONBUILD":
            raise InstructionError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trigger in ("MAINTAINER", "FROM"):
            raise InstructionError(f"{trigger} isn't allowed as an ONBUILD trigger")
        expr = [_RE_ONBUILD_PREFIX.sub("", node.original, count=1)]
        for h in node.heredocs:
            expr += ("\n", h.content, h.name)
        return OnbuildCommand(**base, expression="".join(expr))
    if kw == "workdir":
        if len(args) != 1:
            raise InstructionError("WORKDIR requires exactly one argument")
        flags.parse()
        return WorkdirCommand(**base, path=args[0])
    if kw == "run":
        flags.add_string("network", "default")
        flags.add_strings("mount")
        flags.parse()
        used = tuple(sorted(flags.used))
        vec, files, shell = _cmdline(node, args)
        network = flags.values["network"]
        if network not in NETWORK_MODES:
            raise InstructionError(f"invalid network mode {go_quote(network)}")
        specs = tuple(flags.lists["mount"])
        for spec in specs:
            parse_mount(spec, None)
        return RunCommand(
            **base, cmd_line=vec, prepend_shell=shell, files=files, flags_used=used,
            network=network, mount_specs=specs,
        )  # fmt: skip
    if kw == "cmd":
        flags.parse()
        vec, files, shell = _cmdline(node, args)
        return CmdCommand(**base, cmd_line=vec, prepend_shell=shell, files=files)
    if kw == "entrypoint":
        flags.parse()
        vec, files, shell = _cmdline(node, args)
        return EntrypointCommand(
            **base, cmd_line=vec or None, prepend_shell=shell, files=files
        )
    if kw == "healthcheck":
        return _healthcheck(node, args, flags, base)
    if kw == "expose":
        if not args:
            raise InstructionError("EXPOSE requires at least one argument")
        flags.parse()
        return ExposeCommand(**base, ports=tuple(sorted(args)))
    if kw == "user":
        if len(args) != 1:
            raise InstructionError("USER requires exactly one argument")
        flags.parse()
        return UserCommand(**base, user=args[0])
    if kw == "volume":
        if not args:
            raise InstructionError("VOLUME requires at least one argument")
        flags.parse()
        vols: list[str] = []
        for a in args:
            a = go_trim_space(a)
            if a == "":
                raise InstructionError("VOLUME specified can not be an empty string")
            vols.append(a)
        return VolumeCommand(**base, volumes=tuple(vols))
    if kw == "stopsignal":
        if len(args) != 1:
            raise InstructionError("STOPSIGNAL requires exactly one argument")
        return StopSignalCommand(**base, signal=args[0])
    if kw == "arg":
        if not args:
            raise InstructionError("ARG requires at least one argument")
        arg_specs: list[ArgSpec] = []
        for a in args:
            if "=" in a:
                k, _, val = a.partition("=")
                if not k:
                    raise InstructionError("ARG names can not be blank")
                arg_specs.append(ArgSpec(k, val, _comment_for(node.prev_comment, k)))
            else:
                arg_specs.append(ArgSpec(a, None, _comment_for(node.prev_comment, a)))
        return ArgCommand(**base, args=tuple(arg_specs))
    if kw == "shell":
        flags.parse()
        if not args:
            raise InstructionError("SHELL requires at least one argument")
        if not node.json:
            raise InstructionError("SHELL requires the arguments to be in JSON form")
        return ShellCommand(**base, shell=tuple(args))
    raise _suggest_error(
        f"unknown instruction: {node.value}", node.value, INSTRUCTION_NAMES, case_sensitive=False
    )


def _healthcheck(node: Node, args: list[str], flags: _Flags, base: _Base) -> HealthcheckCommand:
    if not args:
        raise InstructionError("HEALTHCHECK requires at least one argument")
    typ = args[0].upper()
    rest = args[1:]
    if typ == "NONE":
        if rest:
            raise InstructionError("HEALTHCHECK NONE takes no arguments")
        return HealthcheckCommand(**base, test=("NONE",))
    for name in ("interval", "timeout", "start-period", "retries"):
        flags.add_string(name)
    flags.parse()
    if typ != "CMD":
        raise InstructionError(f"Unknown type {go_quote(typ)} in HEALTHCHECK (try CMD)")
    if not rest:
        raise InstructionError("Missing command after HEALTHCHECK CMD")
    vec = tuple(rest) if node.json else (" ".join(rest),)
    test = ("CMD" if node.json else "CMD-SHELL", *vec)
    v = flags.values
    interval = _opt_interval("interval", v["interval"])
    timeout = _opt_interval("timeout", v["timeout"])
    start = _opt_interval("start-period", v["start-period"])
    retries = 0
    if v["retries"] != "":
        r = v["retries"]
        if not re.match(r"^[+-]?[0-9]+\Z", r):
            raise InstructionError(f"strconv.ParseInt: parsing {go_quote(r)}: invalid syntax")
        retries = int(r)
        if not -(2**31) <= retries < 2**31:
            raise InstructionError(f"strconv.ParseInt: parsing {go_quote(r)}: value out of range")
        if retries < 0:
            raise InstructionError(f"--retries cannot be negative ({retries})")
    return HealthcheckCommand(
        **base, test=test, interval=interval, timeout=timeout, start_period=start, retries=retries
    )


def convert(nodes: Sequence[Node], *, file: str = "Dockerfile") -> tuple[tuple[ArgCommand, ...], tuple[Stage, ...]]:
    """``instructions.Parse``: meta ARGs (before the first FROM) and stages.
    Raises DockerfileError (section ``instructions``)."""
    meta: list[ArgCommand] = []
    stages: list[Stage] = []
    commands: list[list[Command]] = []
    for node in nodes:
        try:
            cmd = convert_node(node, stage_index=len(stages))
        except InstructionError as exc:
            raise DockerfileError(
                f"dockerfile parse error on line {node.start_line}: {exc.message}",
                file=file,
                lines=node.lines,
                hint=exc.hint,
                section="instructions",
            ) from None
        if isinstance(cmd, Stage):
            stages.append(cmd)
            commands.append([])
            continue
        if not stages:
            if isinstance(cmd, ArgCommand):
                meta.append(cmd)
                continue
            raise DockerfileError(
                "no build stage in current context",
                file=file,
                lines=node.lines,
                hint="start the Dockerfile with a FROM instruction (only ARG may come before it)",
                section="instructions",
            )
        commands[-1].append(cmd)
    out = tuple(
        Stage(
            index=s.index, name=s.name, base_name=s.base_name, platform=s.platform,
            comment=s.comment, source_code=s.source_code, start_line=s.start_line,
            end_line=s.end_line, commands=tuple(c),
        )
        for s, c in zip(stages, commands, strict=True)
    )
    return tuple(meta), out
