"""Dockerfile -> BuildKit v0.32.2 LLB, as the Dockerfile frontend 1.26 (``dockerfile2llb``) emits it.

``plan_llb`` walks a :class:`~mason.dockerfile.stages.BuildPlan` the way
``dockerfile2llb`` dispatches it (one function per instruction) and returns the
``mason.llb.pb`` ops of the build's LLB definition, in BuildKit's definition
order, each with its vertex digest (``op_digest``):

- sources: the base images (``docker-image://<name>:<tag>@<manifest digest>``,
  with the stage's platform), the build context (``local://<name>`` with
  ``local.sharedkeyhint``, ``local.excludepatterns`` from the .dockerignore and
  ``local.followpaths`` from every context path the build reads) and ``ADD <url>``
  downloads (``http.filename``, ``http.checksum``);
- exec ops (``RUN``): args through the stage's shell, the environment in
  BuildKit's order (image ``Env`` with the default ``PATH``, then ARG and ENV,
  a re-set name moving to the end), cwd, user, proxy build args, network,
  security, and the mounts sorted by target (cache ids ``/<id>``, tmpfs,
  bind selectors, secrets last, heredoc scripts on ``/dev/pipes/``);
- file ops: ``COPY``/``ADD`` (every flag), ``mkfile`` for ``COPY <<EOF``,
  ``mkdir`` for ``WORKDIR`` (timestamp from ``SOURCE_DATE_EPOCH``), and the
  merge that ``COPY --link`` makes.

Nothing here reads files or the network: the caller resolves base images
(``ImageResolver``) and passes the context's .dockerignore patterns. The only
part that depends on the build session is the context source's
``local.session`` attribute (BuildKit's client session id), and through the
input digests the vertex digest of every op that reads the context; pass
``session_id``, or ``context_digest`` to use a digest computed elsewhere. (Without
a session id the op is written as ``llb.json`` renders it; BuildKit's client
would add ``local.unique`` there, but the frontend always runs with a session.)
"""

from __future__ import annotations

import contextvars
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from mason.dockerfile import (
    AddCommand,
    ArgCommand,
    Command,
    CopyCommand,
    EnvCommand,
    OnbuildCommand,
    RunCommand,
    ShellCommand,
    SourceContent,
    UserCommand,
    WorkdirCommand,
)
from mason.dockerfile.mounts import Mount
from mason.dockerfile.stages import BuildPlan, PlannedStage, StageScope, onbuild_triggers
from mason.engine.gitsource import GitRefError, parse_git_ref, redact_credentials_in
from mason.errors import BuildError
from mason.llb import pb
from mason.llb.cachemap import go_path_base
from mason.llb.gojson import go_json
from mason.oci.reference import Reference
from mason.structs import Struct, field, replace

__all__ = [
    "DEFAULT_PATH",
    "BaseImage",
    "ImageResolver",
    "LLBDefinition",
    "LLBVertex",
    "RunDefaults",
    "parse_platform",
    "plan_llb",
]

#: ``system.DefaultPathEnv("linux")``: the PATH a stage gets when its image has none
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ("/bin/sh", "-c")
_SCRATCH = "scratch"
_NO_ENV_ARGS = ("BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE")
_PROXY_FIELDS = ("http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy")
_SHARING = {"private": pb.CacheSharingOpt.PRIVATE, "locked": pb.CacheSharingOpt.LOCKED}
_NETWORK = {"host": pb.NetMode.HOST, "none": pb.NetMode.NONE}
_HEREDOC = re.compile(r"^(\d*)<<(-?)\s*([^<]*)$")


class BaseImage(Struct, frozen=True):
    """A base image resolved for a platform: its manifest digest and its config document."""

    manifest_digest: str
    config: Mapping[str, Any]


class RunDefaults(Struct, frozen=True):
    """What the build's command line gives every RUN (``docker buildx build --network``,
    ``--add-host``, ``--ulimit``, ``--shm-size``): the dockerui options ``force-network-mode``
    (each stage's network, a ``RUN --network`` other than default overrides it),
    ``add-hosts`` (names lower-cased, as dockerui parses them), ``ulimit`` and ``shm-size``
    (a ``/dev/shm`` tmpfs of that many bytes)."""

    network: pb.NetMode = pb.NetMode.UNSET
    extra_hosts: tuple[pb.HostIP, ...] = ()
    ulimits: tuple[pb.Ulimit, ...] = ()
    shm_size: int = 0


#: ``(reference with tag, e.g. "docker.io/library/alpine:3", platform) -> BaseImage``
ImageResolver = Callable[[str, pb.Platform], BaseImage]


class LLBVertex(Struct, frozen=True):
    """One op of the definition, its inputs filled with their vertex digests."""

    op: pb.Op
    digest: str
    name: str
    session_bound: bool = False


class LLBDefinition(Struct, frozen=True):
    """The ops in BuildKit's definition order; the last is the terminal (inputs only)."""

    vertices: tuple[LLBVertex, ...]
    context: LLBVertex | None
    #: per (stage index, position in the stage's dispatched commands), the digest of the op
    #: that command made (only commands that made one); ``linked``: a ``COPY --link``'s copy
    steps: Mapping[tuple[int, int], str] = field(default_factory=dict)
    linked: Mapping[tuple[int, int], str] = field(default_factory=dict)
    #: per stage index, the commands dispatched in it (ONBUILD triggers first), as planned
    commands: Mapping[int, tuple[Command, ...]] = field(default_factory=dict)

    @property
    def target(self) -> LLBVertex:
        return self.vertices[-1]

    def by_digest(self) -> dict[str, LLBVertex]:
        return {v.digest: v for v in self.vertices}


def parse_platform(text: str) -> pb.Platform:
    """``os/arch[/variant]`` as ``platforms.Parse`` reads the common forms."""
    parts = text.split("/")
    os_ = parts[0] if parts and parts[0] else "linux"
    arch = parts[1] if len(parts) > 1 else "amd64"
    variant = parts[2] if len(parts) > 2 else ""
    if arch == "arm64" and variant == "v8":
        variant = ""  # Normalize drops arm64's default variant
    return pb.Platform(architecture=arch, os=os_, variant=variant)


# --- Go path semantics ------------------------------------------------------------------------


def go_clean(p: str) -> str:
    """Go's ``path.Clean`` (posixpath.normpath keeps a leading ``//``; Go does not)."""
    if p == "":
        return "."
    rooted = p.startswith("/")
    out: list[str] = []
    for part in p.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    text = "/".join(out)
    if rooted:
        return "/" + text
    return text or "."


def go_join(*parts: str) -> str:
    """Go's ``path.Join``: the non-empty parts joined and cleaned."""
    kept = [p for p in parts if p]
    return go_clean("/".join(kept)) if kept else ""


def _keep_slash(orig: str, p: str) -> str:
    if orig.endswith("/") and not p.endswith("/"):
        return p + "/"
    if orig.endswith("/."):
        return (p if p == "/" else p + "/") + "."
    return p


def system_normalize(parent: str, new: str, keep_slash: bool) -> str:
    """``util/system.NormalizePath`` (linux): an absolute path is kept as written."""
    orig = new
    parent = parent or "/"
    if not parent.startswith("/"):
        parent = go_join("/", parent)
    if new == "":
        new = parent
    if not new.startswith("/"):
        new = go_join(parent, new)
    return _keep_slash(orig, new) if keep_slash else new


def fileop_normalize(parent: str, p: str, keep_slash: bool) -> str:
    """``client/llb`` fileop's ``normalizePath``: cleaned, joined to the state's dir."""
    orig = p
    p = go_clean(p)
    if not p.startswith("/"):
        p = go_join("/", parent, p)
    return _keep_slash(orig, p) if keep_slash else p


def _has_wildcards(name: str) -> bool:
    i = 0
    while i < len(name):
        if name[i] in "*?[":
            return True
        if name[i] == "\\":
            i += 1
        i += 1
    return False


# --- the graph ---------------------------------------------------------------------------------


class _Node(Struct, eq=False):
    """A marshalled op. ``deps`` is the order BuildKit's marshal walks the inputs (``Inputs()``)."""

    op: pb.Op
    digest: str
    deps: tuple[_Node, ...]
    name: str
    session_bound: bool = False


#: set while ``plan_llb``'s first pass only collects the context paths: its ops get a
#: stand-in digest (unique per op) instead of a protobuf marshal that pass never uses
_COLLECTING: contextvars.ContextVar[itertools.count[int] | None] = contextvars.ContextVar(
    "llbplan_collecting", default=None
)


def _node(op: pb.Op, inputs: Sequence[_Node], deps: Sequence[_Node], name: str) -> _Node:
    ins = tuple(pb.Input(digest=n.digest, index=0) for n in inputs)
    op = replace(op, inputs=ins)
    bound = any(n.session_bound for n in inputs)
    counter = _COLLECTING.get()
    digest = pb.op_digest(op) if counter is None else f"collecting:{next(counter)}"
    return _Node(op, digest, tuple(deps), name, bound)


class _Inputs:
    """An op's input list: equal inputs (same digest and output) share one index."""

    def __init__(self) -> None:
        self.nodes: list[_Node] = []

    def add(self, node: _Node | None) -> int:
        if node is None:
            return pb.EMPTY
        for i, n in enumerate(self.nodes):
            if n.digest == node.digest:
                return i
        self.nodes.append(node)
        return len(self.nodes) - 1


class _State(Struct):
    """``llb.State``: an output (None is scratch) and the values ops read from it."""

    node: _Node | None
    env: tuple[tuple[str, str], ...]
    dir: str
    user: str
    platform: pb.Platform

    def add_env(self, key: str, value: str) -> None:
        # EnvList.AddOrReplace: a re-set name moves to the end (ToArray lists by last set)
        self.env = (*((k, v) for k, v in self.env if k != key), (key, value))


class _Stage(Struct):
    """``dispatchState``: the stage's LLB state, its image config fields and its scope."""

    planned: PlannedStage | None
    state: _State
    scope: StageScope | None
    shell: tuple[str, ...]
    image_user: str
    image_workdir: str
    commands: list[Command] = field(default_factory=list)


class _File(Struct):
    """One file action before marshal: its proto action and the node a copy reads."""

    action: pb.FileAction
    source: _Node | None = None
    reads: bool = False


# --- the planner -------------------------------------------------------------------------------


class _Planner:
    def __init__(
        self,
        plan: BuildPlan,
        resolve: ImageResolver,
        platform: pb.Platform,
        build_args: Mapping[str, str],
        context: _Node | None,
        run_defaults: RunDefaults,
    ) -> None:
        self.plan = plan
        self.run_defaults = run_defaults
        self.resolve = resolve
        self.platform = platform
        self.build_args = dict(build_args)
        self.context = context
        self.context_used = False
        self.ctx_paths: set[str] = set()
        self.stages: dict[int, _Stage] = {}
        self.images: dict[str, _Stage] = {}
        self.step_nodes: dict[tuple[int, int], _Node] = {}
        self.linked_nodes: dict[tuple[int, int], _Node] = {}
        self.epoch_ns = _epoch_ns(plan, build_args)
        self.proxy = _proxy_env(build_args)

    # -- stages and sources --

    def stage(self, index: int) -> _Stage:
        if index in self.stages:
            return self.stages[index]
        ps = self.plan.stage(index)
        platform = parse_platform(ps.platform) if ps.platform else self.platform
        triggers: list[str] = []
        if ps.base.stage is not None:
            parent = self.stage(ps.base.stage)
            st = _Stage(
                ps,
                replace(parent.state),
                StageScope.start(self.plan, parent=parent.scope),
                parent.shell,
                parent.image_user,
                parent.image_workdir,
            )
            triggers = [c.expression for c in parent.commands if isinstance(c, OnbuildCommand)]
        else:
            assert ps.base.image is not None
            st, config = self.image_stage(ps.base.image, platform, ps)
            triggers = list(config.get("OnBuild") or [])
        if triggers:
            st.commands.extend(onbuild_triggers(triggers, image=ps.base_name))
        st.commands.extend(ps.stage.commands)
        for position, cmd in enumerate(st.commands):
            before = st.state.node
            self.dispatch(st, cmd)
            self._note_step((index, position), before, st.state.node)
        self.stages[index] = st
        return st

    def _note_step(self, at: tuple[int, int], before: _Node | None, after: _Node | None) -> None:
        """Which op a command made, so the builder can key its own step by it."""
        if after is None or after is before:
            return
        self.step_nodes[at] = after
        if after.op.merge is not None and len(after.deps) == 2:
            self.linked_nodes[at] = after.deps[1]
        elif after.op.file is not None:
            self.linked_nodes[at] = after  # COPY --link on scratch: the merge is the copy

    def image_stage(
        self, ref_text: str, platform: pb.Platform, ps: PlannedStage | None
    ) -> tuple[_Stage, Mapping[str, Any]]:
        """A stage's start from an image (or scratch): the source op and the image config's state."""
        config: Mapping[str, Any] = {}
        node: _Node | None = None
        if ref_text.lower() != _SCRATCH:
            ref = Reference.parse(ref_text)
            image = self.resolve(str(ref), platform)
            doc = image.config
            config = doc.get("config") or {}
            if not _is_empty_image(doc):
                name = ref.name + (f":{ref.tag}" if ref.tag else "")
                src = pb.SourceOp(identifier=f"docker-image://{name}@{image.manifest_digest}")
                op = pb.Op(source=src, platform=platform, constraints=pb.WorkerConstraints())
                node = _node(op, (), (), f"FROM {name}@{image.manifest_digest}")
        env = [str(e) for e in config.get("Env") or ()]
        if not any(e.partition("=")[0] == "PATH" for e in env):
            env.append(f"PATH={DEFAULT_PATH}")
        state = _State(node, (), "", str(config.get("User") or ""), platform)
        for item in env:
            k, _, v = item.partition("=")
            state.add_env(k, v)
        workdir = str(config.get("WorkingDir") or "")
        if workdir:
            # dispatchWorkdir(commit=false) normalises the image's WorkingDir against itself
            workdir = system_normalize(workdir, workdir, False)
            state.dir = workdir
        scope = StageScope.start(self.plan, env) if ps is not None else None
        shell = tuple(config.get("Shell") or DEFAULT_SHELL)
        return _Stage(ps, state, scope, shell, state.user, workdir), config

    def source_state(self, ref: str) -> _State:
        """What ``COPY --from`` / ``--mount from=`` read: a stage's final state, or an image's."""
        target = self.plan.resolve_from(ref)
        if target.stage is not None:
            return self.stage(target.stage).state
        assert target.image is not None
        key = target.image.lower() if target.image.lower() == _SCRATCH else target.image
        if key not in self.images:
            self.images[key] = self.image_stage(target.image, self.platform, None)[0]
        return self.images[key].state

    def context_node(self) -> _Node | None:
        self.context_used = True
        return self.context

    # -- dispatch --

    def dispatch(self, st: _Stage, cmd: Command) -> None:
        assert st.scope is not None
        c = st.scope.expand(cmd)  # raises DockerfileError, located by the caller
        if isinstance(c, ArgCommand):
            self.dispatch_arg(st, c)
        elif isinstance(c, EnvCommand):
            st.scope = st.scope.apply(c)
            for kv in c.env:
                st.state.add_env(kv.key, kv.value)
        elif isinstance(c, RunCommand):
            self.dispatch_run(st, c)
        elif isinstance(c, WorkdirCommand):
            self.dispatch_workdir(st, c)
        elif isinstance(c, CopyCommand | AddCommand):
            self.dispatch_copy(st, c)
        elif isinstance(c, UserCommand):
            st.state.user = c.user
            st.image_user = c.user
        elif isinstance(c, ShellCommand):
            st.shell = tuple(c.shell)
        # every other instruction changes only the image config: no op

    def dispatch_arg(self, st: _Stage, c: ArgCommand) -> None:
        assert st.scope is not None
        st.scope = st.scope.apply(c)
        values = dict(st.scope.args)
        for a in c.args:
            value = values.get(a.key)
            if value is not None and a.key not in _NO_ENV_ARGS:
                st.state.add_env(a.key, value)

    def dispatch_workdir(self, st: _Stage, c: WorkdirCommand) -> None:
        wd = system_normalize(st.image_workdir, c.path, False)
        st.image_workdir = wd
        st.state.dir = wd  # NormalizePath made it absolute
        if wd == "/":
            return  # BuildKit makes no layer for the root
        mkdir = pb.FileActionMkDir(
            path=fileop_normalize(st.state.dir, wd, False),
            mode=0o755,
            make_parents=True,
            owner=_chown(st.image_user, 0 if st.state.node else pb.EMPTY),
            timestamp=self.epoch_ns,
        )
        st.state.node = _file_node(
            st.state.node, [_File(pb.FileAction(mkdir=mkdir))], f"WORKDIR {wd}"
        )

    def dispatch_run(self, st: _Stage, c: RunCommand) -> None:
        if c.devices:
            raise _unsupported(c, "RUN --device")
        args, pipes = _run_args(st, c)
        run = self.run_defaults
        mounts: list[_MountSpec] = [_MountSpec("/", st.state.node)]
        if run.shm_size > 0:
            mounts.append(_MountSpec("/dev/shm", None, tmpfs=True, tmpfs_size=run.shm_size))
        if pipes is not None:
            mounts.append(_MountSpec("/dev/pipes/", pipes, selector="/", readonly=True))
        secrets: list[pb.Mount] = []
        secret_env: list[pb.SecretEnv] = []
        ssh: list[pb.Mount] = []
        for m in c.mounts or ():
            if m.type == "secret":
                _secret(m, secrets, secret_env)
            elif m.type == "ssh":
                ssh.append(_ssh(m, len(ssh)))
            else:
                mounts.append(self.run_mount(st, m))
        env = tuple(f"{k}={v}" for k, v in st.state.env)
        if ssh and not any(e.startswith("SSH_AUTH_SOCK=") for e in env):
            env = (*env, f"SSH_AUTH_SOCK={ssh[0].dest}")
        meta = pb.Meta(
            args=args,
            env=env,
            cwd=st.state.dir or "/",
            user=st.state.user,
            proxy_env=self.proxy,
            extra_hosts=run.extra_hosts,
            ulimit=run.ulimits,
            remove_mount_stubs_recursive=True,
        )
        network = _NETWORK.get(c.network, run.network)
        security = pb.SecurityMode.INSECURE if c.security == "insecure" else pb.SecurityMode.SANDBOX
        st.state.node = _exec_node(
            meta, mounts, [*secrets, *ssh], secret_env, network, security, st.state.platform, c.code
        )

    def run_mount(self, st: _Stage, m: Mount) -> _MountSpec:
        """``dispatchRunMounts`` for one bind, cache or tmpfs mount."""
        from_ = m.from_ or (_SCRATCH if m.type == "cache" else "")
        source: _Node | None
        if m.type == "tmpfs":
            source = None
        elif from_:
            source = self.source_state(from_).node
        else:
            source = self.context_node()
        target = m.target
        if not go_clean(target).startswith("/"):
            target = go_join("/", st.state.dir, target)
        spec = _MountSpec(target, source, readonly=m.read_only and m.type != "tmpfs")
        if m.type == "tmpfs":
            spec.tmpfs, spec.tmpfs_size = True, m.size_limit
        elif not m.read_only and m.type == "bind":
            spec.no_output = True  # CapExecMountBindReadWriteNoOutput
        if m.type == "cache":
            spec.cache_id = "/" + (m.cache_id or go_clean(m.target))
            spec.sharing = _SHARING.get(m.cache_sharing, pb.CacheSharingOpt.SHARED)
        src = go_join("/", m.source)
        if src != "/":
            spec.selector = src
        elif m.uid is not None or m.gid is not None or m.mode is not None:
            # setCacheUIDGID: a /cache directory with the owner and mode, mounted from there
            mode = 0o755 if m.mode is None else m.mode
            mkdir = pb.FileActionMkDir(
                path="/cache",
                mode=mode & 0o777,
                timestamp=-1,
                owner=_uid_gid(m.uid or 0, m.gid or 0),
            )
            base = source
            spec.source = _file_node(
                base, [_File(pb.FileAction(mkdir=mkdir))], "cache mount permissions"
            )
            spec.selector = "/cache"
        if not from_:
            self.ctx_paths.add(src)
        return spec

    def dispatch_copy(self, st: _Stage, c: CopyCommand | AddCommand) -> None:
        """``dispatchCopy``: one file op with an action per source, or a merge for ``--link``."""
        is_add = isinstance(c, AddCommand)
        dest = _copy_dest(st.state, c.dest)
        owner_base = 0 if st.state.node is not None else pb.EMPTY
        link = c.link and not c.chmod
        if link:
            owner_base = pb.EMPTY
        common = _copy_common(c, owner_base)
        from_ = c.from_ if isinstance(c, CopyCommand) else ""
        files: list[_File] = []
        for src in c.sources:
            if src.startswith(("http://", "https://")) and not _is_git(src):
                if not is_add:
                    raise _unsupported(c, "a URL source for COPY", "source can't be a URL for COPY")
                files.append(self.http_copy(c, src, dest, common))
            elif _is_git(src):
                # the builder fetches git itself; the plan has no git source op (llb.Git) yet
                raise _unsupported(c, "ADD of a git repository (BuildKit's git source op)")
            else:
                files.append(self.local_copy(c, src, dest, common, from_))
        for content in c.contents:
            files.append(_heredoc_copy(content, dest, common))
        name = c.code
        if link:
            copied = _file_node(None, files, name)
            st.state.node = _merge(st.state.node, copied, f"LINK {name}")
        else:
            st.state.node = _file_node(st.state.node, files, name)
        if not from_:
            for src in c.sources:
                if not (is_add and src.startswith(("http://", "https://"))):
                    self.ctx_paths.add(go_join("/", src))

    def local_copy(
        self,
        c: CopyCommand | AddCommand,
        src: str,
        dest: str,
        common: pb.FileActionCopy,
        from_: str,
    ) -> _File:
        patterns: tuple[str, ...] = ()
        required: tuple[str, ...] = ()
        if isinstance(c, CopyCommand) and c.parents:
            parent, sep, pattern = src.partition("/./")
            if not sep:
                pattern, src = src, "/"
            else:
                src = parent
            pattern = system_normalize("/", pattern, False)
            patterns = (pattern.removeprefix("/"),)
            if not _has_wildcards(src) and not _has_wildcards(pattern):
                required = (system_normalize("/", go_join(src, pattern), False),)
        src = system_normalize("/", src, False)
        unpack = isinstance(c, AddCommand)
        if isinstance(c, AddCommand) and c.unpack is not None:
            unpack = c.unpack
        source = self.source_state(from_).node if from_ else self.context_node()
        action = replace(
            common,
            src=go_clean(src),
            dest=dest,
            follow_symlink=True,
            dir_copy_contents=True,
            include_patterns=patterns,
            required_paths=required,
            attempt_unpack_docker_compatibility=unpack,
            allow_wildcard=True,
            allow_empty_wildcard=True,
        )
        return _File(pb.FileAction(copy=action), source, reads=True)

    def http_copy(
        self, c: CopyCommand | AddCommand, src: str, dest: str, common: pb.FileActionCopy
    ) -> _File:
        filename = "__unnamed__"
        try:
            base = go_path_base(urlsplit(src).path)
            if base not in (".", "/"):
                filename = base
        except ValueError:
            pass
        attrs = {"http.filename": filename}
        checksum = c.checksum if isinstance(c, AddCommand) else ""
        if checksum:
            attrs["http.checksum"] = checksum
        op = pb.Op(
            source=pb.SourceOp(identifier=src, attrs=attrs), constraints=pb.WorkerConstraints()
        )
        node = _node(op, (), (), f"ADD {src}")
        unpack = bool(c.unpack) if isinstance(c, AddCommand) else False
        action = replace(
            common,
            src=fileop_normalize("/", filename, False),
            dest=dest,
            attempt_unpack_docker_compatibility=unpack,
        )
        return _File(pb.FileAction(copy=action), node, reads=True)


# --- exec helpers ------------------------------------------------------------------------------


class _MountSpec(Struct):
    """An ``llb`` mount before marshal (``exec.go``'s ``mount``)."""

    target: str
    source: _Node | None
    selector: str = ""
    readonly: bool = False
    no_output: bool = False
    cache_id: str = ""
    sharing: pb.CacheSharingOpt = pb.CacheSharingOpt.SHARED
    tmpfs: bool = False
    tmpfs_size: int = 0


def _run_args(st: _Stage, c: RunCommand) -> tuple[tuple[str, ...], _Node | None]:
    """The exec args, and the heredoc script's file when it runs from ``/dev/pipes/``."""
    args = list(c.cmd_line)
    pipes: _Node | None = None
    if c.files:
        heredoc = _heredoc_word(args[0]) if len(args) == 1 else None
        if heredoc is not None:
            data = c.files[0].data
            if c.files[0].chomp:
                data = re.sub(r"(?m)^\t+", "", data)
            if data.startswith("#!"):
                name = c.files[0].name
                mkfile = pb.FileActionMkFile(
                    path=fileop_normalize("/", name, False),
                    mode=0o755,
                    data=data.encode("utf-8"),
                    timestamp=-1,
                )
                pipes = _file_node(
                    None, [_File(pb.FileAction(mkfile=mkfile))], "preparing inline document"
                )
                args = [go_join("/dev/pipes/", name)]
            else:
                args = [data]
        else:
            script = args[0]
            for f in c.files:
                script += "\n" + f.data + f.name
            args = [script]
    if c.prepend_shell:
        args = [*st.shell, " ".join(args)]
    return tuple(args), pipes


def _heredoc_word(text: str) -> str | None:
    """``parser.MustParseHeredoc``: the name when ``text`` is one heredoc word, else None."""
    m = _HEREDOC.match(text)
    if m is None or not m.group(3):
        return None
    words = m.group(3).split()
    return words[0].strip("'\"") if len(words) == 1 else None


def _secret(m: Mount, mounts: list[pb.Mount], env: list[pb.SecretEnv]) -> None:
    """``dispatchSecret``: a secret file mount (mode 0400 unless given), or an env variable."""
    sid = m.source or m.cache_id or go_path_base(m.target)
    target = m.target
    if m.env is None and not target:
        target = "/run/secrets/" + go_path_base(sid)
    if m.env is not None:
        env.append(pb.SecretEnv(id=sid, name=m.env or sid, optional=not m.required))
    if target:
        opt = pb.SecretOpt(
            id=sid,
            uid=m.uid or 0,
            gid=m.gid or 0,
            mode=0o400 if m.mode is None else m.mode,
            optional=not m.required,
        )
        mounts.append(
            pb.Mount(input=pb.EMPTY, dest=target, mount_type=pb.MountType.SECRET, secret_opt=opt)
        )


def _ssh(m: Mount, index: int) -> pb.Mount:
    """``dispatchSSH`` + ``ExecOp.Marshal``: the id as written (empty: the agent ``default``),
    mode 0600 unless given, ``/run/buildkit/ssh_agent.N`` unless a target is."""
    opt = pb.SSHOpt(
        id=m.cache_id or "",
        uid=m.uid or 0,
        gid=m.gid or 0,
        mode=0o600 if m.mode is None else m.mode,
        optional=not m.required,
    )
    dest = m.target or f"/run/buildkit/ssh_agent.{index}"
    return pb.Mount(input=pb.EMPTY, dest=dest, mount_type=pb.MountType.SSH, ssh_opt=opt)


def _exec_node(
    meta: pb.Meta,
    specs: list[_MountSpec],
    secrets: list[pb.Mount],
    secret_env: list[pb.SecretEnv],
    network: pb.NetMode,
    security: pb.SecurityMode,
    platform: pb.Platform,
    name: str,
) -> _Node:
    """``ExecOp.Marshal``: mounts sorted by target, equal inputs shared, outputs for writable binds."""
    inputs = _Inputs()
    mounts: list[pb.Mount] = []
    out = 0
    for s in sorted(specs, key=lambda s: s.target.encode("utf-8")):
        output = pb.EMPTY
        if not (s.no_output or s.readonly or s.cache_id or s.tmpfs):
            output, out = out, out + 1
        mount = pb.Mount(
            input=inputs.add(s.source),
            selector=s.selector,
            dest=s.target,
            output=output,
            readonly=s.readonly,
        )
        if s.cache_id:
            mount = replace(
                mount,
                mount_type=pb.MountType.CACHE,
                cache_opt=pb.CacheOpt(id=s.cache_id, sharing=s.sharing),
            )
        if s.tmpfs:
            mount = replace(
                mount, mount_type=pb.MountType.TMPFS, tmpfs_opt=pb.TmpfsOpt(size=s.tmpfs_size)
            )
        mounts.append(mount)
    ex = pb.ExecOp(
        meta=meta,
        mounts=(*mounts, *secrets),
        network=network,
        security=security,
        secretenv=tuple(secret_env),
    )
    op = pb.Op(exec=ex, platform=platform, constraints=pb.WorkerConstraints())
    return _node(op, inputs.nodes, inputs.nodes, name)


def _proxy_env(build_args: Mapping[str, str]) -> pb.ProxyEnv | None:
    """``proxyEnvFromBuildArgs``: keys matched case-insensitively, in sorted order (the last wins)."""
    values: dict[str, str] = {}
    for key in sorted(build_args):
        if key.lower() in _PROXY_FIELDS:
            values[key.lower()] = build_args[key]
    return pb.ProxyEnv(**values) if values else None


def _epoch_ns(plan: BuildPlan, build_args: Mapping[str, str]) -> int:
    """WORKDIR's mkdir timestamp: SOURCE_DATE_EPOCH in nanoseconds, or -1 (none)."""
    value = build_args.get("SOURCE_DATE_EPOCH")
    if value is None:
        value = dict(plan.global_args).get("SOURCE_DATE_EPOCH") or ""
    try:
        return int(value) * 1_000_000_000
    except ValueError:
        return -1  # "context" or a named context: resolved from a source mason does not read here


# --- file helpers ------------------------------------------------------------------------------


def _copy_dest(state: _State, dest: str) -> str:
    """``pathRelativeToWorkingDir`` then fileop's ``normalizePath`` (keeping a trailing slash)."""
    if dest.startswith("/"):
        d = system_normalize("/", dest, True)
    else:
        d = system_normalize(state.dir, "./" if dest in (".", "") else dest, True)
    return fileop_normalize(state.dir, d, True)


def _copy_common(c: CopyCommand | AddCommand, owner_base: int) -> pb.FileActionCopy:
    """The fields every action of one COPY/ADD shares: owner, mode, excludes, create-dest-path."""
    mode, mode_str = -1, ""
    if c.chmod:
        try:
            value = int(c.chmod, 8)
        except ValueError:
            mode_str = c.chmod  # a symbolic mode (u+x): BuildKit passes the string on
            mode = 0
        else:
            if value > 0o7777:
                raise _unsupported(
                    c,
                    "",
                    f"invalid chmod parameter: '{c.chmod}'. it should be octal string "
                    "and between 0 and 07777",
                )
            mode = value
    return pb.FileActionCopy(
        owner=_chown(c.chown, owner_base),
        mode=mode,
        mode_str=mode_str,
        exclude_patterns=tuple(c.exclude),
        create_dest_path=True,
        timestamp=-1,
    )


def _heredoc_copy(content: SourceContent, dest: str, common: pb.FileActionCopy) -> _File:
    path = fileop_normalize("/", content.path, False)
    mkfile = pb.FileActionMkFile(
        path=path, mode=0o644, data=content.data.encode("utf-8"), timestamp=-1
    )
    node = _file_node(None, [_File(pb.FileAction(mkfile=mkfile))], "preparing inline document")
    action = replace(common, src=fileop_normalize("/", content.path, False), dest=dest)
    return _File(pb.FileAction(copy=action), node, reads=True)


def _parse_uid(text: str) -> int | None:
    if text == "root":
        return 0
    try:
        value = int(text, 10)
    except ValueError:
        return None
    return value if -(2**31) <= value < 2**31 else None


def _user_opt(text: str, base: int) -> pb.UserOpt:
    uid = _parse_uid(text)
    if uid is None:
        return pb.UserOpt(by_name=pb.NamedUserOpt(name=text, input=base))
    return pb.UserOpt(by_id=uid & 0xFFFFFFFF)


def _chown(spec: str, base: int) -> pb.ChownOpt | None:
    """``llb.WithUser``: ``user[:group]``, each a number, ``root`` or a name looked up in ``base``."""
    if not spec:
        return None
    parts = spec.split(":", 1)
    user = _user_opt(parts[0], base)
    group = _user_opt(parts[1], base) if len(parts) > 1 else None
    return pb.ChownOpt(user=user, group=group)


def _uid_gid(uid: int, gid: int) -> pb.ChownOpt:
    return pb.ChownOpt(user=pb.UserOpt(by_id=uid), group=pb.UserOpt(by_id=gid))


def _file_node(base: _Node | None, files: Sequence[_File], name: str) -> _Node:
    """``FileOp.Marshal``: the base, then each copy's source, as inputs; later actions chain
    on the previous one (index ``len(inputs) + i - 1``); only the last action has an output."""
    inputs = _Inputs()
    seconds: list[int] = []
    for f in files:
        inputs.add(base)
        seconds.append(inputs.add(f.source) if f.reads else pb.EMPTY)
    base_idx = inputs.add(base)
    actions = []
    for i, (f, second) in enumerate(zip(files, seconds, strict=True)):
        first = base_idx if i == 0 else len(inputs.nodes) + i - 1
        output = 0 if i == len(files) - 1 else pb.EMPTY
        actions.append(replace(f.action, input=first, secondary_input=second, output=output))
    op = pb.Op(file=pb.FileOp(actions=tuple(actions)), constraints=pb.WorkerConstraints())
    # allOutputs: the base, then the sources from the last action back to the first
    deps = _Inputs()
    deps.add(base)
    for f in reversed(files):
        if f.reads:
            deps.add(f.source)
    return _node(op, inputs.nodes, deps.nodes, name)


def _merge(lower: _Node | None, upper: _Node, name: str) -> _Node:
    """``llb.Merge``: scratch inputs are dropped; one input left is that input itself."""
    if lower is None:
        return upper
    merge = pb.MergeOp(inputs=(pb.MergeInput(input=0), pb.MergeInput(input=1)))
    op = pb.Op(merge=merge, constraints=pb.WorkerConstraints())
    return _node(op, (lower, upper), (lower, upper), name)


# --- misc --------------------------------------------------------------------------------------


def _is_git(src: str) -> bool:
    """A git source as the builder tells one (dfgitutil.ParseGitRef; a bad query is still git)."""
    try:
        ref = parse_git_ref(src)
    except GitRefError:
        return True
    return ref is not None and not ref.indistinguishable_from_local


def _is_empty_image(doc: Mapping[str, Any]) -> bool:
    """An image with no layers is built on scratch (``isScratch`` in resolveBaseImage)."""
    if (doc.get("rootfs") or {}).get("diff_ids"):
        return False
    return all(h.get("empty_layer") for h in doc.get("history") or ())


def _unsupported(c: Command, what: str, message: str = "") -> BuildError:
    return BuildError(
        message or f"{what} is not supported by mason's LLB planner yet",
        reference="unsupported-feature",
        context=[f"at line {c.start_line}: {redact_credentials_in(c.code)}"],
    )


def _context_source(
    name: str, exclude_patterns: Sequence[str], ctx_paths: set[str], session_id: str
) -> pb.Op:
    """``dockerui``'s MainContext: the context's local source with the paths the build reads."""
    attrs = {"local.sharedkeyhint": name}
    if session_id:
        attrs["local.session"] = session_id
    if exclude_patterns:
        attrs["local.excludepatterns"] = go_json(list(exclude_patterns)).decode("utf-8")
    follow = _follow_paths(ctx_paths)
    if follow:
        attrs["local.followpaths"] = go_json(follow).decode("utf-8")
    return pb.Op(
        source=pb.SourceOp(identifier=f"local://{name}", attrs=attrs),
        constraints=pb.WorkerConstraints(),
    )


def _follow_paths(paths: set[str]) -> list[str]:
    """``normalizeContextPaths``: relative and sorted; none at all when the root is read."""
    if "/" in paths:
        return []
    return sorted((go_join(".", p) for p in paths), key=lambda s: s.encode("utf-8"))


def _definition(target: _Node | None, context: _Node | None) -> LLBDefinition:
    """BuildKit's marshal: inputs depth first, each op once (by digest), then the terminal."""
    order: list[_Node] = []
    seen: set[str] = set()

    def visit(n: _Node) -> None:
        for d in n.deps:
            visit(d)
        if n.digest not in seen:
            seen.add(n.digest)
            order.append(n)

    if target is not None:
        visit(target)
    terminal = pb.Op(
        inputs=(pb.Input(digest=target.digest, index=0),) if target is not None else ()
    )
    vertices = [LLBVertex(n.op, n.digest, n.name, n.session_bound) for n in order]
    vertices.append(
        LLBVertex(
            terminal,
            pb.op_digest(terminal),
            "terminal",
            target.session_bound if target is not None else False,
        )
    )
    ctx = next((v for v in vertices if context is not None and v.digest == context.digest), None)
    return LLBDefinition(tuple(vertices), ctx)


def plan_llb(
    plan: BuildPlan,
    *,
    resolve: ImageResolver,
    platform: pb.Platform | str = "linux/amd64",
    build_args: Mapping[str, str] | None = None,
    context_name: str = "context",
    exclude_patterns: Sequence[str] = (),
    session_id: str = "",
    context_digest: str | None = None,
    follow_paths: bool = True,
    run_defaults: RunDefaults | None = None,
) -> LLBDefinition:
    """The LLB BuildKit v0.32.2's Dockerfile frontend makes for ``plan`` (see the module docstring).

    The context source's attributes depend on every path the build reads from it,
    so the stages are dispatched twice: once to collect those paths, then with the
    final context op. ``context_digest`` replaces the context's vertex digest (it
    includes ``local.session``, which only the client knows). Without ``follow_paths``
    the context source lists no paths and the stages are dispatched once: its vertex
    digest and those of the ops that read it then differ from BuildKit's, but no cache
    key does (the context enters keys by the content of what each step reads)."""
    target_platform = parse_platform(platform) if isinstance(platform, str) else platform
    args = dict(build_args if build_args is not None else plan.build_args)
    run = run_defaults or RunDefaults()
    ctx_paths: set[str] = set()
    if follow_paths:
        placeholder = _Node(pb.Op(), "sha256:" + "0" * 64, (), "context", True)
        first = _Planner(plan, resolve, target_platform, args, placeholder, run)
        token = _COLLECTING.set(itertools.count())
        try:
            first.stage(plan.target)
        finally:
            _COLLECTING.reset(token)
        ctx_paths = first.ctx_paths
    ctx_op = _context_source(context_name, exclude_patterns, ctx_paths, session_id)
    digest = context_digest or pb.op_digest(ctx_op)
    context = _Node(ctx_op, digest, (), f"local://{context_name}", session_bound=not session_id)
    final = _Planner(plan, resolve, target_platform, args, context, run)
    target = final.stage(plan.target).state.node
    definition = _definition(target, context if final.context_used else None)
    return replace(
        definition,
        steps={k: n.digest for k, n in final.step_nodes.items()},
        linked={k: n.digest for k, n in final.linked_nodes.items()},
        commands={i: tuple(st.commands) for i, st in final.stages.items()},
    )
