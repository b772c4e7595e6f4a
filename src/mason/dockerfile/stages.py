"""Build scoping: global ARGs, build args, stage resolution, pruning, ONBUILD.

This is what BuildKit's ``dockerfile2llb`` decides before it runs anything,
kept free of any I/O so the builder can drive it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from mason.dockerfile._text import go_quote as _go_q
from mason.dockerfile.document import Dockerfile, source_lines
from mason.dockerfile.errors import DockerfileError
from mason.dockerfile.expand import expand_command
from mason.dockerfile.instructions import (
    ArgCommand,
    Command,
    CopyCommand,
    EnvCommand,
    InstructionError,
    RunCommand,
    Stage,
    convert_node,
    csv_record,
    suggest,
)
from mason.dockerfile.parser import parse
from mason.dockerfile.shell import ShellLexer, ShellLexError
from mason.structs import Struct, replace

__all__ = [
    "PREDEFINED_ARGS",
    "PROXY_ARGS",
    "BuildPlan",
    "PlannedStage",
    "StageRef",
    "StageScope",
    "onbuild_triggers",
    "plan_build",
]

#: ARGs BuildKit defines in the global scope (values come from the caller)
PREDEFINED_ARGS = (
    "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
    "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
)  # fmt: skip
#: build args passed to RUN without an ARG (and kept out of the image)
PROXY_ARGS = (
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
)  # fmt: skip

SCRATCH = "scratch"


class StageRef(Struct, frozen=True):
    """What a ``FROM``, ``COPY --from`` or mount ``from=`` points at: a stage
    (``stage`` is its index) or an image reference (``image``)."""

    stage: int | None = None
    image: str | None = None

    @property
    def is_scratch(self) -> bool:
        return self.image is not None and self.image.lower() == SCRATCH


class PlannedStage(Struct, frozen=True):
    """A stage with its base resolved. ``base_name``/``platform`` are expanded
    in the global scope; ``deps`` are the stages it needs (base, --from, mounts)."""

    stage: Stage
    base: StageRef
    base_name: str
    platform: str
    deps: tuple[int, ...]

    @property
    def index(self) -> int:
        return self.stage.index

    @property
    def display_name(self) -> str:
        return self.stage.name or f"stage-{self.stage.index}"


class BuildPlan(Struct, frozen=True):
    """The stages needed for ``target`` (in file order) and the global scope."""

    dockerfile: Dockerfile
    stages: tuple[PlannedStage, ...]
    all_stages: tuple[PlannedStage, ...]
    target: int
    global_args: tuple[tuple[str, str | None], ...]
    build_args: tuple[tuple[str, str], ...]

    def stage(self, index: int) -> PlannedStage:
        return self.all_stages[index]

    def resolve_from(self, ref: str) -> StageRef:
        """``COPY --from`` / mount ``from=``: a stage name, an index or an image."""
        return _resolve_ref(ref, self.dockerfile.stages)


def _err(
    message: str, st: Stage | None, df: Dockerfile, hint: str | None = None
) -> DockerfileError:
    from mason.dockerfile.document import source_lines

    lines = st.lines if st is not None else ()
    return DockerfileError(message, lines=lines, hint=hint, section="stages").located(
        file=df.path, source_lines=source_lines(df.raw)
    )


def _is_int(s: str) -> bool:
    t = s[1:] if s[:1] in "+-" else s
    return t.isdigit() and t.isascii()


def _resolve_ref(ref: str, stages: Sequence[Stage]) -> StageRef:
    if _is_int(ref):
        idx = int(ref)
        if idx < 0 or idx >= len(stages):
            raise InstructionError(f"invalid stage index {idx}")
        return StageRef(stage=idx)
    low = ref.lower()
    for st in stages:
        if st.name and st.name == low:
            return StageRef(stage=st.index)
    return StageRef(image=ref)


def _global_scope(
    df: Dockerfile, build_args: Mapping[str, str], predefined: Mapping[str, str]
) -> dict[str, str | None]:
    """Predefined ARGs (overridden by build args), then the meta ARGs in order."""
    scope: dict[str, str | None] = {}
    for k, v in predefined.items():
        scope[k] = build_args.get(k, v)
    lexer = ShellLexer(df.escape)
    for meta in df.meta_args:
        for a in meta.args:
            try:
                key = a.key
                if key in build_args:
                    value: str | None = build_args[key]
                elif a.value is not None:
                    value = lexer.process_word(a.value, _env(scope))
                else:
                    value = None
            except ShellLexError as exc:
                raise DockerfileError(str(exc), lines=meta.lines, section="stages").located(
                    file=df.path
                ) from None
            scope.pop(key, None)
            scope[key] = value
    return scope


def _env(scope: Mapping[str, str | None]) -> dict[str, str]:
    return {k: v or "" for k, v in scope.items()}


def _plan_stages(
    df: Dockerfile, scope: Mapping[str, str | None]
) -> tuple[list[PlannedStage], dict[str, int]]:
    """Every FROM first (as BuildKit's buildDispatchStates), then each command's stage references."""
    lexer = ShellLexer(df.escape)
    bases: list[tuple[StageRef, str, str]] = []
    names: dict[str, int] = {}
    for st in df.stages:
        try:
            base_name = lexer.process_word(st.base_name, _env(scope))
            platform = lexer.process_word(st.platform, _env(scope)) if st.platform else ""
        except ShellLexError as exc:
            raise _err(str(exc), st, df) from None
        if base_name == "":
            raise _err(f"base name ({st.base_name}) should not be blank", st, df)
        # FROM names an earlier stage only; later names are images
        base_idx = names.get(base_name.lower())
        bases.append(
            (
                StageRef(stage=base_idx) if base_idx is not None else StageRef(image=base_name),
                base_name,
                platform,
            )
        )
        if st.name:
            names[st.name] = st.index
    planned: list[PlannedStage] = []
    for st, (base, base_name, platform) in zip(df.stages, bases, strict=True):
        deps: list[int] = [] if base.stage is None else [base.stage]
        for cmd in st.commands:
            try:
                _check_copy_from(cmd, lexer)
                for ref in _command_refs(cmd):
                    r = _resolve_ref(ref, df.stages)
                    if r.stage is not None and r.stage not in deps:
                        deps.append(r.stage)
            except InstructionError as exc:
                raise DockerfileError(
                    exc.message, lines=cmd.lines, hint=exc.hint, section="stages"
                ).located(file=df.path, source_lines=source_lines(df.raw)) from None
        planned.append(PlannedStage(st, base, base_name, platform, tuple(deps)))
    return planned, names


def _check_copy_from(cmd: Command, lexer: ShellLexer) -> None:
    """``COPY --from`` takes no variables (BuildKit's toCommand expands it in an empty environment)."""
    if not isinstance(cmd, CopyCommand) or not cmd.from_:
        return
    try:
        expanded = lexer.process_word(cmd.from_, {})
    except ShellLexError as exc:
        raise InstructionError(str(exc)) from None
    if expanded != cmd.from_:
        raise InstructionError(
            "variable expansion is not supported for --from, define a new stage with FROM using ARG from "
            "global scope as a workaround",
            hint="declare ARG before the first FROM, add `FROM ${VAR} AS src` and use COPY --from=src",
        )


def _check_copy_order(
    planned: Sequence[PlannedStage], needed: set[int], df: Dockerfile, ready: Collection[str]
) -> None:
    """``COPY --from`` and ``RUN --mount=from=`` a stage defined after the current one fail as
    BuildKit's dispatch does (the source is not dispatched yet), unless a named context
    (``ready``: their names) replaces that stage, which makes it ready before any stage."""
    for p in planned:
        if p.index not in needed:
            continue
        for cmd in p.stage.commands:
            for ref_text, target in _later_refs(cmd):
                ref = _resolve_ref(ref_text, df.stages)
                if ref.stage is None or ref.stage <= p.index:
                    continue
                if (planned[ref.stage].stage.name or "") in ready:
                    continue
                if target is None:
                    current = p.display_name if len(planned) > 1 else ""
                    message = (
                        f"cannot copy from stage {_go_q(ref_text)}, it needs to be defined "
                        f"before current stage {_go_q(current)}"
                    )
                else:
                    message = (
                        f"cannot mount from stage {_go_q(ref_text)} to {_go_q(target)}, "
                        "stage needs to be defined before current command"
                    )
                raise DockerfileError(
                    message,
                    lines=cmd.lines,
                    section="stages",
                    hint="move the stage it reads from above this one",
                ).located(file=df.path, source_lines=source_lines(df.raw))


def _later_refs(cmd: Command) -> list[tuple[str, str | None]]:
    """The ``--from`` of a COPY (target None) and each RUN mount's ``from=`` with its target."""
    if isinstance(cmd, CopyCommand):
        return [(cmd.from_, None)] if cmd.from_ else []
    if not isinstance(cmd, RunCommand):
        return []
    out: list[tuple[str, str | None]] = []
    for spec in cmd.mount_specs:
        fields = dict(f.partition("=")[::2] for f in csv_record(spec))
        fields = {k.lower(): v for k, v in fields.items()}
        if fields.get("from"):
            target = fields.get("target") or fields.get("dst") or fields.get("destination") or ""
            out.append((fields["from"], target))
    return out


def _target_index(
    df: Dockerfile, planned: Sequence[PlannedStage], names: Mapping[str, int], target: str | None
) -> int:
    if not target:
        return len(planned) - 1
    t = names.get(target.lower())
    if t is None:
        options = [p.stage.name for p in planned if p.stage.name]
        guess = suggest(target, options, case_sensitive=False)
        raise _err(
            f"target stage {target} could not be found",
            None,
            df,
            hint=f"did you mean {guess}?"
            if guess
            else f"stages: {', '.join(options) or '(none named)'}",
        )
    return t


def plan_build(
    df: Dockerfile,
    *,
    build_args: Mapping[str, str] | None = None,
    predefined: Mapping[str, str] | None = None,
    target: str | None = None,
    replaced_stages: Collection[str] = (),
) -> BuildPlan:
    """Resolve stages for a build (BuildKit's rules; see the package docstring).
    ``replaced_stages``: the stage names a ``--build-context`` replaces."""
    build_args = dict(build_args or {})
    scope = _global_scope(df, build_args, predefined or {})
    planned, names = _plan_stages(df, scope)
    _check_cycles(planned, df)
    if not planned:
        raise _err("the Dockerfile has no stages", None, df)
    t = _target_index(df, planned, names, target)
    needed: set[int] = set()
    todo = [t]
    while todo:
        i = todo.pop()
        if i in needed:
            continue
        needed.add(i)
        todo.extend(planned[i].deps)
    _check_copy_order(planned, needed, df, frozenset(replaced_stages))
    return BuildPlan(
        dockerfile=df,
        stages=tuple(p for p in planned if p.index in needed),
        all_stages=tuple(planned),
        target=t,
        global_args=tuple(scope.items()),
        build_args=tuple(build_args.items()),
    )


def _command_refs(cmd: Command) -> list[str]:
    if isinstance(cmd, CopyCommand) and cmd.from_:
        return [cmd.from_]
    if isinstance(cmd, RunCommand):
        refs = []
        for spec in cmd.mount_specs:
            # from= cannot hold a variable, so it is known before expansion
            for fld in csv_record(spec):
                key, eq, value = fld.partition("=")
                if eq and key.lower() == "from" and value:
                    refs.append(value)
        return refs
    return []


def _check_cycles(planned: Sequence[PlannedStage], df: Dockerfile) -> None:
    visited: set[int] = set()
    path: set[int] = set()

    def visit(i: int) -> bool:
        if i in visited:
            return False
        visited.add(i)
        path.add(i)
        for d in planned[i].deps:
            if d in path or visit(d):
                return True
        path.discard(i)
        return False

    for p in planned:
        if visit(p.index):
            raise _err(
                f"circular dependency detected on stage: {p.display_name}",
                p.stage,
                df,
                hint="a stage cannot copy from itself or from a stage that depends on it",
            )


class StageScope(Struct, frozen=True):
    """The variables of one stage while its commands are dispatched.

    ``env`` is the expansion environment (image ENV, then ENV and ARG values
    in order), ``args`` the ARGs declared so far with their values."""

    escape: str
    env: tuple[tuple[str, str], ...]
    args: tuple[tuple[str, str | None], ...]
    global_args: tuple[tuple[str, str | None], ...]
    build_args: tuple[tuple[str, str], ...]

    @classmethod
    def start(
        cls,
        plan: BuildPlan,
        image_env: Sequence[str] = (),
        *,
        parent: StageScope | None = None,
    ) -> StageScope:
        """The scope at the start of a stage. ``image_env`` is the base image's
        ``Env`` (``KEY=value`` strings); a stage built FROM another stage
        passes that stage's final scope as ``parent`` instead."""
        if parent is not None:
            return replace(parent, args=(), global_args=plan.global_args)
        env: dict[str, str] = {}
        for item in image_env:
            k, _, v = item.partition("=")
            env[k] = v
        return cls(
            escape=plan.dockerfile.escape,
            env=tuple(env.items()),
            args=(),
            global_args=plan.global_args,
            build_args=plan.build_args,
        )

    @property
    def env_map(self) -> dict[str, str]:
        return dict(self.env)

    def expand(self, cmd: Command) -> Command:
        """``cmd`` expanded in this scope (raises DockerfileError)."""
        return expand_command(cmd, self.env_map, self.escape)

    def apply(self, cmd: Command) -> StageScope:
        """The scope after an (expanded) ARG or ENV; other commands leave it."""
        if isinstance(cmd, EnvCommand):
            env = dict(self.env)
            for kv in cmd.env:
                env[kv.key] = kv.value
            return replace(self, env=tuple(env.items()))
        if isinstance(cmd, ArgCommand):
            env = dict(self.env)
            args = dict(self.args)
            build = dict(self.build_args)
            glob = dict(self.global_args)
            for a in cmd.args:
                value = build.get(a.key, a.value)
                if value is None and a.key in glob:
                    value = glob[a.key]
                args[a.key] = value
                if value is not None:
                    env[a.key] = value
            return replace(self, env=tuple(env.items()), args=tuple(args.items()))
        return self

    def run_env(self) -> dict[str, str]:
        """The environment a RUN sees (proxy build args excluded, see proxy_env)."""
        return self.env_map

    def proxy_env(self) -> dict[str, str]:
        return {k: v for k, v in self.build_args if k in PROXY_ARGS}

    def unused_build_args(self) -> list[str]:
        declared = {k for k, _ in self.args} | {k for k, _ in self.global_args}
        return sorted(k for k, _ in self.build_args if k not in declared and k not in PROXY_ARGS)


def onbuild_triggers(triggers: Sequence[str], *, image: str = "base image") -> tuple[Command, ...]:
    """Parse the ONBUILD triggers of a base image config into commands."""
    out: list[Command] = []
    for trigger in triggers:
        where = f"ONBUILD trigger of {image}"
        try:
            result = parse(trigger.encode("utf-8", "surrogateescape"))
        except DockerfileError as exc:
            raise DockerfileError(
                f"{where}: {exc.message}", file=image, section="onbuild"
            ) from None
        if len(result.nodes) != 1:
            raise DockerfileError(
                f"{where}: onbuild trigger should be a single expression",
                file=image,
                section="onbuild",
            )
        node = result.nodes[0]
        if node.keyword in ("onbuild", "from", "maintainer"):
            raise DockerfileError(
                f"{where}: {node.value.upper()} isn't allowed as an ONBUILD trigger",
                file=image,
                section="onbuild",
            )
        try:
            cmd = convert_node(node)
        except InstructionError as exc:
            raise DockerfileError(
                f"{where}: {exc.message}", file=image, hint=exc.hint, section="onbuild"
            ) from None
        if isinstance(cmd, Stage):
            raise DockerfileError(
                f"{where}: FROM isn't allowed as an ONBUILD trigger", file=image, section="onbuild"
            )
        out.append(cmd)
    return tuple(out)
