"""``build(options)``: one ``mason build`` from Dockerfile to outputs.

Order: open ``$MASON_ROOT`` (shared lock) -> read the Dockerfile and
.dockerignore -> plan stages -> resolve base images (manifest + config only)
-> import caches (documents only) -> convert to a graph -> solve (local store,
then imported caches, else execute) -> assemble the image config -> outputs
-> cache exports -> metadata. When a step fails, the steps that finished are still exported
to every registry/local ``--cache-to`` (best effort: a failing export is a warning) before the
step's ``SolveError`` propagates.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from mason import collector
from mason.digest import Digest, sha256_bytes
from mason.engine.blobs import Blobs, RemoteLocation
from mason.engine.context import DockerIgnore
from mason.engine.convert import ConvertedBuild, ResolvedImage, convert_plan, final_config
from mason.engine.exporters import (
    ExportedImage,
    ExportedIndex,
    ImageResult,
    export_outputs,
    open_pushes_ahead,
)
from mason.engine.ops import (
    BuildEnv,
    ExecOp,
    FileOp,
    LocalResultStore,
    StepResult,
    mark_plan,
)
from mason.engine.options import BuildOptions, predefined_args, read_dockerfile
from mason.engine.snapshots import Snapshotter
from mason.engine.sshagent import ssh_agents
from mason.engine.state import LayerRef, StateError, StateRoot, human_size
from mason.errors import BuildError, UsageError
from mason.futures import Future, ThreadPoolExecutor, in_daemon_thread
from mason.oci.platform import Platform, PlatformError, host_platform
from mason.progress import Event, NullSink, ProgressSink
from mason.solver import CacheKey, CancelToken, SolveError, Solver, Vertex
from mason.structs import Struct, field

if TYPE_CHECKING:
    from mason.dockerfile.checks import CheckReport
    from mason.engine.earlypush import EarlyPush

__all__ = ["BuildOutcome", "ProgressAdapter", "build", "check"]


class BuildOutcome(Struct):
    image_digest: Digest | None
    config_digest: Digest | None
    exported: ExportedImage | ExportedIndex | None
    states: dict[str, str] = field(default_factory=dict)  # vertex name -> cached/executed/...
    cached_steps: int = 0
    executed_steps: int = 0
    downloaded_blobs: list[Digest] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: every image reference resolved by tag (base images, ``COPY --from`` images) -> the digest
    #: its tag named (an index's when it is one)
    resolved_tags: dict[str, str] = field(default_factory=dict)
    #: the steps read something besides the context, the Dockerfile and those images (ADD of a
    #: URL or a git repository, a named directory context)
    outside_inputs: bool = False


class _Task:
    """An internal progress vertex (``[internal] load ...``, ``exporting to image``)."""

    def __init__(self, sink: ProgressSink, name: str) -> None:
        self.sink = sink
        self.name = name
        self.vid = f"task:{name}:{id(self)}"
        self.t0 = time.monotonic()
        sink.emit(Event(self.vid, name, "started"))

    def log(self, text: str) -> None:
        self.sink.emit(Event(self.vid, self.name, "log", text))

    def done(self) -> None:
        self.sink.emit(Event(self.vid, self.name, "done", elapsed=time.monotonic() - self.t0))

    def error(self, text: str) -> None:
        self.sink.emit(Event(self.vid, self.name, "error", text))

    def warn(self, text: str) -> None:
        self.sink.emit(Event(self.vid, self.name, "warning", text))


@contextlib.contextmanager
def _task(sink: ProgressSink, name: str) -> Iterator[_Task]:
    t = _Task(sink, name)
    try:
        yield t
    except BaseException as exc:
        t.error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    t.done()


class ProgressAdapter:
    """``mason.solver.SolveProgress`` -> ``mason.progress`` events."""

    def __init__(self, sink: ProgressSink) -> None:
        self.sink = sink
        self.states: dict[str, str] = {}
        self._lock = threading.Lock()

    def _vid(self, vertex: Vertex[Any]) -> str:
        return f"v:{id(vertex)}"

    def vertex_started(self, vertex: Vertex[Any], key: CacheKey) -> None:
        self.sink.emit(Event(self._vid(vertex), vertex.name, "started"))

    def vertex_cached(self, vertex: Vertex[Any], key: CacheKey, source: str) -> None:
        with self._lock:
            self.states[vertex.name] = "cached"
        if source != "local":
            self.note(vertex, f"cache hit from {source}")
        self.sink.emit(Event(self._vid(vertex), vertex.name, "cached", source))

    def note(self, vertex: Vertex[Any], text: str) -> None:
        """A status line of mason's own in the vertex's block (not the step's output)."""
        self.sink.emit(Event(self._vid(vertex), vertex.name, "log", text))

    def vertex_log(self, vertex: Vertex[Any], line: str) -> None:
        stream = "" if line.startswith("resolve ") else "stdout"
        self.sink.emit(
            Event(
                self._vid(vertex),
                vertex.name,
                "log",
                line,
                extra={"stream": stream} if stream else {},
            )
        )

    def vertex_done(self, vertex: Vertex[Any], key: CacheKey, elapsed: float) -> None:
        with self._lock:
            self.states[vertex.name] = "executed"
        self.sink.emit(Event(self._vid(vertex), vertex.name, "done", elapsed=elapsed))

    def vertex_error(
        self, vertex: Vertex[Any], key: CacheKey | None, error: BaseException, elapsed: float | None
    ) -> None:
        from mason.solver import Cancelled

        with self._lock:
            self.states[vertex.name] = "error"
        if isinstance(error, Cancelled):  # BuildKit prints "#N CANCELED", no error summary
            self.sink.emit(
                Event(
                    self._vid(vertex),
                    vertex.name,
                    "error",
                    "cancelled",
                    extra={"cancelled": "true"},
                )
            )
            return
        text = (str(error).splitlines() or [""])[0]
        self.sink.emit(Event(self._vid(vertex), vertex.name, "error", text))

    def source_error(self, source: str, error: Exception) -> None:
        self.sink.emit(
            Event(
                f"source:{source}",
                f"importing cache manifest from {source}",
                "warning",
                f"cache lookup failed, not used again: {error}",
            )
        )


class _Resolver:
    """Resolves FROM references: tag -> manifest (platform) -> config. Manifests and configs are
    kept in the content store, so only the tag lookup hits the registry on a later build."""

    def __init__(
        self,
        client: Any,
        state: StateRoot,
        blobs: Blobs,
        sink: ProgressSink,
        platform: Platform,
        *,
        multi: bool = False,
    ) -> None:
        self.client = client
        self.state = state
        self.blobs = blobs
        self.sink = sink
        self.platform = platform
        #: several target platforms: "[linux/arm64 internal] load metadata for ..." (BuildKit)
        self.multi = multi
        self._memo: dict[tuple[str, str], ResolvedImage] = {}
        #: reference -> the digest its tag named, for every reference resolved by tag
        self.tags: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, ref_text: str, platform_text: str) -> ResolvedImage:
        from mason.oci import Reference
        from mason.oci.errors import InvalidReferenceError

        platform = Platform.parse(platform_text) if platform_text else self.platform
        key = (ref_text, str(platform))
        with self._lock:
            if key in self._memo:
                return self._memo[key]
        try:
            ref = Reference.parse(ref_text)
        except InvalidReferenceError as exc:
            raise UsageError(
                f"invalid base image reference {ref_text!r}: {exc.message}",
                reference="invalid-reference",
            ) from exc
        where = f"{platform} internal" if self.multi else "internal"
        with _task(self.sink, f"[{where}] load metadata for {ref}"):
            img = self._resolve(ref, platform)
        with self._lock:
            self._memo[key] = img
        return img

    def layout(self, nc: Any, platform_text: str) -> ResolvedImage:
        """An ``oci-layout://`` named context's image for the platform, read from the layout
        (no registry); its layer blobs are copied from the layout when a step needs them."""
        from mason.engine.namedcontexts import layout_blob_opener, layout_image
        from mason.oci import Reference

        key = (f"oci-layout://{nc.value}@{nc.digest}", platform_text)
        if key in self._memo:
            return self._memo[key]
        platform = Platform.parse(platform_text) if platform_text else self.platform
        # BuildKit names it after the context: docker.io/library/NAME@DIGEST
        ref = Reference.parse(nc.name, default_tag=False).with_digest(nc.digest)
        with _task(self.sink, f"[context {nc.name}] load metadata for {ref}"):
            found = layout_image(nc, platform)
        layers = []
        for desc, diff_id in found.layers:
            opener = layout_blob_opener(Path(nc.value), desc.digest, desc.size)
            where = RemoteLocation(None, desc.media_type, desc.size, opener=opener, image=True)
            self.blobs.add_remote(desc.digest, diff_id, where)
            layers.append(LayerRef(diff_id, desc.digest, desc.size, desc.media_type))
        img = ResolvedImage(ref, found.manifest_digest, found.config, tuple(layers))
        self._memo[key] = img
        return img

    def _stored(self, digest: Digest) -> bytes | None:
        """The content store's copy of a manifest or config, or None. A copy whose bytes do not
        hash to its name (disk corruption, tampering) is reported with both digests and
        deleted, so it is fetched again rather than used (and put_bytes can store it anew)."""
        if not self.state.store.has(digest):
            return None
        path = self.state.store.path(digest)
        raw = path.read_bytes()
        got = sha256_bytes(raw)
        if got == digest:
            return raw
        self.sink.emit(
            Event(
                "store:corrupt",
                "local content store",
                "warning",
                f"{path} is corrupt: expected {digest}, got {got}; deleted it, fetching again",
            )
        )
        self.state.store.delete(digest)
        return None

    def _get_doc(self, ref: Any, digest: str | None) -> tuple[bytes, str | None, Digest]:
        """A document (raw, its media type, digest) from the store, else from the registry;
        a stored one's media type is None: the document's own (``parse_manifest``)."""
        if digest is not None and (raw := self._stored(Digest(digest))) is not None:
            return raw, None, Digest(digest)
        fetched = self.client.fetch_manifest(ref.with_digest(digest) if digest else ref)
        self._keep(fetched.raw)
        return fetched.raw, fetched.media_type, fetched.digest

    def _keep(self, raw: bytes, digest: Digest | None = None) -> None:
        """A manifest or config into the content store, not fsynced (start-up, issue 14: two
        fsyncs each): the registry serves it again, and ``_stored`` checks every read."""
        self.state.store.put_bytes(raw, digest, durable=False)

    def _named(self, ref: Any) -> tuple[bytes, str | None, Digest]:
        """The document ``ref`` names, as ``_get_doc`` gives it; a tag's digest is noted in
        ``tags``. A document read here is not read back from the store."""
        from mason.registry.errors import RegistryNotFoundError

        digest = ref.digest
        fetched = self.client.prefetched_manifest(ref) if digest is None else None
        if fetched is not None:  # read by tag while the engine imported: one GET, no HEAD
            self._keep(fetched.raw)
            digest = fetched.digest
        elif digest is None:
            head = self.client.head_manifest(ref)
            if head is None:
                # a HEAD 404 has no body: GET it for the URL and the registry's own error JSON
                try:
                    fetched = self.client.fetch_manifest(ref)
                except RegistryNotFoundError as exc:
                    raise BuildError(
                        f"failed to resolve source metadata for {ref}: not found",
                        reference="image-not-found",
                        context=exc.context,
                        hint="check the image name and tag (and that you may pull it)",
                    ) from exc
                self._keep(fetched.raw)  # appeared since the HEAD
                head = fetched.descriptor()
            digest = head.digest
        if ref.digest is None:
            with self._lock:
                self.tags[str(ref)] = digest
        if fetched is None:
            return self._get_doc(ref, digest)
        return fetched.raw, None, fetched.digest  # as the stored copy would be read

    def _resolve(self, ref: Any, platform: Platform) -> ResolvedImage:
        from mason.oci.manifest import ImageIndex, parse_manifest

        if self.client is None:
            raise BuildError(
                f"cannot resolve {ref}: no registry client", reference="resolve-failed"
            )
        raw, media_type, digest = self._named(ref)
        doc = parse_manifest(raw, media_type)
        if isinstance(doc, ImageIndex):
            from mason.engine.namedcontexts import platform_entry

            entry = platform_entry(doc, platform, str(ref))
            raw, media_type, digest = self._get_doc(ref, entry.digest)
            doc = parse_manifest(raw, media_type)
        if isinstance(doc, ImageIndex):
            raise BuildError(
                f"{ref}: nested image index is not supported", reference="resolve-failed"
            )
        cfg_desc = doc.config
        stored_cfg = self._stored(cfg_desc.digest)
        if stored_cfg is not None:
            cfg_raw = stored_cfg
        else:
            with self.client.open_blob(ref, cfg_desc) as stream:
                cfg_raw = stream.read()
            self._keep(cfg_raw, cfg_desc.digest)
        config = json.loads(cfg_raw)
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(doc.layers):
            raise BuildError(
                f"{ref}: config lists {len(diff_ids)} diff IDs for {len(doc.layers)} layers",
                reference="invalid-image",
            )
        layers = []
        for desc, diff_id in zip(doc.layers, diff_ids, strict=True):
            lr = LayerRef(Digest(diff_id), desc.digest, desc.size, desc.media_type)
            self.blobs.add_remote(
                desc.digest,
                Digest(diff_id),
                RemoteLocation(ref, desc.media_type, desc.size, image=True),
            )
            layers.append(lr)
        return ResolvedImage(ref, digest, config, tuple(layers))


def _ignore_size(context: Path, dockerfile: Path | None) -> int:
    for path in (
        (dockerfile.with_name(dockerfile.name + ".dockerignore"),) if dockerfile else ()
    ) + (context / ".dockerignore",):
        with contextlib.suppress(OSError):
            return path.stat().st_size
    return 0


def _uses_context(plan: Any) -> bool:
    """Whether a needed stage reads the context (COPY/ADD without --from, RUN bind mounts)."""
    from mason.dockerfile.instructions import AddCommand, CopyCommand

    for ps in plan.stages:
        for cmd in ps.stage.commands:
            if isinstance(cmd, AddCommand) or (isinstance(cmd, CopyCommand) and not cmd.from_):
                return True
            if any(m.type == "bind" and not m.from_ for m in getattr(cmd, "mounts", None) or ()):
                return True
    return False


def _context_size(context: Path, ignore: DockerIgnore) -> int:
    """Bytes of the context's files that .dockerignore keeps (what BuildKit would transfer)."""
    total = 0
    keep_all = ignore.empty  # no rules: no match per file (a partial build's fixed cost)
    for dirpath, dirnames, filenames in os.walk(context):
        rel_dir = os.path.relpath(dirpath, context)
        prefix = "" if rel_dir == "." else rel_dir + "/"
        if not keep_all and not ignore.has_exceptions:
            dirnames[:] = [d for d in dirnames if not ignore.ignored(prefix + d)]
        for name in filenames:
            if keep_all or not ignore.ignored(prefix + name):
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _insecure_outputs(opts: BuildOptions) -> list[str]:
    """The registries of image outputs marked ``registry.insecure=true`` (buildx's attribute)."""
    from mason.engine.options import outputs_for
    from mason.oci.reference import Reference

    outputs = outputs_for(opts.tags, opts.push, opts.outputs, opts.annotations)
    return sorted(
        {Reference.parse(name).registry for o in outputs if o.insecure for name in o.names}
    )


def _build_client(opts: BuildOptions, early: Any = None) -> Any:
    """The registry client of a build: credentials, insecure hosts, registries.conf, the
    pings the command line sent before the engine was imported (``mason.registry.early``)."""
    from mason.cache.options import insecure_hosts
    from mason.registry.client import RegistryClient

    insecure = [
        *opts.insecure_registries,
        *sorted(insecure_hosts((*opts.cache_to, *opts.cache_from))),
        *_insecure_outputs(opts),
    ]
    return RegistryClient.for_user(
        opts.docker_config_dir, opts.registry_auth_file, insecure_hosts=insecure, early=early
    )


def build(
    opts: BuildOptions,
    *,
    root: Path,
    progress: ProgressSink | None = None,
    stdout: BinaryIO | None = None,
    client: Any = None,
    executor: Any = None,
    cancel: CancelToken | None = None,
    early: Any = None,
) -> BuildOutcome:
    """Run one build. ``client`` (a RegistryClient) and ``executor`` default to real ones;
    ``early``: the ``EarlyPings`` the command line started, for the default client."""
    sink: ProgressSink = progress or NullSink()
    from mason.dockerfile import parse_dockerfile
    from mason.dockerfile.stages import plan_build

    if not opts.context.is_dir():
        raise UsageError(
            f"build context {opts.context} is not a directory", reference="context-missing"
        )
    with _task(sink, "[internal] load build definition from Dockerfile") as t:
        data, df_name, df_path = read_dockerfile(opts)
        t.log(f"transferring dockerfile: {len(data)}B done")
        df = parse_dockerfile(data, df_name)
    definition_task = t  # build checks report on this vertex, as BuildKit's frontend does
    with _task(sink, "[internal] load .dockerignore") as t:
        ignore = DockerIgnore.load(opts.context, df_path)
        t.log(f"transferring context: {_ignore_size(opts.context, df_path)}B done")
    platforms = opts.platforms or (host_platform(),)
    build_args = dict(opts.build_args)
    epoch = opts.source_date_epoch
    if epoch is None and "SOURCE_DATE_EPOCH" in build_args:
        try:
            epoch = int(build_args["SOURCE_DATE_EPOCH"])
        except ValueError:
            raise UsageError(
                "SOURCE_DATE_EPOCH must be an integer", reference="invalid-build-arg"
            ) from None
    # one plan per target platform: TARGETPLATFORM & co. can change what a stage is
    plans = [
        plan_build(
            df,
            build_args=build_args,
            predefined=predefined_args(p),
            target=opts.target,
            replaced_stages=[c.name for c in opts.build_contexts],
        )
        for p in platforms
    ]

    own_client = client is None
    if client is None:
        client = _build_client(opts, early)
    try:
        _reap_orphaned_sandboxes()
        with ssh_agents(opts.ssh) as ssh_sockets, StateRoot.open(root) as state:
            return _build_in(
                opts,
                state,
                df,
                plans,
                ignore,
                platforms,
                epoch,
                sink,
                stdout,
                client,
                executor,
                cancel,
                data,
                checks_task=definition_task,
                ssh_sockets=ssh_sockets,
            )
    finally:
        if own_client:
            client.close()


def _build_in(
    opts: BuildOptions,
    state: StateRoot,
    df: Any,
    plans: list[Any],
    ignore: DockerIgnore,
    platforms: tuple[Platform, ...],
    epoch: int | None,
    sink: ProgressSink,
    stdout: BinaryIO | None,
    client: Any,
    executor: Any,
    cancel: CancelToken | None,
    df_bytes: bytes,
    *,
    checks_task: _Task | None = None,
    ssh_sockets: Mapping[str, str] | None = None,
) -> BuildOutcome:
    """Every platform's graph in one solve (steps with one key, as a ``FROM
    --platform=$BUILDPLATFORM`` stage's, run once), then one image per platform."""
    blobs = Blobs(state, client)
    snapshots = _open_snapshots(opts, state, blobs, sink)
    env = _build_env(opts, state, blobs, snapshots, executor, ignore, epoch, df, df_bytes)
    early, priors = _early_push(opts, client, blobs, env), _export_priors(opts, client)
    try:
        env.ssh_sockets = dict(ssh_sockets or {})
        env.named_dirs = _named_dirs(opts, sink)
        env.emulators = _LazyEmulators()
        resolver = _Resolver(client, state, blobs, sink, platforms[0], multi=len(platforms) > 1)
        converted, sources, cache_imports = _convert_and_import_caches(
            opts, env, plans, resolver, ignore, platforms, blobs, client, sink, checks_task
        )
        env.cache_mounts.sources = list(cache_imports.values())
        mark_plan([c.target.vertex for c in converted])
        _report_context(opts, plans, ignore, sink)
        adapter = ProgressAdapter(sink)
        graph = _solve(
            opts,
            state,
            df,
            adapter,
            sources,
            converted,
            blobs,
            client,
            sink,
            cache_imports,
            cancel,
            _buildkit_keys(
                opts, converted, ignore, platforms, snapshots, env.digests_of(opts.context)
            ),
            env.file_digests,
        )
        snapshots.layers.sync_soon()  # the steps' snapshots go to disk beside the export
        outcome = _outcome(adapter, resolver, graph)
        images = [
            _image_result(opts, graph, c, p, snapshots, blobs, epoch)
            for c, p in zip(converted, platforms, strict=True)
        ]
        if early is not None:
            early.stop_queued()  # what is not under way, the export puts
        from mason.engine.remotecache import export_caches

        caches = functools.partial(
            export_caches, opts.cache_to, graph, converted, blobs, client, sink, cache_imports,
            cache_mounts=env.cache_mounts, priors=priors,
        )  # fmt: skip
        _export(opts, outcome, images, blobs, client, sink, state, stdout, caches)
        outcome.downloaded_blobs = list(blobs.downloaded)
        return outcome
    finally:
        if early is not None:
            early.close()
        _sync_snapshots(snapshots, failing=sys.exc_info()[0] is not None)


def _sync_snapshots(snapshots: Snapshotter, *, failing: bool) -> None:
    """What the build committed, made durable (``mason.layer.snapshot``: once a build, not
    once a step). ``failing``: the build's own error is the one reported (the marker left
    behind makes the next build sync them)."""
    try:
        snapshots.layers.sync()
    except OSError as exc:
        if failing:
            return
        raise StateError(
            f"cannot write the build's snapshots to disk: {exc.strerror or exc}",
            context=[f"snapshots: {snapshots.layers.root}"],
        ) from exc


def _report_context(
    opts: BuildOptions, plans: list[Any], ignore: DockerIgnore, sink: ProgressSink
) -> None:
    """BuildKit's "load build context" vertex, for a build that reads its context."""
    if any(_uses_context(plan) for plan in plans):
        with _task(sink, "[internal] load build context") as t:
            t.log(f"transferring context: {human_size(_context_size(opts.context, ignore))} done")


def _outcome(adapter: ProgressAdapter, resolver: _Resolver, graph: Any) -> BuildOutcome:
    """What the solve did: each step's state, the tags it resolved, whether it read outside."""
    outcome = BuildOutcome(None, None, None, states=dict(adapter.states))
    outcome.cached_steps = sum(1 for s in adapter.states.values() if s == "cached")
    outcome.executed_steps = sum(1 for s in adapter.states.values() if s == "executed")
    outcome.resolved_tags = dict(resolver.tags)
    outcome.outside_inputs = any(_reads_outside(v.op) for sv in graph.vertices for v in sv.vertices)
    return outcome


def _early_push(opts: BuildOptions, client: Any, blobs: Blobs, env: BuildEnv) -> EarlyPush | None:
    """The uploads of layers as steps make them (``mason.engine.earlypush``: a registry
    cache takes every layer), hooked to ``env``'s commits; or None."""
    if not opts.cache_to:
        return None
    from mason.engine.earlypush import EarlyPush

    early = EarlyPush.for_build(opts.cache_to, client, blobs)
    env.layer_made = early.layer_made if early is not None else None
    return early


def _export_priors(opts: BuildOptions, client: Any) -> dict[str, Any]:
    """The ``--cache-to`` registry refs' caches, read from now on beside the build."""
    if not opts.cache_to:
        return {}
    from mason.engine.remotecache import read_export_priors

    return read_export_priors(opts.cache_to, opts.cache_from, client)


def _reads_outside(op: Any) -> bool:
    """Whether a step reads an input that is neither the context nor an image: ADD of a URL or
    a git repository, a named directory context."""
    if isinstance(op, FileOp):
        a = op.action
        return bool(a.urls or a.git or a.context)
    if isinstance(op, ExecOp):
        return any(m.context for m in op.mounts)
    return False


def _image_result(
    opts: BuildOptions,
    graph: Any,
    converted: ConvertedBuild,
    platform: Platform,
    snapshots: Snapshotter,
    blobs: Blobs,
    epoch: int | None,
) -> ImageResult:
    """One platform's image: its target's layers and config (with labels and inline cache)."""
    from mason.engine.remotecache import inline_cache_extra

    result = graph.result_of(converted.target.vertex)
    config_doc = final_config(converted.target, result, epoch)
    for k, v in opts.labels.items():
        config_doc.setdefault("config", {}).setdefault("Labels", {})[k] = v
    return ImageResult(
        result.layers,
        config_doc,
        platform,
        apply_layers=lambda dest: snapshots.apply_flat(result.layers, dest),
        source_date_epoch=epoch,
        config_extra=inline_cache_extra(opts.cache_to, graph, converted, blobs),
    )


def _solve(
    opts: BuildOptions,
    state: StateRoot,
    df: Any,
    adapter: ProgressAdapter,
    sources: Any,
    converted: list[ConvertedBuild],
    blobs: Blobs,
    client: Any,
    sink: ProgressSink,
    cache_imports: Any,
    cancel: CancelToken | None,
    keys: Any = None,
    file_digests: Any = None,
) -> Any:
    """Solve every platform's target; when a step fails, the finished steps still go to --cache-to
    (docs/architecture.md §8), so the fixed build resumes from the failed step."""
    from mason.engine.explain import ExplainRecorder

    collector.release()  # start-up is over: the build's own data is collected as usual

    recorder = ExplainRecorder(
        adapter,
        state.meta,
        context=opts.context,
        dockerfile=df.path,
        build_args=opts.build_args,
        explain=opts.explain_cache,
        imported=list(cache_imports.values()) if cache_imports else (),
    )
    solver: Solver[StepResult] = Solver(
        local=LocalResultStore(state, blobs),
        sources=sources,
        progress=recorder,
        max_workers=opts.max_parallel,
        rekey=keys.rekey if keys is not None else None,
    )
    try:
        graph = solver.solve([c.target.vertex for c in converted], cancel=cancel)
        if keys is not None and opts.cache_to:
            keys.link_contents(graph)
        return graph
    except SolveError as exc:
        # nothing here may replace the step's error
        if opts.cache_to and exc.graph is not None:
            from mason.engine.remotecache import export_caches

            if keys is not None:
                with contextlib.suppress(Exception):  # an advisory link: the step's error wins
                    keys.link_contents(exc.graph)

            export_caches(
                opts.cache_to,
                exc.graph,
                converted,
                blobs,
                client,
                sink,
                cache_imports,
                best_effort=True,
            )
        raise
    finally:
        recorder.flush()
        if file_digests is not None:
            file_digests.flush()
        if keys is not None:
            keys.close()


def _buildkit_keys(
    opts: BuildOptions,
    converted: list[ConvertedBuild],
    ignore: DockerIgnore,
    platforms: tuple[Platform, ...],
    snapshots: Any,
    digests: Any = None,
) -> Any:
    """BuildKit's keys for the build's steps (docs/cache-keys.md), or None where mason keeps
    its own: named contexts (their sources enter BuildKit's keys otherwise)."""
    if opts.build_contexts:
        return None
    from mason.engine.llbkeys import PlatformKeys, plan_keys

    return PlatformKeys(
        [
            plan_keys(
                c,
                context=opts.context,
                ignore=ignore,
                platform=str(p),
                build_args=opts.build_args,
                view=snapshots.view,
                run_defaults=_run_defaults(opts),
                digests=digests,
            )
            for c, p in zip(converted, platforms, strict=True)
        ]
    )


def _run_defaults(opts: BuildOptions) -> Any:
    """The command line's RUN options as BuildKit's frontend puts them in every exec op."""
    from mason.engine.llbplan import RunDefaults
    from mason.llb import pb

    network = {"host": pb.NetMode.HOST, "none": pb.NetMode.NONE}.get(opts.network)
    return RunDefaults(
        network=network or pb.NetMode.UNSET,
        extra_hosts=tuple(pb.HostIP(name.lower(), ip) for name, ip in opts.add_hosts),
        ulimits=tuple(pb.Ulimit(u.name, u.soft, u.hard) for u in opts.ulimits),
        shm_size=opts.shm_size or 0,
    )


def _convert_and_import_caches(
    opts: BuildOptions,
    env: BuildEnv,
    plans: list[Any],
    resolver: _Resolver,
    ignore: DockerIgnore,
    platforms: tuple[Platform, ...],
    blobs: Blobs,
    client: Any,
    sink: ProgressSink,
    checks_task: _Task | None,
) -> tuple[list[ConvertedBuild], Any, Any]:
    """The build graph of each platform (base images resolved) and the build checks, while the
    ``--cache-from`` documents download in a second thread: both mostly wait on registries. The
    imports' progress is held back until the conversion is done, so the output reads as if
    they ran in turn, and an error of the conversion or the checks still comes first."""
    from mason.engine.namedcontexts import overrides
    from mason.engine.remotecache import import_caches
    from mason.progress import HeldSink

    held = HeldSink(sink)
    # its error is raised by the build thread, below
    imports = in_daemon_thread("cache-import", import_caches, opts.cache_from, client, blobs, held)
    converted = [
        convert_plan(
            env,
            plan,
            resolver,
            platform=str(platform),
            no_cache=opts.no_cache,
            named=overrides(opts.build_contexts),
            no_cache_filter=opts.no_cache_filter,
            resolve_layout=resolver.layout,
            prefix_platform=len(platforms) > 1,
        )
        for plan, platform in zip(plans, platforms, strict=True)
    ]
    if checks_task is not None:  # the Dockerfile's checks once, for the first platform
        _report_checks(_run_checks(plans[0], resolver, ignore, platforms[0]), checks_task)
    sources, cache_imports = imports.result()
    held.release()
    return converted, sources, cache_imports


def _named_dirs(opts: BuildOptions, sink: ProgressSink) -> dict[str, tuple[Path, DockerIgnore]]:
    """The ``--build-context NAME=DIR`` directories (the last of one name wins) and the
    ``.dockerignore`` of each, loaded as BuildKit's ``[context NAME] load .dockerignore``."""
    from mason.engine.namedcontexts import overrides

    dirs: dict[str, tuple[Path, DockerIgnore]] = {}
    for name, nc in overrides(opts.build_contexts).items():
        if nc.kind == "dir":
            with _task(sink, f"[context {name}] load .dockerignore"):
                dirs[name] = (Path(nc.value), DockerIgnore.load_named(Path(nc.value)))
    return dirs


def _build_env(
    opts: BuildOptions,
    state: StateRoot,
    blobs: Blobs,
    snapshots: Any,
    executor: Any,
    ignore: DockerIgnore,
    epoch: int | None,
    df: Any,
    df_bytes: bytes,
) -> BuildEnv:
    """What the ops share: the stores, the sandbox (made on first use), secrets in memory."""
    secrets: dict[str, bytes] = {}
    for s in opts.secrets:
        if s.src is not None:
            secrets[s.id] = s.src.read_bytes()
        elif s.env_value is not None:
            secrets[s.id] = s.env_value.encode()

    def make_executor() -> Any:
        return _make_executor(opts.runtime, state.tmp)

    from mason.engine.filedigests import FileDigestCache

    return BuildEnv(
        state=state,
        blobs=blobs,
        snapshots=snapshots,
        executor=executor or _LazyExecutor(make_executor),
        context=opts.context,
        ignore=ignore,
        secrets=secrets,
        source_date_epoch=epoch,
        dockerfile_name=df.path,
        dockerfile_lines=df_bytes.decode(errors="replace").splitlines(),
        default_network=opts.network,
        extra_hosts=opts.add_hosts,
        shm_size=opts.shm_size,
        ulimits=opts.ulimits,
        allow_insecure="security.insecure" in opts.allow,
        file_digests=FileDigestCache(lambda: state.meta),
    )


#: how long (s) a push waits for a registry cache export to put its manifest, at most: a
#: small build's export puts it in milliseconds; one uploading large layers the push does
#: not share (another compression) goes on beside the push after this
_PUSH_WAITS_FOR_CACHE = 0.5


def _export(
    opts: BuildOptions,
    outcome: BuildOutcome,
    images: list[ImageResult],
    blobs: Blobs,
    client: Any,
    sink: ProgressSink,
    state: StateRoot,
    stdout: BinaryIO | None,
    export_caches: Callable[..., object],
) -> None:
    """The image outputs and the caches, side by side (a layer both push is uploaded once:
    ``mason.registry.push``); then the outcome's digests and buildx's metadata.
    ``export_caches``: ``remotecache.export_caches`` given all but ``written``.

    A push beside a registry cache export starts once the cache's manifest is put (issue 14):
    the export then reads its cache back after a wait (``cache.registry._Writer.settle``),
    which the push fills, instead of both sharing the registry and the wait coming last."""
    from mason.engine.options import outputs_for

    outputs = outputs_for(opts.tags, opts.push, opts.outputs, opts.annotations)
    written = threading.Event()
    if not (any(o.push for o in outputs) and any(o.type == "registry" for o in opts.cache_to)):
        written.set()  # nothing to wait for: files are written beside the export

    def caches() -> None:
        try:
            export_caches(written=written.set)
        finally:
            written.set()  # however the exports end, the push goes on

    with ThreadPoolExecutor(1, "export-cache") as pool:
        cached: Future[None] | None = None
        if outputs:
            with _task(sink, "exporting to image") as t:
                open_pushes_ahead(blobs, client, images, outputs)
                if opts.cache_to:  # beside the push: its reads and read-backs overlap it
                    cached = pool.submit(caches)
                    written.wait(_PUSH_WAITS_FOR_CACHE)
                outcome.exported = export_outputs(
                    blobs, client, images, outputs, state.tmp, t.log, stdout=stdout
                )
        elif not opts.cache_to:
            t2 = _Task(sink, "exporting to image")
            t2.warn(
                "no output specified: the build result stays in the local cache only (use --push, -o or --output)"
            )
            t2.done()
        if cached is not None:
            cached.result()
        elif opts.cache_to:
            caches()
    if outcome.exported is not None:
        outcome.metadata = _metadata(outcome.exported, images)
        outcome.image_digest = outcome.exported.digest
        if isinstance(outcome.exported, ExportedImage):
            outcome.config_digest = outcome.exported.manifest.config.digest
        names = [n for o in outputs for n in o.names]
        if names:
            outcome.metadata["image.name"] = ",".join(names)


def _metadata(exported: ExportedImage | ExportedIndex, images: list[ImageResult]) -> dict[str, Any]:
    """buildx's ``--metadata-file`` keys. An index has no config of its own: as BuildKit's
    multi-platform export, only its descriptor and digest (``--iidfile`` then names the index)."""
    descriptor = exported.descriptor().to_json()
    if isinstance(exported, ExportedIndex):
        return {"containerimage.descriptor": descriptor, "containerimage.digest": exported.digest}
    p = images[0].platform
    return {
        "containerimage.config.digest": exported.manifest.config.digest,
        "containerimage.descriptor": descriptor
        | {"platform": {"architecture": p.architecture, "os": p.os}},
        "containerimage.digest": exported.digest,
    }


def _run_checks(
    plan: Any, resolver: _Resolver, ignore: DockerIgnore, platform: Platform, stages: Any = None
) -> CheckReport:
    """Build checks (``mason.dockerfile.checks``) with the base image configs the resolver holds."""
    from mason.dockerfile.checks import run_checks

    def base_config(ps: Any) -> Any:
        try:
            plat = str(Platform.parse(ps.platform)) if ps.platform else str(platform)
        except PlatformError:
            return None
        img = resolver._memo.get((ps.base.image or "", plat))
        return img.config if img is not None else None

    return run_checks(
        plan,
        stages=stages,
        predefined=predefined_args(platform),
        base_config=base_config,
        ignore=ignore,
        platform=str(platform),
    )


def _report_checks(report: CheckReport, task: _Task) -> None:
    """Warnings as BuildKit's progress prints them (``#1 WARN: Rule: message (line N)``); with
    ``error=true`` a rule that fired fails the build before anything runs."""
    for w in report.warnings:
        task.sink.emit(
            Event(task.vid, task.name, "log", f"WARN: {w.short}", extra={"check": w.rule})
        )
    if report.error_message:
        raise BuildError(
            report.error_message,
            reference="build-checks",
            hint="fix the warnings above, or skip a rule with # check=skip=RULE",
        )


def check(
    opts: BuildOptions, *, root: Path, progress: ProgressSink | None = None, client: Any = None
) -> tuple[CheckReport, Any]:
    """``mason build --check``: the build checks of every stage (of ``--target``'s with one) and the
    parsed Dockerfile. Base images are resolved (manifest and config) for their facts; nothing runs."""
    from mason.dockerfile import parse_dockerfile
    from mason.dockerfile.stages import plan_build

    sink: ProgressSink = progress or NullSink()
    with _task(sink, "[internal] load build definition from Dockerfile") as t:
        data, df_name, df_path = read_dockerfile(opts)
        t.log(f"transferring dockerfile: {len(data)}B done")
        df = parse_dockerfile(data, df_name)
    ignore = DockerIgnore.load(opts.context, df_path)
    platform = (opts.platforms or (host_platform(),))[0]
    plan = plan_build(
        df,
        build_args=dict(opts.build_args),
        predefined=predefined_args(platform),
        target=opts.target,
        replaced_stages=[c.name for c in opts.build_contexts],
    )
    stages = plan.stages if opts.target else plan.all_stages
    own_client = client is None
    if client is None:
        from mason.registry.client import RegistryClient

        client = RegistryClient.for_user(
            opts.docker_config_dir,
            opts.registry_auth_file,
            insecure_hosts=opts.insecure_registries,
        )
    try:
        with StateRoot.open(root) as state:
            resolver = _Resolver(client, state, Blobs(state, client), sink, platform)
            for ps in stages:
                if ps.base.image is not None and not ps.base.is_scratch:
                    resolver(ps.base.image, ps.platform or str(platform))
            return _run_checks(plan, resolver, ignore, platform, stages), df
    finally:
        if own_client:
            client.close()


_RUNC_STATE = Path("/run/mason/runc")


def _open_snapshots(
    opts: BuildOptions, state: StateRoot, blobs: Blobs, sink: ProgressSink
) -> Snapshotter:
    if opts.snapshotter not in ("auto", "overlay", "copy"):
        raise UsageError(
            f"unknown snapshotter {opts.snapshotter!r}",
            reference="invalid-argument",
            hint="use auto, overlay or copy",
        )
    snapshots = Snapshotter(state, blobs, mode=opts.snapshotter)  # type: ignore[arg-type]

    def note(reason: str) -> None:  # when the first step needs a snapshot (a probe, for auto)
        t = _Task(sink, "[internal] snapshotter")
        t.log(f"overlayfs is not usable ({reason}): snapshots are copies")
        t.done()

    snapshots.layers.on_fallback = note
    if not opts.cache_from:  # no step can come from a cache: the first one unpacks its base
        snapshots.layers.probe_soon()
    return snapshots


def _make_executor(runtime: str, work_dir: Path) -> Any:
    """``mason build --runtime``: ``auto`` probes runc and falls back to unshare+chroot."""
    from mason.executor import ChrootExecutor, RuncExecutor, choose_executor

    if runtime == "runc":
        return RuncExecutor(state_dir=_RUNC_STATE, work_dir=work_dir)
    if runtime == "chroot":
        return ChrootExecutor(work_dir=work_dir)
    if runtime == "auto":  # runc until it cannot start a RUN: no probe container up front
        return choose_executor(state_dir=_RUNC_STATE, work_dir=work_dir, on_the_way=True)
    raise UsageError(
        f"unknown runtime {runtime!r}",
        reference="invalid-argument",
        hint="use auto, runc or chroot",
    )


def _reap_orphaned_sandboxes() -> None:
    """A mason killed together with its launcher guard leaves its container running (on its
    root's tmp/ mounts): remove such orphans, of any root, before the start-up cleanup. Live
    builds' containers are never touched (mason.executor.orphans)."""
    # runc keeps a directory per container in its state dir: none (the usual case) means
    # nothing to reap, known without importing the executor or running `runc list`
    try:
        with os.scandir(_RUNC_STATE) as entries:
            if not any(entry.is_dir(follow_symlinks=False) for entry in entries):
                return
    except OSError:
        return
    from mason.executor import reap_orphans

    reap_orphans(state_dir=_RUNC_STATE)


class _LazyEmulators:
    """``mason.executor.emulation.Emulators`` for the host, made when a RUN first asks (a
    fully cached build imports nothing of the executor)."""

    def __init__(self) -> None:
        self._emulators: Any = None
        self._lock = threading.Lock()

    def for_platform(self, platform: Platform) -> Any:
        with self._lock:
            if self._emulators is None:
                from mason.executor.emulation import Emulators

                self._emulators = Emulators(host_platform())
        return self._emulators.for_platform(platform)


class _LazyExecutor:
    """Picks (and probes) the sandbox only when the first RUN needs it: a fully cached
    build never starts runc."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._executor: Any = None
        self._lock = threading.Lock()

    def _made(self) -> Any:
        with self._lock:
            if self._executor is None:
                self._executor = self._factory()
            return self._executor

    def prestart(self, ahead: int = 1) -> None:
        """Let the sandbox prepare its next ``ahead`` runs (``RuncExecutor.prestart``); best
        effort: a sandbox that cannot be made fails the run itself, as before."""
        try:
            executor = self._made()
        except Exception:  # reported by run()
            return
        prestart = getattr(executor, "prestart", None)
        if prestart is not None:
            prestart(ahead)

    def run(self, spec: Any, on_output: Callable[[bytes], None], **kw: Any) -> Any:
        return self._made().run(spec, on_output, **kw)
