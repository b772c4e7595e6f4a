"""mason.dockerfile: BuildKit v0.32.2's Dockerfile frontend (1.26, stable features), pure.

Bytes in, typed instructions out; imports only ``mason.errors`` and
``mason.digest``. Every error is a :class:`DockerfileError` (exit status 2)
with ``file``, ``line``/``lines``, ``column``, the offending ``source_line`` and
a ``hint`` (an unknown instruction or flag names the closest known one).

Reading a Dockerfile
--------------------
``parse_dockerfile(data: bytes, path="Dockerfile") -> Dockerfile``
    ``Dockerfile`` (frozen): ``raw`` bytes and ``digest``, ``escape``
    (``\\`` or ```` ` ````), ``syntax`` (``# syntax=`` / ``DetectSyntax``),
    ``directives``, ``warnings`` (empty continuation lines), ``nodes`` (the
    AST: :class:`Node` with ``original``, ``flags``, ``args``, ``json``,
    ``heredocs``, ``prev_comment``, ``start_line``/``end_line``), ``meta_args``
    (the ARGs before the first FROM) and ``stages``.
``Stage``: ``index``, ``name`` (lowercased ``AS`` name or ""), ``base_name`` and
    ``platform`` as written, ``comment`` (doc comment), ``source_code``,
    ``start_line``/``end_line``/``lines`` and ``commands``.
Commands are frozen structs (``msgspec.Struct``) sharing ``name`` (keyword as written),
    ``keyword`` (lowercase), ``code``, ``start_line``, ``end_line``, ``lines``:
    ``ArgCommand(args: ArgSpec(key, value|None, comment))``,
    ``EnvCommand(env)``, ``LabelCommand(labels)`` (``KeyValue(key, value,
    no_delim)``, raw; ``no_delim`` for the legacy ``ENV k v`` form),
    ``CopyCommand(sources, contents: SourceContent (heredocs), dest, from_,
    chown, chmod, link, exclude, parents)``, ``AddCommand(..., exclude,
    keep_git_dir, checksum, unpack)`` (``keep_git_dir``/``unpack`` None
    unless given), ``RunCommand(cmd_line, prepend_shell, files: InlineFile,
    flags_used, network, security, mount_specs, mounts, devices)``,
    ``CmdCommand``/``EntrypointCommand``
    (``cmd_line`` None = reset), ``ShellCommand(shell)``,
    ``WorkdirCommand(path)``, ``UserCommand(user)``, ``VolumeCommand(volumes)``,
    ``StopSignalCommand(signal)``, ``ExposeCommand(ports)``,
    ``HealthcheckCommand(test, interval, timeout, start_period, retries,
    start_interval)``
    (nanoseconds), ``OnbuildCommand(expression)``, ``MaintainerCommand``.
    ``parse_mount(spec, expander) -> Mount`` gives typed ``--mount`` specs
    (``type`` bind|cache|tmpfs|secret|ssh, ``from_``, ``source``, ``target``,
    ``read_only``, ``size_limit``, ``cache_id``, ``cache_sharing``,
    ``required``, ``env`` (secret: the variable to put it in), ``mode``,
    ``uid``, ``gid``).

Expansion
---------
``expand_command(cmd, env, escape) -> cmd`` expands exactly the words
BuildKit expands (see :mod:`mason.dockerfile.expand`); RUN mounts are parsed
and validated then. ``expand_word``, ``ShellLexer`` give the lexer itself
(``${v-w}`` ``${v+w}`` ``${v?w}`` and their ``:`` forms, ``${v#p}``
``${v##p}`` ``${v%p}`` ``${v%%p}`` ``${v/p/r}`` ``${v//p/r}``).

Build scoping and stages (:mod:`mason.dockerfile.stages`)
---------------------------------------------------------
``plan_build(df, *, build_args={}, predefined={}, target=None) -> BuildPlan``
    Global scope: ``predefined`` ARGs (``TARGETPLATFORM``, ``TARGETOS``,
    ``TARGETARCH``, ``TARGETVARIANT``, ``BUILDPLATFORM``, ``BUILDOS``,
    ``BUILDARCH``, ``BUILDVARIANT``, given by the caller), overridden by
    ``build_args``, then the meta ARGs in order (a default is expanded in the
    global scope; a build arg replaces it). Global ARGs are visible only in
    FROM lines (base name and ``--platform``) unless a stage re-declares them
    (``ARG NAME`` inherits the global value). Stage resolution: ``FROM <stage>``
    names an earlier stage (case-insensitive), ``COPY --from=`` and ``RUN
    --mount from=`` name any stage, an index, or otherwise an image;
    ``target`` (default: the last stage) selects the stage; stages not needed
    for it are pruned; unknown targets, bad indexes and cycles are errors.
``StageScope`` (frozen) carries one stage's variables while the builder
    dispatches its commands: ``StageScope.start(plan, stage, image_env)``,
    then ``scope.expand(cmd)`` and ``scope.apply(cmd)`` (ARG and ENV change the
    scope; the later of ENV and ARG for a name wins, as in BuildKit: an ENV
    after an ARG overrides it, an ARG value set after an ENV replaces it;
    a declared ARG without value and without build arg stays unset and expands
    to ""), ``scope.run_env()`` (the environment of a RUN: image ENV, ENV and
    ARGs), ``scope.proxy_env()`` (``HTTP_PROXY``... build args, which need no
    declaration and never reach the image). ``SOURCE_DATE_EPOCH`` is an
    ordinary build arg here; the builder reads it from ``build_args``.
``onbuild_triggers(triggers: Sequence[str]) -> tuple[Command, ...]`` parses the
    ``OnBuild`` strings of a base image config into commands the builder runs
    first in the child stage (each must be one instruction; ONBUILD, FROM and
    MAINTAINER are refused).

Build checks (:mod:`mason.dockerfile.checks`)
---------------------------------------------
``run_checks(plan, *, stages, predefined, base_config, ignore, platform) ->
    CheckReport``: BuildKit v0.32.2's 21 non-experimental rules (``RULES``)
    with BuildKit's wording, docs URL and lines, configured by the
    ``BUILDKIT_DOCKERFILE_CHECK`` build arg or ``# check=skip=…;error=true``
    (``check_config``) and per-instruction ``# check=skip=`` comments; facts
    the parse cannot know (base image configs, .dockerignore) come from the
    builder as callbacks. ``format_check_output`` is ``--check``'s text.
    ``COPY --from=$VAR`` and ``COPY --from`` a later stage fail in
    ``plan_build`` with BuildKit's messages.

.dockerignore (:mod:`mason.dockerfile.dockerignore`)
----------------------------------------------------
``read_ignore_file(data) -> list[str]`` (comments, ``!``, cleaning, leading
``/``), ``ignore_file_for(dockerfile_path, context_dir)`` (``<Dockerfile>
.dockerignore`` beside a custom ``-f`` wins over the context's
``.dockerignore``), ``IgnoreMatcher(patterns)`` with ``excluded(relpath) ->
bool`` and ``can_skip_dir(relpath) -> bool`` (no later ``!`` rule can
re-include anything below), matching moby's patternmatcher.

Debugging
---------
``render_debug(data) -> dict`` renders the golden ``expected.json`` shape
(``mason debug parse-dockerfile PATH``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mason.dockerfile.document import Dockerfile, parse_dockerfile
from mason.dockerfile.errors import DockerfileError
from mason.dockerfile.expand import Expander, expand_command, expand_ports, expand_word
from mason.dockerfile.instructions import (
    AddCommand,
    ArgCommand,
    ArgSpec,
    CmdCommand,
    Command,
    CopyCommand,
    Device,
    EntrypointCommand,
    EnvCommand,
    ExposeCommand,
    HealthcheckCommand,
    InlineFile,
    KeyValue,
    LabelCommand,
    MaintainerCommand,
    Mount,
    OnbuildCommand,
    RunCommand,
    ShellCommand,
    SourceContent,
    Stage,
    StopSignalCommand,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
    parse_mount,
)
from mason.dockerfile.parser import Heredoc, Node, SyntaxDirective
from mason.dockerfile.shell import ShellLexer

if TYPE_CHECKING:
    from mason.dockerfile.render import render_debug

__all__ = [
    "AddCommand",
    "ArgCommand",
    "ArgSpec",
    "CmdCommand",
    "Command",
    "CopyCommand",
    "Device",
    "Dockerfile",
    "DockerfileError",
    "EntrypointCommand",
    "EnvCommand",
    "Expander",
    "ExposeCommand",
    "HealthcheckCommand",
    "Heredoc",
    "InlineFile",
    "KeyValue",
    "LabelCommand",
    "MaintainerCommand",
    "Mount",
    "Node",
    "OnbuildCommand",
    "RunCommand",
    "ShellCommand",
    "ShellLexer",
    "SourceContent",
    "Stage",
    "StopSignalCommand",
    "SyntaxDirective",
    "UserCommand",
    "VolumeCommand",
    "WorkdirCommand",
    "expand_command",
    "expand_ports",
    "expand_word",
    "parse_dockerfile",
    "parse_mount",
    "render_debug",
]


def __getattr__(name: str) -> object:
    # render_debug is loaded when first asked for (`mason debug`, the golden tests): a build
    # never renders
    if name == "render_debug":
        from mason.dockerfile.render import render_debug

        return render_debug
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
