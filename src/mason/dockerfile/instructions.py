"""Typed instructions: the AST converted into stages and commands (BuildKit
v0.32.2's ``instructions`` layer, Dockerfile frontend 1.26), with flags
validated and RUN mounts and devices parsed.

Nothing here expands variables; see :mod:`mason.dockerfile.expand`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from mason.dockerfile._support import InstructionError, opt_interval, suggest, suggest_error
from mason.dockerfile._text import go_quote, go_trim_space
from mason.dockerfile.errors import DockerfileError
from mason.dockerfile.mounts import Device, Mount, csv_record, parse_device, parse_mount
from mason.dockerfile.parser import Heredoc, Node, parse_heredoc_word
from mason.structs import Struct, field

__all__ = [
    "INSTRUCTION_NAMES",
    "NETWORK_MODES",
    "SECURITY_MODES",
    "AddCommand",
    "ArgCommand",
    "ArgSpec",
    "CmdCommand",
    "Command",
    "CommandBase",
    "CopyCommand",
    "Device",
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
SECURITY_MODES = ("sandbox", "insecure")


# ---------------------------------------------------------------------------
# models


class KeyValue(Struct, frozen=True):
    """An ENV or LABEL pair; ``no_delim`` for the legacy ``KEY value`` form."""

    key: str
    value: str
    no_delim: bool = False


class ArgSpec(Struct, frozen=True):
    """One ``NAME[=default]`` of an ARG; ``value`` is None without ``=``;
    ``comment`` is the doc comment (BuildKit's ``DocComment``)."""

    key: str
    value: str | None = None
    comment: str = ""


class SourceContent(Struct, frozen=True):
    """A heredoc source of COPY/ADD: written to a file named ``path``."""

    path: str
    data: str
    expand: bool


class InlineFile(Struct, frozen=True):
    """A heredoc of RUN/CMD/ENTRYPOINT (``data`` not chomped; ``chomp`` says whether to)."""

    name: str
    data: str
    chomp: bool


class CommandBase(Struct, frozen=True):
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


class ArgCommand(CommandBase, frozen=True):
    args: tuple[ArgSpec, ...] = ()


class EnvCommand(CommandBase, frozen=True):
    env: tuple[KeyValue, ...] = ()


class LabelCommand(CommandBase, frozen=True):
    labels: tuple[KeyValue, ...] = ()


class MaintainerCommand(CommandBase, frozen=True):
    maintainer: str = ""


class CopyCommand(CommandBase, frozen=True):
    """``exclude`` holds the ``--exclude`` patterns, ``parents`` is ``--parents``."""

    sources: tuple[str, ...] = ()
    contents: tuple[SourceContent, ...] = ()
    dest: str = ""
    from_: str = ""
    chown: str = ""
    chmod: str = ""
    link: bool = False
    exclude: tuple[str, ...] = ()
    parents: bool = False


class AddCommand(CommandBase, frozen=True):
    """``keep_git_dir`` and ``unpack`` are None unless their flag is given."""

    sources: tuple[str, ...] = ()
    contents: tuple[SourceContent, ...] = ()
    dest: str = ""
    chown: str = ""
    chmod: str = ""
    link: bool = False
    exclude: tuple[str, ...] = ()
    keep_git_dir: bool | None = None
    checksum: str = ""
    unpack: bool | None = None


class RunCommand(CommandBase, frozen=True):
    """``cmd_line`` is the exec vector (``prepend_shell`` False) or one shell string.

    ``mount_specs`` are the raw ``--mount`` values; ``mounts`` are filled in by
    expansion (:func:`mason.dockerfile.expand.expand_command`). ``security`` is
    ``sandbox`` or ``insecure``; ``devices`` are the ``--device`` requests."""

    cmd_line: tuple[str, ...] = ()
    prepend_shell: bool = True
    files: tuple[InlineFile, ...] = ()
    flags_used: tuple[str, ...] = ()
    network: str = "default"
    security: str = "sandbox"
    mount_specs: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] | None = None
    devices: tuple[Device, ...] = ()


class CmdCommand(CommandBase, frozen=True):
    cmd_line: tuple[str, ...] = ()
    prepend_shell: bool = True
    files: tuple[InlineFile, ...] = ()


class EntrypointCommand(CommandBase, frozen=True):
    """``cmd_line`` is None for a bare ``ENTRYPOINT`` (it resets the entrypoint)."""

    cmd_line: tuple[str, ...] | None = None
    prepend_shell: bool = True
    files: tuple[InlineFile, ...] = ()


class ShellCommand(CommandBase, frozen=True):
    shell: tuple[str, ...] = ()


class WorkdirCommand(CommandBase, frozen=True):
    path: str = ""


class UserCommand(CommandBase, frozen=True):
    user: str = ""


class VolumeCommand(CommandBase, frozen=True):
    volumes: tuple[str, ...] = ()


class StopSignalCommand(CommandBase, frozen=True):
    signal: str = ""


class ExposeCommand(CommandBase, frozen=True):
    ports: tuple[str, ...] = ()


class HealthcheckCommand(CommandBase, frozen=True):
    """``test`` is ``("NONE",)``, ``("CMD", *argv)`` or ``("CMD-SHELL", cmd)``;
    durations are integer nanoseconds (0 = unset)."""

    test: tuple[str, ...] = ()
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    retries: int = 0
    start_interval: int = 0


class OnbuildCommand(CommandBase, frozen=True):
    """``expression`` is the trigger as it goes into the image config."""

    expression: str = ""


Command = (
    ArgCommand
    | EnvCommand
    | LabelCommand
    | MaintainerCommand
    | CopyCommand
    | AddCommand
    | RunCommand
    | CmdCommand
    | EntrypointCommand
    | ShellCommand
    | WorkdirCommand
    | UserCommand
    | VolumeCommand
    | StopSignalCommand
    | ExposeCommand
    | HealthcheckCommand
    | OnbuildCommand
)


class Stage(Struct, frozen=True):
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

    def is_true(self, name: str) -> bool:
        return self.values[name] == "true"

    def optional_bool(self, name: str) -> bool | None:
        return self.is_true(name) if name in self.used else None

    def parse(self) -> None:
        for arg in self.args:
            if arg == "--":
                return
            if not arg.startswith("--"):
                raise InstructionError(f"arg should start with -- : {arg}")
            flag, eq, value = arg.partition("=")
            name = flag[2:]
            kind = self.kinds.get(name)
            if kind is None:
                raise suggest_error(
                    f"unknown flag: {flag}", name, list(self.kinds), case_sensitive=True
                )
            if name in self.used and kind != "strings":
                raise InstructionError(f"duplicate flag specified: {flag}")
            self.used[name] = None
            if kind == "bool":
                if eq and value == "":
                    raise InstructionError(f"missing a value on flag: {flag}")
                low = value.lower()
                if low not in ("", "true", "false"):
                    raise InstructionError(f"expecting boolean value for flag {flag}, not: {value}")
                self.values[name] = low or "true"
                continue
            if not eq:
                raise InstructionError(f"missing a value on flag: {flag}")
            if kind == "string":
                self.values[name] = value
            else:
                self.lists[name].append(value)


# ---------------------------------------------------------------------------
# conversion: one function per instruction, as BuildKit's parse.go has


class _Req(Struct):
    """``parseRequest``: what an instruction's parser gets from its node."""

    node: Node
    args: list[str]
    flags: _Flags

    @property
    def base(self) -> _Base:
        node = self.node
        return {
            "name": node.value,
            "code": go_trim_space(node.original),
            "start_line": node.start_line,
            "end_line": node.end_line,
        }


if TYPE_CHECKING:
    from typing import TypedDict

    class _Base(TypedDict):
        name: str
        code: str
        start_line: int
        end_line: int

else:
    _Base = dict  # start-up: a TypedDict class compiles its annotations when made


def _node_args(node: Node) -> list[str]:
    """BuildKit's ``nodeArgs``: for ONBUILD, the trigger keyword and its args."""
    if node.child is not None:
        return [node.child.value, *_node_args(node.child)]
    return list(node.args)


def _doc_comment(comments: Sequence[str], name: str) -> str:
    if not name:
        return ""
    prefix = name + " "
    for line in comments:
        if line.startswith(prefix):
            return line[len(prefix) :]
    return ""


def _exactly_one(req: _Req, cmd: str) -> str:
    if len(req.args) != 1:
        raise InstructionError(f"{cmd} requires exactly one argument")
    return req.args[0]


def _at_least_one(req: _Req, cmd: str) -> None:
    if not req.args:
        raise InstructionError(f"{cmd} requires at least one argument")


def _kvps(args: list[str], cmd: str) -> tuple[KeyValue, ...]:
    """ENV/LABEL arguments come in threes: key, value and separator."""
    if not args:
        raise InstructionError(f"{cmd} requires at least one argument")
    if len(args) % 3:
        raise InstructionError(f"Bad input to {cmd}, too many arguments")
    out = []
    for i in range(0, len(args), 3):
        if not args[i]:
            raise InstructionError(f"{cmd} names can not be blank")
        out.append(KeyValue(args[i], args[i + 1], no_delim=args[i + 2] == ""))
    return tuple(out)


def _json_args(req: _Req) -> tuple[str, ...]:
    """``handleJSONArgs``: the exec vector, or the words joined into one shell string."""
    if not req.args:
        return ()
    if req.node.json:
        return tuple(req.args)
    return (" ".join(req.args),)


def _inline_files(node: Node) -> tuple[InlineFile, ...]:
    return tuple(InlineFile(h.name, h.content, h.chomp) for h in node.heredocs)


def _chomp(text: str) -> str:
    return re.sub(r"(?m)^\t+", "", text)


def _heredoc_word(word: str) -> Heredoc | None:
    try:
        return parse_heredoc_word(word)
    except Exception:  # MustParseHeredoc ignores lexing errors
        return None


def _sources_and_dest(
    req: _Req, cmd: str
) -> tuple[tuple[str, ...], tuple[SourceContent, ...], str]:
    dest = req.args[-1]
    if _heredoc_word(dest) is not None:
        raise InstructionError(f"{cmd} cannot accept a heredoc as a destination")
    lookup = {h.name: h for h in req.node.heredocs}
    paths: list[str] = []
    contents: list[SourceContent] = []
    for src in req.args[:-1]:
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


def _no_destination(req: _Req, cmd: str) -> None:
    if len(req.args) < 2:
        raise InstructionError(
            f"{cmd} requires at least two arguments, but only one was provided. Destination could not be determined"
        )


def _p_env(req: _Req) -> EnvCommand:
    req.flags.parse()
    return EnvCommand(**req.base, env=_kvps(req.args, "ENV"))


def _p_maintainer(req: _Req) -> MaintainerCommand:
    maintainer = _exactly_one(req, "MAINTAINER")
    req.flags.parse()
    return MaintainerCommand(**req.base, maintainer=maintainer)


def _p_label(req: _Req) -> LabelCommand:
    req.flags.parse()
    return LabelCommand(**req.base, labels=_kvps(req.args, "LABEL"))


def _p_add(req: _Req) -> AddCommand:
    _no_destination(req, "ADD")
    f = req.flags
    f.add_string("chown")
    f.add_string("chmod")
    f.add_bool("link")
    f.add_bool("keep-git-dir")
    f.add_string("checksum")
    f.add_bool("unpack")
    f.add_strings("exclude")
    f.parse()
    srcs, contents, dest = _sources_and_dest(req, "ADD")
    return AddCommand(
        **req.base, sources=srcs, contents=contents, dest=dest, chown=f.values["chown"],
        chmod=f.values["chmod"], link=f.is_true("link"), exclude=tuple(f.lists["exclude"]),
        keep_git_dir=f.optional_bool("keep-git-dir"), checksum=f.values["checksum"],
        unpack=f.optional_bool("unpack"),
    )  # fmt: skip


def _p_copy(req: _Req) -> CopyCommand:
    _no_destination(req, "COPY")
    f = req.flags
    f.add_string("chown")
    f.add_string("from")
    f.add_string("chmod")
    f.add_bool("link")
    f.add_strings("exclude")
    f.add_bool("parents")
    f.parse()
    srcs, contents, dest = _sources_and_dest(req, "COPY")
    return CopyCommand(
        **req.base, sources=srcs, contents=contents, dest=dest, from_=f.values["from"],
        chown=f.values["chown"], chmod=f.values["chmod"], link=f.is_true("link"),
        exclude=tuple(f.lists["exclude"]), parents=f.is_true("parents"),
    )  # fmt: skip


_RE_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_\.]*\Z")


def _p_from(req: _Req, stage_index: int) -> Stage:
    args = req.args
    name = ""
    if len(args) == 3 and args[1].lower() == "as":
        name = args[2].lower()
        if not _RE_STAGE_NAME.match(name):
            raise InstructionError(
                f"invalid name for build stage: {go_quote(args[2])}, name can't start with a number or contain symbols"
            )
    elif len(args) != 1:
        raise InstructionError("FROM requires either one or three arguments")
    req.flags.add_string("platform")
    req.flags.parse()
    node = req.node
    return Stage(
        index=stage_index, name=name, base_name=args[0], platform=req.flags.values["platform"],
        comment=_doc_comment(node.prev_comment, name), source_code=go_trim_space(node.original),
        start_line=node.start_line, end_line=node.end_line,
    )  # fmt: skip


_RE_ONBUILD_PREFIX = re.compile(r"(?i)^[\t\n\f\r ]*ONBUILD[\t\n\f\r ]*")


def _p_onbuild(req: _Req) -> OnbuildCommand:
    _at_least_one(req, "ONBUILD")
    req.flags.parse()
    trigger = go_trim_space(req.args[0]).upper()
    if trigger == "ONBUILD":
        raise InstructionError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("MAINTAINER", "FROM"):
        raise InstructionError(f"{trigger} isn't allowed as an ONBUILD trigger")
    expr = [_RE_ONBUILD_PREFIX.sub("", req.node.original, count=1)]
    for h in req.node.heredocs:
        expr += ("\n", h.content, h.name)
    return OnbuildCommand(**req.base, expression="".join(expr))


def _p_workdir(req: _Req) -> WorkdirCommand:
    path = _exactly_one(req, "WORKDIR")
    req.flags.parse()
    return WorkdirCommand(**req.base, path=path)


def _p_run(req: _Req) -> RunCommand:
    f = req.flags
    f.add_strings("device")
    f.add_strings("mount")
    f.add_string("network", "default")
    f.add_string("security", "sandbox")
    f.parse()
    used = tuple(sorted(f.used))
    devices = tuple(parse_device(v) for v in f.lists["device"])
    specs = tuple(f.lists["mount"])
    for spec in specs:
        parse_mount(spec, None)
    network = f.values["network"]
    if network not in NETWORK_MODES:
        raise InstructionError(f"invalid network mode {go_quote(network)}")
    security = f.values["security"]
    if security not in SECURITY_MODES:
        raise InstructionError(f"security {go_quote(security)} is not valid")
    return RunCommand(
        **req.base, cmd_line=_json_args(req), prepend_shell=not req.node.json,
        files=_inline_files(req.node), flags_used=used, network=network, security=security,
        mount_specs=specs, devices=devices,
    )  # fmt: skip


def _p_cmd(req: _Req) -> CmdCommand:
    req.flags.parse()
    return CmdCommand(
        **req.base, cmd_line=_json_args(req), prepend_shell=not req.node.json,
        files=_inline_files(req.node),
    )  # fmt: skip


def _p_entrypoint(req: _Req) -> EntrypointCommand:
    req.flags.parse()
    return EntrypointCommand(
        **req.base, cmd_line=_json_args(req) or None, prepend_shell=not req.node.json,
        files=_inline_files(req.node),
    )  # fmt: skip


def _retries(value: str) -> int:
    if value == "":
        return 0
    if not re.match(r"^[+-]?[0-9]+\Z", value):
        raise InstructionError(f"strconv.ParseInt: parsing {go_quote(value)}: invalid syntax")
    retries = int(value)
    if not -(2**31) <= retries < 2**31:
        raise InstructionError(f"strconv.ParseInt: parsing {go_quote(value)}: value out of range")
    if retries < 0:
        raise InstructionError(f"--retries cannot be negative ({retries})")
    return retries


def _p_healthcheck(req: _Req) -> HealthcheckCommand:
    _at_least_one(req, "HEALTHCHECK")
    typ = req.args[0].upper()
    rest = req.args[1:]
    if typ == "NONE":
        if rest:
            raise InstructionError("HEALTHCHECK NONE takes no arguments")
        return HealthcheckCommand(**req.base, test=("NONE",))
    f = req.flags
    for name in ("interval", "timeout", "start-period", "start-interval", "retries"):
        f.add_string(name)
    f.parse()
    if typ != "CMD":
        raise InstructionError(f"Unknown type {go_quote(typ)} in HEALTHCHECK (try CMD)")
    if not rest:
        raise InstructionError("Missing command after HEALTHCHECK CMD")
    vec = tuple(rest) if req.node.json else (" ".join(rest),)
    v = f.values
    return HealthcheckCommand(
        **req.base, test=("CMD" if req.node.json else "CMD-SHELL", *vec),
        interval=opt_interval("interval", v["interval"]),
        timeout=opt_interval("timeout", v["timeout"]),
        start_period=opt_interval("start-period", v["start-period"]),
        start_interval=opt_interval("start-interval", v["start-interval"]),
        retries=_retries(v["retries"]),
    )  # fmt: skip


def _p_expose(req: _Req) -> ExposeCommand:
    _at_least_one(req, "EXPOSE")
    req.flags.parse()
    return ExposeCommand(**req.base, ports=tuple(sorted(req.args)))


def _p_user(req: _Req) -> UserCommand:
    user = _exactly_one(req, "USER")
    req.flags.parse()
    return UserCommand(**req.base, user=user)


def _p_volume(req: _Req) -> VolumeCommand:
    _at_least_one(req, "VOLUME")
    req.flags.parse()
    vols: list[str] = []
    for a in req.args:
        a = go_trim_space(a)
        if a == "":
            raise InstructionError("VOLUME specified can not be an empty string")
        vols.append(a)
    return VolumeCommand(**req.base, volumes=tuple(vols))


def _p_stopsignal(req: _Req) -> StopSignalCommand:
    return StopSignalCommand(**req.base, signal=_exactly_one(req, "STOPSIGNAL"))


def _p_arg(req: _Req) -> ArgCommand:
    _at_least_one(req, "ARG")
    specs: list[ArgSpec] = []
    comments = req.node.prev_comment
    for a in req.args:
        if "=" in a:
            k, _, val = a.partition("=")
            if not k:
                raise InstructionError("ARG names can not be blank")
            specs.append(ArgSpec(k, val, _doc_comment(comments, k)))
        else:
            specs.append(ArgSpec(a, None, _doc_comment(comments, a)))
    return ArgCommand(**req.base, args=tuple(specs))


def _p_shell(req: _Req) -> ShellCommand:
    req.flags.parse()
    if not req.args:
        raise InstructionError("SHELL requires at least one argument")
    if not req.node.json:
        raise InstructionError("SHELL requires the arguments to be in JSON form")
    return ShellCommand(**req.base, shell=tuple(req.args))


_PARSERS: dict[str, Callable[[_Req], Command]] = {
    "env": _p_env, "maintainer": _p_maintainer, "label": _p_label, "add": _p_add,
    "copy": _p_copy, "onbuild": _p_onbuild, "workdir": _p_workdir, "run": _p_run,
    "cmd": _p_cmd, "healthcheck": _p_healthcheck, "entrypoint": _p_entrypoint,
    "expose": _p_expose, "user": _p_user, "volume": _p_volume, "stopsignal": _p_stopsignal,
    "arg": _p_arg, "shell": _p_shell,
}  # fmt: skip


def convert_node(node: Node, *, stage_index: int = 0) -> Command | Stage:
    """Convert one AST node (``ParseInstruction``). Raises InstructionError."""
    req = _Req(node, _node_args(node), _Flags(node.flags))
    kw = node.keyword
    if kw == "from":
        return _p_from(req, stage_index)
    parser = _PARSERS.get(kw)
    if parser is None:
        raise suggest_error(
            f"unknown instruction: {node.value}",
            node.value,
            INSTRUCTION_NAMES,
            case_sensitive=False,
        )
    return parser(req)


def convert(
    nodes: Sequence[Node], *, file: str = "Dockerfile"
) -> tuple[tuple[ArgCommand, ...], tuple[Stage, ...]]:
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
            index=s.index,
            name=s.name,
            base_name=s.base_name,
            platform=s.platform,
            comment=s.comment,
            source_code=s.source_code,
            start_line=s.start_line,
            end_line=s.end_line,
            commands=tuple(c),
        )
        for s, c in zip(stages, commands, strict=True)
    )
    return tuple(meta), out
