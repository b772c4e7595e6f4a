"""Dockerfile -> solver graph (BuildKit's "dispatch").

Each stage becomes a chain of vertices: FROM (a ``SourceOp``, or the last
vertex of another stage), then one vertex per RUN, COPY, ADD and WORKDIR.
Config instructions (ENV, CMD, LABEL, ...) make no vertex: they change the
stage's image config and add a history entry (``empty_layer``). History times
of layer steps come from the results after the solve (so a cached build gives
back the same config bytes).
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mason.dockerfile import (
    AddCommand,
    ArgCommand,
    CmdCommand,
    Command,
    CopyCommand,
    DockerfileError,
    EntrypointCommand,
    EnvCommand,
    ExposeCommand,
    HealthcheckCommand,
    LabelCommand,
    MaintainerCommand,
    OnbuildCommand,
    RunCommand,
    ShellCommand,
    StopSignalCommand,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
)
from mason.dockerfile.expand import expand_ports
from mason.dockerfile.stages import BuildPlan, PlannedStage, StageScope, onbuild_triggers
from mason.engine.gitsource import GitRef, GitRefError, parse_git_ref, redact_credentials_in
from mason.engine.imageconfig import (
    HISTORY_COMMENT,
    StageConfig,
    exec_form_text,
    format_created,
    go_healthcheck_text,
)
from mason.engine.namedcontexts import NamedContext, lookup
from mason.engine.ops import (
    BuildEnv,
    ExecOp,
    FileAction,
    FileOp,
    MergeOp,
    MountPlan,
    SourceOp,
    StepResult,
)
from mason.engine.state import LayerRef
from mason.errors import BuildError, DiagnosticError
from mason.fsroot import clean_path
from mason.oci.platform import Platform, PlatformError
from mason.solver import Vertex
from mason.structs import Struct, field, replace

__all__ = [
    "ConvertedBuild",
    "HistoryPlan",
    "ResolvedImage",
    "StageResult",
    "convert_plan",
    "final_config",
]

DEFAULT_SHELL = ("/bin/sh", "-c")


class ResolvedImage(Struct, frozen=True):
    """A base image resolved for the build platform (nothing downloaded but manifest and config)."""

    ref: Any  # mason.oci.Reference
    manifest_digest: str
    config: Mapping[str, Any]
    layers: tuple[LayerRef, ...]

    @property
    def pinned(self) -> str:
        return (
            f"{self.ref.repository_ref}:{self.ref.tag or 'latest'}@{self.manifest_digest}"
            if self.ref.tag
            else f"{self.ref.repository_ref}@{self.manifest_digest}"
        )


class HistoryPlan(Struct):
    """A history entry: fixed (from a base image) or made by a step of this build."""

    created_by: str = ""
    empty_layer: bool = False
    vertex: Vertex[StepResult] | None = None
    fixed: dict[str, Any] | None = None


class StageResult(Struct):
    planned: PlannedStage
    vertex: Vertex[StepResult]
    config: StageConfig
    history: list[HistoryPlan]
    scope: StageScope
    shell: tuple[str, ...]
    user: str
    workdir: str
    layer_vertices: list[Vertex[StepResult]] = field(default_factory=list)
    cmd_set: bool = False
    base_created: str = ""
    #: the stage's platform (``FROM --platform``, its parent stage's, else the target's)
    platform: Platform | None = None


class ConvertedBuild(Struct):
    plan: BuildPlan
    stages: dict[int, StageResult]
    target: StageResult
    images: list[ResolvedImage]
    #: per step vertex, where its command is: (stage index, position among the stage's
    #: dispatched commands, "step" or "linked" for a ``COPY --link``'s own copy)
    positions: dict[Vertex[StepResult], tuple[int, int, str]] = field(default_factory=dict)
    #: per stage index, the commands dispatched in it (ONBUILD triggers first)
    commands: dict[int, tuple[Command, ...]] = field(default_factory=dict)


ImageResolver = Callable[[str, str], ResolvedImage]
#: an ``oci-layout://`` named context's image for a platform (``builder._Resolver.layout``)
LayoutResolver = Callable[[NamedContext, str], ResolvedImage]


def _count_layer_steps(commands: Sequence[Command]) -> int:
    return sum(
        1 for c in commands if isinstance(c, RunCommand | CopyCommand | AddCommand | WorkdirCommand)
    )


class _Converter:
    def __init__(
        self,
        env: BuildEnv,
        plan: BuildPlan,
        resolve: ImageResolver,
        platform: str,
        no_cache: bool,
        image_sources: dict[str, Vertex[StepResult]],
        named: Mapping[str, NamedContext] | None = None,
        no_cache_filter: Sequence[str] = (),
        resolve_layout: LayoutResolver | None = None,
        prefix_platform: bool = False,
    ) -> None:
        self.env = env
        self.plan = plan
        self.resolve = resolve
        self.platform = platform
        #: several target platforms: step names start with the stage's platform (BuildKit)
        self.prefix_platform = prefix_platform
        self.no_cache = no_cache
        self.done: dict[int, StageResult] = {}
        self.images: list[ResolvedImage] = []
        self.image_vertices = image_sources
        #: ``--build-context`` name -> named context; ``--no-cache-filter`` stage names
        self.named = dict(named or {})
        self.no_cache_filter = frozenset(no_cache_filter)
        self.resolve_layout = resolve_layout
        self.position = (-1, -1)
        self.positions: dict[Vertex[StepResult], tuple[int, int, str]] = {}
        self.commands: dict[int, tuple[Command, ...]] = {}

    def vertex(
        self,
        r: StageResult,
        op: Any,
        inputs: Sequence[Vertex[StepResult]],
        name: str,
        role: str = "step",
    ) -> Vertex[StepResult]:
        # --no-cache-filter: the steps of those stages run again (BuildKit's per-stage IgnoreCache)
        ignore = self.no_cache or (r.planned.stage.name or "") in self.no_cache_filter
        vertex = Vertex(op, tuple(inputs), name=name, ignore_cache=ignore)
        self.positions[vertex] = (*self.position, role)
        return vertex

    def image_vertex(
        self, ref_text: str, platform: str, name: str
    ) -> tuple[Vertex[StepResult], ResolvedImage | None]:
        if ref_text.lower() == "scratch":
            key = "scratch"
            if key not in self.image_vertices:
                self.image_vertices[key] = Vertex(
                    SourceOp("scratch", "scratch", ()), (), name=name, ignore_cache=self.no_cache
                )
            return self.image_vertices[key], None
        img = self.resolve(ref_text, platform or self.platform)
        return self._source_vertex(img, name.replace(ref_text, img.pinned)), img

    def _source_vertex(self, img: ResolvedImage, name: str) -> Vertex[StepResult]:
        key = img.manifest_digest
        if key not in self.image_vertices:
            self.images.append(img)
            self.image_vertices[key] = Vertex(
                SourceOp(img.pinned, img.manifest_digest, img.layers),
                (),
                name=name,
                ignore_cache=self.no_cache,
            )
        return self.image_vertices[key]

    def named_vertex(
        self, nc: NamedContext, platform: str, name: str
    ) -> tuple[Vertex[StepResult], ResolvedImage | None]:
        """The vertex a named context puts in place of a stage or an image: the image's
        source, the OCI layout's image, or a local directory's files as one layer."""
        if nc.kind == "image":
            return self.image_vertex(nc.value, platform, name)
        if nc.kind == "oci-layout":
            assert self.resolve_layout is not None
            img = self.resolve_layout(nc, platform or self.platform)
            return self._source_vertex(img, f"[context {nc.name}] OCI load from client"), img
        return self.dir_vertex(nc), None

    def dir_vertex(self, nc: NamedContext) -> Vertex[StepResult]:
        """A local directory context as a root file system: its files (its .dockerignore
        applied, owned by 0:0 as buildx sends them) copied onto an empty root; the key is
        their content, as the main context's."""
        key = f"context:{nc.name}"
        if key not in self.image_vertices:
            action = FileAction("copy", sources=(".",), dest="/", link=True, context=nc.name)
            self.image_vertices[key] = Vertex(
                FileOp(self.env, action, ()),
                (),
                name=f"[context {nc.name}] load from client",
                ignore_cache=self.no_cache,
            )
        return self.image_vertices[key]

    def dir_context(self, ref: str) -> NamedContext | None:
        """The local directory context a ``--from`` names (a stage it replaces, or an image)."""
        target = self.plan.resolve_from(ref)
        name = (
            self.plan.stage(target.stage).stage.name if target.stage is not None else target.image
        )
        nc = lookup(self.named, name)
        return nc if nc is not None and nc.kind == "dir" else None

    def stage(self, index: int) -> StageResult:
        if index in self.done:
            return self.done[index]
        ps = self.plan.stage(index)
        st = ps.stage
        # a named context of the stage's name replaces the whole stage (BuildKit 1.26)
        replaced = lookup(self.named, st.name) if st.name else None
        own_commands = () if replaced else st.commands
        total = _count_layer_steps(own_commands) + 1
        # BuildKit's step names: no stage name when the Dockerfile has one stage, and
        # the step number right-aligned to the width of the total ("[ 3/12]")
        label = ps.display_name + " " if len(self.plan.all_stages) > 1 else ""
        if ps.base.stage is not None and replaced is None:
            platform = self.stage(ps.base.stage).platform
        else:
            platform = Platform.parse(ps.platform or self.platform)
        width = len(str(total))
        history: list[HistoryPlan]
        if ps.base.stage is not None and replaced is None:
            parent = self.stage(ps.base.stage)
            vertex = parent.vertex
            config = parent.config.copy()
            history = list(parent.history)
            scope = StageScope.start(self.plan, parent=parent.scope)
            shell, user, workdir = parent.shell, parent.user, parent.workdir
            base_created = parent.base_created
        else:
            nc = replaced or lookup(self.named, ps.base_name)
            shown = ps.base_name if nc is None else nc.value if nc.kind == "image" else nc.name
            where = f"{platform} " if self.prefix_platform else ""
            name = f"[{where}{label}{1:>{width}}/{total}] FROM {shown}"
            vertex, config, history, base_created = self._image_base(ps, nc, name)
            scope = StageScope.start(self.plan, config.env_list())
            shell = tuple(config.config.get("Shell") or DEFAULT_SHELL)
            user = str(config.config.get("User") or "")
            # an image config is untrusted: a relative WorkingDir is taken from "/", as
            # BuildKit's llb.Dir does, so it can never climb out of the rootfs
            workdir = clean_path(str(config.config.get("WorkingDir") or "/"))
        result = StageResult(
            ps,
            vertex,
            config,
            history,
            scope,
            shell,
            user,
            workdir,
            base_created=base_created,
            platform=platform,
        )
        commands: list[Command] = []
        triggers = list(config.config.get("OnBuild") or [])
        if triggers:  # a parent stage's ONBUILD runs too, as frontend 1.26 does
            commands.extend(onbuild_triggers(triggers, image=ps.base_name))
            config.config["OnBuild"] = None
        commands.extend(own_commands)
        self.commands[index] = tuple(commands) if replaced is None else ()
        step = 1
        for position, cmd in enumerate(commands):
            is_layer = isinstance(cmd, RunCommand | CopyCommand | AddCommand | WorkdirCommand)
            if is_layer:
                step += 1
            where = _platform_label(result) if self.prefix_platform else ""
            self.position = (index, position)
            self.dispatch(result, cmd, f"[{where}{label}{step:>{width}}/{total}]")
        self.done[index] = result
        return result

    def _image_base(
        self, ps: PlannedStage, nc: NamedContext | None, name: str
    ) -> tuple[Vertex[StepResult], StageConfig, list[HistoryPlan], str]:
        """A stage's image base (its own, or a named context's): vertex, config, history and
        creation time."""
        try:
            if nc is None:
                assert ps.base.image is not None
                vertex, img = self.image_vertex(ps.base.image, ps.platform, name)
            else:
                vertex, img = self.named_vertex(nc, ps.platform, name)
        except DiagnosticError as exc:  # not found, refused, unreachable: say which FROM
            exc.context = (*exc.context, *self.env.location((ps.stage.start_line,)))
            raise
        if img is None:  # scratch, or a directory: an empty config (dockerui's emptyImage)
            p = Platform.parse(ps.platform or self.platform)
            history = []
            if nc is not None and nc.kind == "dir":  # its layer's entry, as BuildKit describes it
                history.append(HistoryPlan(f"local source for {nc.name}", False, vertex))
            return vertex, StageConfig.scratch(p.architecture, p.os, p.variant), history, ""
        history = [HistoryPlan(fixed=dict(h)) for h in (img.config.get("history") or [])]
        created = str(img.config.get("created") or "")
        return vertex, StageConfig.from_image_config(img.config), history, created

    def _expand(self, result: StageResult, cmd: Command) -> Command:
        try:
            return result.scope.expand(cmd)
        except DockerfileError as exc:
            raise exc.located(
                file=self.env.dockerfile_name, source_lines=self.env.dockerfile_lines
            ) from None

    def _from_ref(self, result: StageResult, ref: str, what: str) -> Vertex[StepResult]:
        target = self.plan.resolve_from(ref)
        if target.stage is not None:
            return self.stage(target.stage).vertex
        assert target.image is not None
        nc = lookup(self.named, target.image)
        image = target.image if nc is None else nc.value
        name = f"[internal] load {what} image {image}"
        v, _img = (
            self.image_vertex(image, "", name) if nc is None else self.named_vertex(nc, "", name)
        )
        return v

    def _unsupported(self, c: Command, what: str, message: str = "") -> BuildError:
        """A frontend 1.26 feature the parser reads but this builder cannot do yet (exit 1)."""
        lines = self.env.dockerfile_lines
        line = c.start_line
        context = [f"at {self.env.dockerfile_name}:{line}"]
        if 0 < line <= len(lines):
            context.append(f"{line:>5} | {lines[line - 1]}")
        return BuildError(
            message or f"{what} is not supported by mason yet",
            reference="unsupported-feature",
            context=context,
        )

    def _check_supported(self, c: Command) -> None:
        """Refuse the flags mason reads (BuildKit v0.32.2) but does not build yet."""
        if isinstance(c, RunCommand):
            if c.devices:
                raise self._unsupported(
                    c,
                    "RUN --device",
                    "device feature is only supported in Dockerfile frontend 1.14.0-labs or later",
                )  # BuildKit's stable frontend says so too
            if c.security == "insecure" and not self.env.allow_insecure:
                err = self._unsupported(
                    c,
                    "",
                    "security.insecure is not allowed: RUN --security=insecure runs "
                    "with every capability and no masked paths",
                )
                err.reference, err.hint = (
                    "entitlement-not-allowed",
                    "start the build with --allow security.insecure",
                )
                raise err

    def dispatch(self, r: StageResult, cmd: Command, prefix: str) -> None:
        c = self._expand(r, cmd)
        self._check_supported(c)
        created_by = _history_text(c, r.shell, r.scope)
        if isinstance(c, ArgCommand | EnvCommand):
            r.scope = r.scope.apply(c)
            if isinstance(c, EnvCommand):
                for kv in c.env:
                    r.config.set_env(kv.key, kv.value)
            r.history.append(HistoryPlan(created_by, True))
            return
        if isinstance(c, RunCommand):
            self._run(r, c, prefix)
            return
        if isinstance(c, CopyCommand | AddCommand):
            self._copy(r, c, prefix)
            return
        if isinstance(c, WorkdirCommand):
            self._workdir(r, c, prefix)
            return
        if isinstance(c, OnbuildCommand):
            r.config.config["OnBuild"] = [*(r.config.config.get("OnBuild") or []), c.expression]
            return  # BuildKit records no history entry for ONBUILD
        _apply_config(r, c)
        r.history.append(HistoryPlan(created_by, True))

    def _workdir(self, r: StageResult, c: WorkdirCommand, prefix: str) -> None:
        r.workdir = clean_path(posixpath.join(r.workdir, c.path))
        r.config.config["WorkingDir"] = r.workdir
        if r.workdir == "/":  # BuildKit makes no layer for the root
            r.history.append(HistoryPlan("WORKDIR /", True))
            return
        op = FileOp(self.env, FileAction("mkdir", dest=r.workdir, user=r.user), c.lines)
        r.vertex = self.vertex(r, op, [r.vertex], f"{prefix} {c.code}")
        r.layer_vertices.append(r.vertex)
        r.history.append(HistoryPlan(f"WORKDIR {r.workdir}", False, r.vertex))

    def _run(self, r: StageResult, c: RunCommand, prefix: str) -> None:
        args, files = _run_args(r, c)
        mounts, inputs = self._run_mounts(r, c)
        run_env = dict(r.scope.run_env())
        run_env.update({k: v for k, v in r.scope.proxy_env().items() if k not in run_env})
        ssh = [m for m in mounts if m.type == "ssh"]
        if ssh:  # this RUN's only (ExecOp.Marshal): the first agent, unless the env names one
            run_env.setdefault("SSH_AUTH_SOCK", ssh[0].target)
        environ = tuple(f"{k}={v}" for k, v in run_env.items())
        network = c.network if "network" in c.flags_used else self.env.default_network
        op = ExecOp(
            self.env,
            args=args,
            environ=environ,
            cwd=r.workdir,
            user=r.user,
            network=network,
            mounts=tuple(mounts),
            files=files,
            lines=c.lines,
            display=c.code,
            security=c.security,
            platform=r.platform,
        )
        r.vertex = self.vertex(r, op, inputs, f"{prefix} {c.code}")
        r.layer_vertices.append(r.vertex)
        # BuildKit lists every ARG the stage declared, with the value the RUN sees (ENV wins; unset: empty)
        env_now = r.scope.env_map
        declared = [(k, env_now.get(k, v or "")) for k, v in r.scope.args]
        arg_prefix = (
            f"|{len(declared)} " + " ".join(f"{k}={v}" for k, v in declared) + " "
            if declared
            else ""
        )
        r.history.append(
            HistoryPlan(f"RUN {arg_prefix}{' '.join(args)} # buildkit", False, r.vertex)
        )

    def _run_mounts(
        self, r: StageResult, c: RunCommand
    ) -> tuple[list[MountPlan], list[Vertex[StepResult]]]:
        """The RUN's ``--mount``s as plans, and its inputs (the stage, then each ``from=``)."""
        mounts: list[MountPlan] = []
        inputs: list[Vertex[StepResult]] = [r.vertex]
        for m in c.mounts or ():
            idx = None
            named_dir = self.dir_context(m.from_) if m.type == "bind" and m.from_ else None
            if m.from_ and m.type in ("bind", "cache") and named_dir is None:
                inputs.append(self._from_ref(r, m.from_, "mount"))
                idx = len(inputs) - 1
            target = m.target
            if target and not target.startswith("/"):
                target = posixpath.join(r.workdir, target)
            if m.type == "ssh":
                mounts.append(self._ssh_plan(m, target, c, sum(p.type == "ssh" for p in mounts)))
                continue
            mounts.append(
                MountPlan(
                    type=m.type,
                    target=target,
                    source=m.source,
                    input_index=idx,
                    readonly=m.read_only,
                    cache_id=m.cache_id or target,
                    sharing=m.cache_sharing or "shared",
                    secret_id=_secret_id(m, target) if m.type == "secret" else "",
                    required=m.required,
                    size=m.size_limit,
                    mode=m.mode,
                    uid=m.uid,
                    gid=m.gid,
                    env=(m.env or _secret_id(m, target))
                    if m.type == "secret" and m.env is not None
                    else None,
                    context=named_dir.name if named_dir is not None else "",
                )
            )
        return mounts, inputs

    def _ssh_plan(self, m: Any, target: str, c: RunCommand, index: int) -> MountPlan:
        """``dispatchSSH``: the agent ``id`` (``default``), at ``/run/buildkit/ssh_agent.N``
        unless ``target=`` says, optional unless ``required``."""
        if m.source:
            raise DockerfileError(
                "ssh does not support source", lines=c.lines, section="stages"
            ).located(file=self.env.dockerfile_name, source_lines=self.env.dockerfile_lines)
        return MountPlan(
            type="ssh",
            target=target or f"/run/buildkit/ssh_agent.{index}",
            secret_id=m.cache_id or "default",
            required=m.required,
            mode=m.mode,
            uid=m.uid,
            gid=m.gid,
        )

    def _git_sources(self, c: CopyCommand | AddCommand) -> dict[str, GitRef]:
        """The sources that are git repositories (dfgitutil.ParseGitRef; ``github.com/x`` stays a
        local path), with ADD's ``--keep-git-dir`` and ``--checksum`` merged in as BuildKit does."""
        found: dict[str, GitRef] = {}
        for src in c.sources:
            try:
                ref = parse_git_ref(src)
            except GitRefError as exc:
                raise DockerfileError(exc.message, lines=c.lines, section="stages").located(
                    file=self.env.dockerfile_name, source_lines=self.env.dockerfile_lines
                ) from None
            if ref is None or ref.indistinguishable_from_local:
                continue
            if isinstance(c, CopyCommand):
                raise DockerfileError(
                    "source can't be a git ref for COPY", lines=c.lines, section="stages"
                ).located(file=self.env.dockerfile_name, source_lines=self.env.dockerfile_lines)
            found[src] = self._merge_git_flags(c, ref)
        return found

    def _merge_git_flags(self, c: AddCommand, ref: GitRef) -> GitRef:
        problem = ""
        keep, checksum = ref.keep_git_dir, ref.checksum
        if c.keep_git_dir is not None and keep is not None and c.keep_git_dir != keep:
            problem = "inconsistent keep-git-dir configuration"
        if c.checksum and checksum and c.checksum != checksum:
            problem = f"checksum mismatch {c.checksum!r} != {checksum!r}"
        if problem:
            raise DockerfileError(problem, lines=c.lines, section="stages").located(
                file=self.env.dockerfile_name, source_lines=self.env.dockerfile_lines
            )
        return replace(
            ref,
            keep_git_dir=keep if keep is not None else c.keep_git_dir,
            checksum=checksum or c.checksum,
        )

    def _copy(self, r: StageResult, c: CopyCommand | AddCommand, prefix: str) -> None:
        dest = c.dest
        if not dest.startswith("/"):
            trailing = dest.endswith("/") or dest in (".", "./")
            dest = posixpath.join(r.workdir, dest)
            if trailing and not dest.endswith("/"):
                dest += "/"
        # COPY --link (BuildKit v0.11 honours it only without --chmod): the copy runs on an empty
        # root with no base input, and a merge puts its layer on top of the stage's chain.
        link = c.link and not c.chmod
        inputs: list[Vertex[StepResult]] = [] if link else [r.vertex]
        kw: dict[str, Any] = {"dest": dest, "chown": c.chown, "chmod": c.chmod, "link": link}
        gits = self._git_sources(c)
        urls = tuple(
            s for s in c.sources if s.startswith(("http://", "https://")) and s not in gits
        )
        if urls and isinstance(c, CopyCommand):
            raise DockerfileError(
                "source can't be a URL for COPY",
                lines=c.lines,
                section="stages",
                hint="use ADD to download a URL",
            ).located(file=self.env.dockerfile_name, source_lines=self.env.dockerfile_lines)
        if isinstance(c, AddCommand) and c.checksum and len(urls) + len(gits) != len(c.sources):
            raise DockerfileError(
                "checksum can't be specified for non-HTTP sources", lines=c.lines, section="stages"
            ).located(file=self.env.dockerfile_name, source_lines=self.env.dockerfile_lines)
        if c.chmod:
            from mason.engine.chmod import ChmodError, parse_chmod  # start-up: --chmod only

            try:  # BuildKit checks --chmod when it converts the Dockerfile, before anything runs
                parse_chmod(c.chmod)
            except ChmodError as exc:
                raise DockerfileError(str(exc), lines=c.lines, section="stages").located(
                    file=self.env.dockerfile_name, source_lines=self.env.dockerfile_lines
                ) from None
        if c.contents:
            action = FileAction(
                "inline", inline=tuple((sc.path, sc.data) for sc in c.contents), **kw
            )
        else:
            from_ = c.from_ if isinstance(c, CopyCommand) else ""
            from_input = None
            # COPY --from a directory context reads it as the main context is read (its
            # .dockerignore, a key on the content of what is copied)
            named_dir = self.dir_context(from_) if from_ else None
            if from_ and named_dir is None:
                inputs.append(self._from_ref(r, from_, "copy"))
                from_input = len(inputs) - 1
            action = FileAction(
                "copy",
                sources=tuple(s for s in c.sources if s not in urls and s not in gits),
                urls=urls,
                git=tuple(gits.values()),
                checksum=c.checksum if isinstance(c, AddCommand) and urls else "",
                from_input=from_input,
                extract=isinstance(c, AddCommand),
                exclude=c.exclude,
                parents=isinstance(c, CopyCommand) and c.parents,
                unpack=c.unpack if isinstance(c, AddCommand) else None,
                context=named_dir.name if named_dir is not None else "",
                **kw,
            )
        op = FileOp(self.env, action, c.lines)
        code = redact_credentials_in(c.code)  # a URL's password never reaches progress or history
        if link:
            linked = self.vertex(r, op, inputs, f"{prefix} {code}", "linked")
            r.vertex = self.vertex(r, MergeOp(), [r.vertex, linked], f"{prefix} LINK {code}")
        else:
            r.vertex = self.vertex(r, op, inputs, f"{prefix} {code}")
        r.layer_vertices.append(r.vertex)
        r.history.append(HistoryPlan(redact_credentials_in(_copy_history(c)), False, r.vertex))


def _apply_config(r: StageResult, c: Command) -> None:
    """An instruction that only changes the image config (CMD, ENTRYPOINT, LABEL, EXPOSE,
    VOLUME, USER, SHELL, STOPSIGNAL, HEALTHCHECK, MAINTAINER)."""
    cfg = r.config.config
    if isinstance(c, CmdCommand):
        cfg["Cmd"] = (
            list(_command_vector(c.cmd_line, c.prepend_shell, r.shell))
            if c.cmd_line is not None
            else None
        )
        cfg["ArgsEscaped"] = True  # as BuildKit v0.11 writes it (Docker image spec compatibility)
        r.cmd_set = True
    elif isinstance(c, EntrypointCommand):
        cfg["Entrypoint"] = (
            list(_command_vector(c.cmd_line, c.prepend_shell, r.shell))
            if c.cmd_line is not None
            else None
        )
        if not r.cmd_set:
            cfg["Cmd"] = None
    elif isinstance(c, LabelCommand):
        labels = dict(cfg.get("Labels") or {})
        for kv in c.labels:
            labels[kv.key] = kv.value
        cfg["Labels"] = labels
    elif isinstance(c, ExposeCommand):
        ports = dict(cfg.get("ExposedPorts") or {})
        for p in _port_keys(c, r.scope):
            ports[p] = {}
        cfg["ExposedPorts"] = ports
    elif isinstance(c, VolumeCommand):
        vols = dict(cfg.get("Volumes") or {})
        for v in c.volumes:
            vols[v] = {}
        cfg["Volumes"] = vols
    elif isinstance(c, UserCommand):
        r.user = c.user
        cfg["User"] = c.user
    elif isinstance(c, ShellCommand):
        r.shell = tuple(c.shell)
        cfg["Shell"] = list(c.shell)
    elif isinstance(c, StopSignalCommand):
        cfg["StopSignal"] = c.signal
    elif isinstance(c, HealthcheckCommand):
        hc: dict[str, Any] = {"Test": list(c.test)}
        for hk, hv in (
            ("Interval", c.interval),
            ("Timeout", c.timeout),
            ("StartPeriod", c.start_period),
            ("StartInterval", c.start_interval),
            ("Retries", c.retries),
        ):
            if hv:
                hc[hk] = hv
        cfg["Healthcheck"] = hc
    elif isinstance(c, MaintainerCommand):
        r.config.extra["author"] = c.maintainer


def _run_args(r: StageResult, c: RunCommand) -> tuple[tuple[str, ...], dict[str, str]]:
    """The RUN's argv (the shell form through the stage's SHELL; one shebang heredoc runs as a
    program from /dev/pipes, other heredocs go to the shell whole, as BuildKit does) and the
    heredoc files to mount."""
    files: dict[str, str] = {}
    if c.prepend_shell:
        line = c.cmd_line[0] if c.cmd_line else ""
        if (
            c.files
            and line.strip().startswith("<<")
            and len(c.files) == 1
            and line.strip().lstrip("<-").strip("'\"") == c.files[0].name
        ):
            data = _chomp(c.files[0].data) if c.files[0].chomp else c.files[0].data
            if data.startswith("#!"):
                files[c.files[0].name] = data
                args: tuple[str, ...] = (*r.shell, f"/dev/pipes/{c.files[0].name}")
            else:
                args = (*r.shell, data)
        elif c.files:
            # The shell reads the heredocs itself: hand it the whole script, as BuildKit does.
            script = line
            for f in c.files:
                script += "\n" + f.data + f.name
            args = (*r.shell, script)
        else:
            args = (*r.shell, line)
    else:
        args = tuple(c.cmd_line)
    return args, files


def _secret_id(m: Any, target: str) -> str:
    """A secret mount's id, as BuildKit picks it: ``source=``, else ``id=``, else the target's base name."""
    return str(m.source or m.cache_id or posixpath.basename(target))


def _copy_history(c: CopyCommand | AddCommand) -> str:
    """BuildKit v0.32.2's history text of a COPY/ADD: the word, ``--parents``, ``--chown=``,
    ``--chmod=`` when given, the sources (``<<name`` for heredocs), the destination."""
    words = [c.name.upper()]
    if isinstance(c, CopyCommand) and c.parents:
        words.append("--parents")
    if c.chown:
        words.append(f"--chown={c.chown}")
    if c.chmod:
        words.append(f"--chmod={c.chmod}")
    words.extend(c.sources)
    words.extend(f"<<{sc.path}" for sc in c.contents)
    return " ".join([*words, c.dest]) + " # buildkit"


def _chomp(text: str) -> str:
    return "\n".join(line.lstrip("\t") for line in text.split("\n"))


def _command_vector(
    cmd_line: Sequence[str], prepend_shell: bool, shell: Sequence[str]
) -> tuple[str, ...]:
    if prepend_shell:
        return (*shell, " ".join(cmd_line))
    return tuple(cmd_line)


def _history_text(c: Command, shell: Sequence[str], scope: StageScope) -> str:
    if isinstance(c, EnvCommand):
        return "ENV " + " ".join(f"{kv.key}={kv.value}" for kv in c.env)
    if isinstance(c, ArgCommand):
        return "ARG " + " ".join(
            f"{a.key}={a.value}" if a.value is not None else a.key for a in c.args
        )
    if isinstance(c, LabelCommand):
        return "LABEL " + " ".join(f"{kv.key}={kv.value}" for kv in c.labels)
    if isinstance(c, CmdCommand | EntrypointCommand):
        word = "CMD" if isinstance(c, CmdCommand) else "ENTRYPOINT"
        if c.cmd_line is None:
            return f"{word} []"
        return f"{word} {exec_form_text(_command_vector(c.cmd_line, c.prepend_shell, shell))}"
    if isinstance(c, ExposeCommand):
        # Go's %v of a map: keys sorted, each "port/proto:{}"
        ports = sorted(set(_port_keys(c, scope)))
        return "EXPOSE map[" + " ".join(f"{p}:{{}}" for p in ports) + "]"
    if isinstance(c, VolumeCommand):
        return "VOLUME [" + " ".join(c.volumes) + "]"
    if isinstance(c, UserCommand):
        return f"USER {c.user}"
    if isinstance(c, ShellCommand):
        return "SHELL [" + " ".join(c.shell) + "]"  # Go's %v of a []string
    if isinstance(c, StopSignalCommand):
        return f"STOPSIGNAL {c.signal}"
    if isinstance(c, HealthcheckCommand):
        return "HEALTHCHECK " + go_healthcheck_text(
            c.test, c.interval, c.timeout, c.start_period, c.start_interval, c.retries
        )
    if isinstance(c, OnbuildCommand):
        return f"ONBUILD {c.expression}"
    if isinstance(c, MaintainerCommand):
        return f"MAINTAINER {c.maintainer}"
    return c.code


def _port_keys(c: ExposeCommand, scope: StageScope) -> list[str]:
    """EXPOSE ports as Docker's nat.ParsePortSpecs keys: ``80/tcp``, a range expanded port by port."""
    out: list[str] = []
    for spec in expand_ports(c, scope.env_map, scope.escape):
        port, _, proto = spec.partition("/")
        proto = (proto or "tcp").lower()
        port = port.rpartition(":")[2]  # ip:hostPort:containerPort forms keep the container port
        first, dash, last = port.partition("-")
        if dash and first.isdigit() and last.isdigit() and int(first) <= int(last):
            out.extend(f"{n}/{proto}" for n in range(int(first), int(last) + 1))
        else:
            out.append(f"{port}/{proto}")
    return out


def _platform_label(r: StageResult) -> str:
    """BuildKit's platform in a step name: the stage's, then ``->`` the target platform the
    stage's TARGET* args name when it differs (``linux/amd64->arm64``)."""
    assert r.platform is not None
    env = r.scope.env_map
    target: Platform | None = None
    if "TARGETPLATFORM" in env:
        with contextlib.suppress(PlatformError):
            target = Platform.parse(env["TARGETPLATFORM"])
    if target is None and any(k in env for k in ("TARGETOS", "TARGETARCH", "TARGETVARIANT")):
        target = Platform(
            env.get("TARGETOS") or r.platform.os,
            env.get("TARGETARCH") or r.platform.architecture,
            env.get("TARGETVARIANT") or None,
        ).normalized()
    base = r.platform
    suffix = ""
    if target is not None and target.os == base.os and target.architecture != base.architecture:
        suffix = "->" + target.architecture + (f"/{target.variant}" if target.variant else "")
    elif target is not None and target.os != base.os:
        suffix = f"->{target}"
    return f"{base}{suffix} "


def convert_plan(
    env: BuildEnv,
    plan: BuildPlan,
    resolve: ImageResolver,
    *,
    platform: str,
    no_cache: bool = False,
    named: Mapping[str, NamedContext] | None = None,
    no_cache_filter: Sequence[str] = (),
    resolve_layout: LayoutResolver | None = None,
    prefix_platform: bool = False,
) -> ConvertedBuild:
    """Build the vertices of every stage the target needs (for one target ``platform``; with
    ``prefix_platform``, one of several, step names start with the stage's platform)."""
    conv = _Converter(
        env,
        plan,
        resolve,
        platform,
        no_cache,
        {},
        named,
        no_cache_filter,
        resolve_layout,
        prefix_platform,
    )
    # stages in file order, as BuildKit converts them: a base image shared by several
    # stages is one vertex named after its first stage ("[build 1/6] FROM ...")
    for ps in plan.stages:
        conv.stage(ps.index)
    target = conv.stage(plan.target)
    return ConvertedBuild(plan, conv.done, target, conv.images, conv.positions, conv.commands)


def final_config(
    stage: StageResult, result: StepResult, source_date_epoch: int | None
) -> dict[str, Any]:
    """The image config document of ``stage`` given its solved result. The k layer-making steps
    of the Dockerfile made the last k layers of the chain; their created times (kept with the
    results, so a cached build reproduces them) date their history entries, and the newest is
    the image's ``created`` (SOURCE_DATE_EPOCH when set)."""
    cfg = stage.config.copy()
    cfg.diff_ids = [lr.diff_id for lr in result.layers]
    epoch_time = format_created(float(source_date_epoch)) if source_date_epoch is not None else None
    steps = [h for h in stage.history if h.fixed is None and not h.empty_layer]
    created_list = list(result.created) + [""] * (len(result.layers) - len(result.created))
    times = created_list[len(created_list) - len(steps) :] if steps else []
    history: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    i = 0
    for h in stage.history:
        if h.fixed is not None:
            entry = dict(h.fixed)
            if epoch_time is not None:
                entry["created"] = epoch_time
        else:
            entry = {"created_by": h.created_by, "comment": HISTORY_COMMENT}
            if h.empty_layer:
                entry["empty_layer"] = True
                pending.append(entry)
            else:
                entry["created"] = epoch_time or times[i] or format_created(0)
                i += 1
        history.append(entry)
    made = [t for t in times if t]
    created = epoch_time or (max(made) if made else stage.base_created or format_created(0))
    for entry in pending:
        entry["created"] = created
    cfg.history = [_ordered(e) for e in history]
    return cfg.document(created)


def _ordered(entry: Mapping[str, Any]) -> dict[str, Any]:
    order = ("created", "created_by", "author", "comment", "empty_layer")
    out = {k: entry[k] for k in order if k in entry}
    out.update({k: v for k, v in entry.items() if k not in out})
    return out
