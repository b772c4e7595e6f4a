"""The debug rendering of a Dockerfile in the shape of the golden ``expected.json``
(sections ``directives``, ``parse``, ``instructions``, ``expandedWithTestEnv``),
so any Dockerfile can be compared with BuildKit's reading of it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mason.dockerfile._text import go_quote, go_trim_space
from mason.dockerfile.errors import DockerfileError
from mason.dockerfile.expand import expand_command
from mason.dockerfile.instructions import (
    AddCommand,
    ArgCommand,
    CmdCommand,
    Command,
    CopyCommand,
    EntrypointCommand,
    EnvCommand,
    ExposeCommand,
    HealthcheckCommand,
    InlineFile,
    KeyValue,
    LabelCommand,
    MaintainerCommand,
    OnbuildCommand,
    RunCommand,
    ShellCommand,
    Stage,
    StopSignalCommand,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
    convert,
)
from mason.dockerfile.parser import Node, detect_syntax, parse, parse_directives
from mason.dockerfile.shell import ShellLexer, ShellLexError

__all__ = ["BUILDKIT_VERSION", "TEST_ENV", "render_debug"]

#: the BuildKit release whose Dockerfile frontend (1.26) this package follows
BUILDKIT_VERSION = "v0.32.2"

#: the fixed environment of the ``expandedWithTestEnv`` section
TEST_ENV: tuple[tuple[str, str], ...] = (
    ("FOO", "foo"),
    ("BAR", "bar baz"),
    ("EMPTY", ""),
    ("HOME", "/root"),
    ("VERSION", "1.2.3"),
    ("TARGETARCH", "amd64"),
)


def _err(exc: DockerfileError) -> dict[str, Any]:
    return {"message": exc.message, "lines": list(exc.lines)}


def _node(n: Node) -> dict[str, Any]:
    nxt: list[Any] = list(n.args)
    if n.child is not None:
        nxt = [{"value": "", "children": [_node(n.child)]}]
    return {
        "value": n.value,
        "original": n.original,
        "startLine": n.start_line,
        "endLine": n.end_line,
        "flags": list(n.flags),
        "next": nxt,
        "attributes": {"json": True} if n.json else {},
        "heredocs": [
            {
                "name": h.name,
                "fileDescriptor": h.file_descriptor,
                "expand": h.expand,
                "chomp": h.chomp,
                "content": h.content,
            }
            for h in n.heredocs
        ],
        "prevComment": list(n.prev_comment),
    }


def _dump_node(n: Node) -> str:
    """``Node.Dump()`` of one instruction: ``keyword ["flags"] "arg" ...``."""
    out = [n.value.lower()]
    if n.flags:
        out.append(" [" + " ".join(go_quote(f) for f in n.flags) + "]")
    if n.child is not None:
        out.append(" (" + _dump_node(n.child) + ")")
    for a in n.args:
        out.append(" " + go_quote(a))
    return go_trim_space("".join(out))


def dump(nodes: tuple[Node, ...]) -> str:
    """BuildKit's ``Node.Dump()`` s-expression of the whole AST."""
    return go_trim_space("".join("(" + _dump_node(n) + ")\n" for n in nodes))


def _files(files: tuple[InlineFile, ...]) -> list[dict[str, Any]] | None:
    return [{"Name": f.name, "Data": f.data, "Chomp": f.chomp} for f in files] or None


def _kvs(items: tuple[KeyValue, ...]) -> list[dict[str, Any]]:
    return [{"Key": kv.key, "Value": kv.value, "NoDelim": kv.no_delim} for kv in items]


def _copy_fields(c: CopyCommand | AddCommand) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["type"] = "CopyCommand" if isinstance(c, CopyCommand) else "AddCommand"
    out["SourcePaths"] = list(c.sources) or None
    out["SourceContents"] = [
        {"Path": s.path, "Data": s.data, "Expand": s.expand} for s in c.contents
    ] or None
    out["DestPath"] = c.dest
    if isinstance(c, CopyCommand):
        out["From"] = c.from_
    out.update(Chown=c.chown, Chmod=c.chmod, Link=c.link, ExcludePatterns=list(c.exclude) or None)
    if isinstance(c, CopyCommand):
        out["Parents"] = c.parents
    else:
        out.update(KeepGitDir=c.keep_git_dir, Checksum=c.checksum, Unpack=c.unpack)
    return out


def _mount_fields(m: Any) -> dict[str, Any]:
    return {
        "Type": m.type,
        "From": m.from_,
        "Source": m.source,
        "Target": m.target,
        "ReadOnly": m.read_only,
        "SizeLimit": m.size_limit,
        "CacheID": m.cache_id,
        "CacheSharing": m.cache_sharing,
        "Required": m.required,
        "Env": m.env,
        "Mode": m.mode,
        "UID": m.uid,
        "GID": m.gid,
    }


def _cmd(c: Command) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "", "name": c.name, "code": c.code, "lines": list(c.lines)}
    if isinstance(c, ArgCommand):
        out["type"] = "ArgCommand"
        out["Args"] = [{"Key": a.key, "Value": a.value, "DocComment": a.comment} for a in c.args]
    elif isinstance(c, EnvCommand):
        out["type"] = "EnvCommand"
        out["Env"] = _kvs(c.env)
    elif isinstance(c, LabelCommand):
        out["type"] = "LabelCommand"
        out["Labels"] = _kvs(c.labels)
    elif isinstance(c, MaintainerCommand):
        out.update(type="MaintainerCommand", Maintainer=c.maintainer)
    elif isinstance(c, CopyCommand | AddCommand):
        out.update(_copy_fields(c))
    elif isinstance(c, RunCommand):
        out.update(
            type="RunCommand", CmdLine=list(c.cmd_line), PrependShell=c.prepend_shell,
            Files=_files(c.files), FlagsUsed=list(c.flags_used), network=c.network,
            security=c.security,
        )  # fmt: skip
        if c.mounts is not None:
            out["mounts"] = [_mount_fields(m) for m in c.mounts]
    elif isinstance(c, CmdCommand | EntrypointCommand):
        out["type"] = "CmdCommand" if isinstance(c, CmdCommand) else "EntrypointCommand"
        out.update(
            CmdLine=None if c.cmd_line is None else list(c.cmd_line),
            PrependShell=c.prepend_shell,
            Files=_files(c.files),
        )
    elif isinstance(c, ShellCommand):
        out.update(type="ShellCommand", Shell=list(c.shell))
    elif isinstance(c, WorkdirCommand):
        out.update(type="WorkdirCommand", Path=c.path)
    elif isinstance(c, UserCommand):
        out.update(type="UserCommand", User=c.user)
    elif isinstance(c, VolumeCommand):
        out.update(type="VolumeCommand", Volumes=list(c.volumes))
    elif isinstance(c, StopSignalCommand):
        out.update(type="StopSignalCommand", Signal=c.signal)
    elif isinstance(c, ExposeCommand):
        out.update(type="ExposeCommand", Ports=list(c.ports))
    elif isinstance(c, HealthcheckCommand):
        health: dict[str, Any] = {"Test": list(c.test)}
        for key, val in (
            ("Interval", c.interval), ("Timeout", c.timeout),
            ("StartPeriod", c.start_period), ("StartInterval", c.start_interval),
            ("Retries", c.retries),
        ):  # fmt: skip
            if val:
                health[key] = val
        out.update(type="HealthCheckCommand", Health=health)
    elif isinstance(c, OnbuildCommand):
        out.update(type="OnbuildCommand", Expression=c.expression)
    return out


def _stage(s: Stage, commands: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "name": s.name,
        "baseName": s.base_name,
        "platform": s.platform,
        "comment": s.comment,
        "sourceCode": s.source_code,
        "lines": list(s.lines),
        "commands": commands if commands is not None else [_cmd(c) for c in s.commands],
    }


def _expanded(
    meta: tuple[ArgCommand, ...], stages: tuple[Stage, ...], env: Mapping[str, str], escape: str
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "env": [f"{k}={v}" for k, v in env.items()],
        "error": None,
        "metaArgs": [],
        "stages": [],
    }
    lexer = ShellLexer(escape)
    try:
        metas = [_cmd(expand_command(m, env, escape)) for m in meta]
        rendered = []
        for s in stages:
            try:
                base = lexer.process_word(s.base_name, env)
                platform = lexer.process_word(s.platform, env) if s.platform else ""
            except ShellLexError as exc:
                raise DockerfileError(str(exc), lines=s.lines, section="expand") from None
            cmds = [_cmd(expand_command(c, env, escape)) for c in s.commands]
            st = _stage(s, cmds)
            st["baseName"] = base
            st["platform"] = platform
            rendered.append(st)
    except DockerfileError as exc:
        out["error"] = _err(exc)
        return out
    out["metaArgs"] = metas
    out["stages"] = rendered
    return out


def render_debug(data: bytes, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Everything mason reads from ``data``, in the golden ``expected.json`` shape.

    ``env`` is the expansion environment of the last section (default TEST_ENV)."""
    env = dict(TEST_ENV) if env is None else dict(env)
    directives, derr = parse_directives(data)
    syn = detect_syntax(data)
    doc: dict[str, Any] = {
        "buildkitVersion": BUILDKIT_VERSION,
        "directives": {
            "directives": [
                {"name": d.name, "value": d.value, "lines": [d.line]} for d in directives
            ],
            "error": None if derr is None else {"message": derr.message, "lines": []},
            "detectSyntax": {
                "found": syn is not None,
                "syntax": syn.syntax if syn else "",
                "cmdline": syn.cmdline if syn else "",
                "lines": [syn.line] if syn else [],
            },
        },
        "parse": None,
        "instructions": None,
        "expandedWithTestEnv": None,
    }
    try:
        result = parse(data)
    except DockerfileError as exc:
        doc["parse"] = {
            "error": _err(exc), "dump": None, "escapeToken": None, "warnings": [],
            "startLine": None, "endLine": None, "children": [],
        }  # fmt: skip
        return doc
    nodes = result.nodes
    doc["parse"] = {
        "error": None if result.error is None else _err(result.error),
        "dump": dump(nodes),
        "escapeToken": result.escape,
        "warnings": [
            {"short": w.short, "detail": list(w.detail), "url": w.url, "line": w.line}
            for w in result.warnings
        ],
        "startLine": nodes[0].start_line if nodes else 0,
        "endLine": nodes[-1].end_line if nodes else 0,
        "children": [_node(n) for n in nodes],
    }
    if result.error is not None:
        return doc
    try:
        meta, stages = convert(nodes)
    except DockerfileError as exc:
        doc["instructions"] = {"error": _err(exc), "metaArgs": [], "stages": []}
        return doc
    doc["instructions"] = {
        "error": None,
        "metaArgs": [_cmd(m) for m in meta],
        "stages": [_stage(s) for s in stages],
    }
    doc["expandedWithTestEnv"] = _expanded(meta, stages, env, result.escape)
    return doc
