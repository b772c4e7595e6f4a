"""BuildKit v0.32.2's cache keys for mason's build steps (issue 12, docs/cache-keys.md).

``plan_llb`` turns the build plan into the LLB BuildKit's Dockerfile frontend makes of it;
each step vertex of ``engine.convert`` is matched to the op its command made there (by
stage and position, the op's kind checked). A matched step's key is then the chain key
of that op (``mason.llb.cachegraph``): its record digest with, per input, the input's
chain keys and the dep's selector, or the content root of the build-context files the
step reads. The solver looks a step up under these keys (``BuildKeys.rekey``) and the
cache exporter writes the records behind them with BuildKit's digests and input links
(``StepKeys.closure``), so one cache ref serves BuildKit and mason.

A step without a match (an op ``plan_llb`` does not model: a git source, a download not
pinned by ``--checksum``, a named context, mason's own run options) keeps mason's own
key (``mason.v1``), which no BuildKit record can equal: never a wrong hit.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from mason.digest import Digest
from mason.engine.context import DockerIgnore
from mason.engine.llbplan import LLBDefinition, RunDefaults
from mason.engine.ops import ExecOp, FileOp, MergeOp, SourceOp, StepResult
from mason.engine.state import LayerRef
from mason.errors import MasonError
from mason.fsroot import FsRoot
from mason.llb import pb
from mason.llb.cachegraph import chain_key, chain_keys
from mason.llb.cachemap import CacheMap, Selector, op_cache_map
from mason.llb.contenthash import ChecksumError, ContentTree, FileDigests
from mason.llb.keys import content_key, http_source_key, image_source_keys, record_digest
from mason.solver import CacheKey, DeferredKey, Vertex
from mason.structs import Struct, eq_without, field, replace

__all__ = ["BuildKeys", "PlatformKeys", "RecordNode", "StepKeys", "match_vertices", "plan_keys"]

_LOCAL = "local://"
_IMAGE = "docker-image://"


class RecordNode(Struct, frozen=True):
    """One record of BuildKit's cache graph: ``key`` names it among the exported records
    (its first chain key), ``digest`` is what BuildKit calls it, ``links`` per input index the
    alternatives ``(selector, linked record's key)``."""

    key: Digest
    digest: Digest
    links: tuple[tuple[tuple[str, Digest], ...], ...] = ()
    #: for a content root beside a step's inputs: the input index it is an alternative of
    index: int = -1


class StepKeys(Struct, frozen=True):
    """An op's chain keys (sorted), its own records (an image has two) and every record
    its own reach through their links, themselves included (what an export must write)."""

    chain: tuple[Digest, ...]
    own: tuple[RecordNode, ...]
    closure: Mapping[Digest, RecordNode]
    #: inputs BuildKit also links by the content checksum of another op's result:
    #: ``(input index, selectors, that op's LLB digest)``
    snapshot_inputs: tuple[tuple[int, tuple[Selector, ...], str], ...] = ()
    #: the content roots of those inputs, per input index, once computed after the solve
    #: (``BuildKeys.link_contents``) or carried over from an imported record
    content_links: dict[int, set[Digest]] = field(default_factory=dict)
    llb: str = ""

    __eq__, __hash__ = eq_without("content_links")

    def export_links(self, carried: Sequence[tuple[int, str]] = ()) -> list[RecordNode]:
        """The content roots to link beside the inputs' records: computed, and ``carried``
        (``(input index, root record digest)`` of the imported record this step hit)."""
        roots: dict[tuple[int, str], None] = {}
        for i, digests in sorted(self.content_links.items()):
            roots.update(dict.fromkeys((i, d) for d in sorted(digests)))
        roots.update(dict.fromkeys(carried))
        return [RecordNode(chain_key(d, []), Digest(d), (), i) for i, d in roots]


def _kind_matches(op: Any, llb: pb.Op) -> bool:
    if isinstance(op, ExecOp):
        return llb.exec is not None
    if isinstance(op, FileOp):
        return llb.file is not None
    if isinstance(op, MergeOp):  # a link on scratch is the copy itself
        return llb.merge is not None or llb.file is not None
    return False


def match_vertices(converted: Any, definition: LLBDefinition) -> dict[Vertex[StepResult], str]:
    """Each step vertex of ``converted`` (an ``engine.convert.ConvertedBuild``) whose op the
    same command made in ``definition``, as that op's digest; base images by manifest."""
    ops = definition.by_digest()
    bad = {
        i
        for i, cmds in converted.commands.items()
        if tuple(definition.commands.get(i, ())) != tuple(cmds)
    }
    out: dict[Vertex[StepResult], str] = {}
    for vertex, (stage, position, role) in converted.positions.items():
        table = definition.steps if role == "step" else definition.linked
        found = table.get((stage, position))
        if stage in bad or found is None or not _kind_matches(vertex.op, ops[found].op):
            continue
        out[vertex] = found
    images: dict[str, str] = {}
    for v in definition.vertices:
        src = v.op.source
        if src is not None and src.identifier.startswith(_IMAGE) and "@" in src.identifier:
            images.setdefault(src.identifier.rsplit("@", 1)[1], v.digest)
    for vertex in _reachable(converted.target.vertex):
        if isinstance(vertex.op, SourceOp) and vertex.op.manifest_digest in images:
            out[vertex] = images[vertex.op.manifest_digest]
    return out


def _reachable(root: Vertex[StepResult]) -> list[Vertex[StepResult]]:
    seen: dict[Vertex[StepResult], None] = {}
    stack = [root]
    while stack:
        v = stack.pop()
        if v not in seen:
            seen[v] = None
            stack.extend(v.inputs)
    return list(seen)


class BuildKeys:
    """The chain keys of one build's LLB ops, computed once each, inputs first, on demand.

    ``diff_ids`` gives each base image's layer diff IDs by manifest digest (its second key).
    The build context is hashed as BuildKit's client sends it (``ContentTree.for_context``,
    without what ``.dockerignore`` leaves out), each file once, whatever number of steps read it.
    """

    def __init__(
        self,
        definition: LLBDefinition,
        vertices: Mapping[Vertex[StepResult], str],
        *,
        context: Path,
        ignore: DockerIgnore,
        platform: pb.Platform,
        diff_ids: Mapping[str, Sequence[str]],
        view: View | None = None,
        digests: FileDigests | None = None,
    ) -> None:
        self._view = view
        self._digests = digests
        self._ops = definition.by_digest()
        self._of = dict(vertices)
        self._context = context
        self._ignore = ignore
        self._platform = platform
        self._diff_ids = diff_ids
        self._done: dict[str, StepKeys | None] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._tree: ContentTree | None = None

    def rekey(
        self,
        vertex: Vertex[StepResult],
        own_key: Callable[[], CacheKey],
        inputs: Sequence[CacheKey],
    ) -> CacheKey:
        """The solver's ``rekey``: a matched step's first chain key, all of them as
        alternatives, and its records for the exporter; any other step keeps its own key.
        A matched step's own key (mason's context checksum) is made only when read."""
        digest = self._of.get(vertex)
        try:
            keys = self.keys_of(digest) if digest is not None else None
        except ChecksumError:
            # a path BuildKit's checksum cannot read: mason's own key says what is wrong
            # (a COPY source not found...) or, if it can read it, keys the step alone
            return own_key()
        if keys is None:
            return own_key()
        downloads = self._pinned_downloads(keys)
        if downloads:
            key = own_key()  # it downloads what the links are computed from
            self._link_downloads(vertex, keys, downloads)
            return replace(key, digest=keys.chain[0], alternatives=keys.chain, export=keys)
        return DeferredKey.of(
            keys.chain[0],
            [i.digest for i in inputs],
            own_key,
            alternatives=keys.chain,
            export=keys,
        )

    def _pinned_downloads(self, keys: StepKeys) -> list[tuple[int, tuple[Selector, ...], pb.Op]]:
        """The step's inputs that are ``ADD --checksum URL`` downloads."""
        return [
            (i, selectors, op)
            for i, selectors, dep in keys.snapshot_inputs
            if (src := (op := self._ops[dep].op).source) is not None
            and src.identifier.startswith(("http://", "https://"))
            and _pinned(src.attrs)
        ]

    def _link_downloads(
        self,
        vertex: Vertex[StepResult],
        keys: StepKeys,
        downloads: Sequence[tuple[int, tuple[Selector, ...], pb.Op]],
    ) -> None:
        """The content root of an ``ADD --checksum URL`` download, which BuildKit links beside
        the HTTP source's record: the step's own key has just downloaded it (``FileOp``)."""
        files = getattr(vertex.op, "_url_files", None) or {}
        for i, selectors, op in downloads:
            src = op.source
            assert src is not None
            if src.identifier not in files:
                continue
            root = _download_root(files[src.identifier][0], src.attrs["http.filename"], selectors)
            if root is not None:
                keys.content_links.setdefault(i, set()).add(root)

    def matches(self, vertex: Vertex[StepResult]) -> bool:
        return vertex in self._of

    def close(self) -> None:
        if self._tree is not None:
            self._tree.close()

    def link_contents(self, graph: Any) -> None:
        """After the solve, before an export: the content roots of the checksummed inputs
        that are another step's result (``COPY --from``, a bind mount of a stage), which
        BuildKit links beside that step's record. Only results on this machine are read
        (executed, or a local hit): an imported one would have to be downloaded, and its
        consumer's imported record carries the root already (``StepResult.root_links``)."""
        view = self._view
        if view is None or graph is None:
            return
        by_llb: dict[str, Any] = {}
        for sv in graph.vertices:
            if isinstance(sv.key.export, StepKeys):
                by_llb.setdefault(sv.key.export.llb, sv)
        memo: dict[tuple[str, tuple[Selector, ...]], Digest | None] = {}
        for sv in graph.vertices:
            keys = sv.key.export
            if not isinstance(keys, StepKeys):
                continue
            for i, selectors, dep in keys.snapshot_inputs:
                if (dep, selectors) not in memo:
                    src = by_llb.get(dep)
                    memo[dep, selectors] = (
                        _root_of(src, selectors, view)
                        if src is not None
                        else _scratch_root(self._ops[dep].op, selectors)
                    )
                root = memo[dep, selectors]
                if root is not None:
                    keys.content_links.setdefault(i, set()).add(root)

    def keys_of(self, digest: str) -> StepKeys | None:
        with self._guard:
            lock = self._locks.setdefault(digest, threading.Lock())
        with lock:
            if digest not in self._done:
                keys = self._compute(self._ops[digest].op)
                self._done[digest] = replace(keys, llb=digest) if keys else None
            return self._done[digest]

    def _compute(self, op: pb.Op) -> StepKeys | None:
        if op.source is not None:
            return self._source(op)
        cm = op_cache_map(op, len(op.inputs), self._platform)
        if cm is None:
            return None
        alts: list[list[tuple[str, set[Digest]]]] = []
        links: list[tuple[tuple[str, Digest], ...]] = []
        closure: dict[Digest, RecordNode] = {}
        snapshots: list[tuple[int, tuple[Selector, ...], str]] = []
        for i, (inp, dep) in enumerate(zip(op.inputs, cm.deps, strict=True)):
            src = self._ops[inp.digest].op.source
            if src is not None and src.identifier.startswith(_LOCAL):
                if dep.content is None:
                    return None  # the context taken whole, unhashed: BuildKit's key is per session
                root = content_key(self._context_tree(), dep.content)
                node = RecordNode(chain_key(root.record, []), root.record)
                closure[node.key] = node
                alts.append([("", {node.key})])
                links.append((("", node.key),))
                continue
            keys = self.keys_of(inp.digest) if inp.index == 0 else None
            if keys is None:
                return None
            if dep.content is not None:
                snapshots.append((i, dep.content, inp.digest))
            # a checksummed input of another op is linked by its own key here (BuildKit's
            # exported record has this link beside the content root): no snapshot is read
            selector = dep.selector or ""
            alts.append([(selector, set(keys.chain))])
            links.append(tuple((selector, r.key) for r in keys.own))
            closure.update(keys.closure)
        record = record_digest(cm.digest, 0)
        chain = tuple(sorted(chain_keys(record, alts)))
        if not chain:
            return None
        own = RecordNode(chain[0], record, tuple(links))
        closure[own.key] = own
        return StepKeys(chain, (own,), closure, tuple(snapshots))

    def _source(self, op: pb.Op) -> StepKeys | None:
        src = op.source
        assert src is not None
        if src.identifier.startswith(_IMAGE) and "@" in src.identifier:
            manifest = src.identifier.rsplit("@", 1)[1]
            diff_ids = self._diff_ids.get(manifest)
            if not diff_ids:
                return None
            maps: tuple[CacheMap, ...] = image_source_keys(
                manifest, op.platform or self._platform, diff_ids
            )
        elif src.identifier.startswith(("http://", "https://")) and _pinned(src.attrs):
            maps = (http_source_key(src.attrs["http.filename"], src.attrs["http.checksum"]),)
        else:
            return None  # the context (read through content roots only), an unpinned download
        own = tuple(
            RecordNode(chain_key(r, []), r) for r in (record_digest(cm.digest, 0) for cm in maps)
        )
        return StepKeys(tuple(sorted(n.key for n in own)), own, {n.key: n for n in own})

    def _context_tree(self) -> ContentTree:
        with self._guard:
            if self._tree is None:
                ignore = self._ignore

                def excluded(rel: str, is_dir: bool) -> bool:
                    rel = rel.lstrip("/")
                    if not ignore.ignored(rel):
                        return False
                    return ignore.can_skip_dir(rel) if is_dir else True

                self._tree = ContentTree.for_context(
                    self._context,
                    excluded=None if ignore.empty else excluded,
                    digests=self._digests,
                )
            return self._tree


#: ``view(layers)``: a read-only rootfs of a result's layer chain (``Snapshotter.view``)
View = Callable[[Sequence[LayerRef]], AbstractContextManager[Path]]


def _root_of(src: Any, selectors: tuple[Selector, ...], view: View) -> Digest | None:
    """The content root record of ``src``'s result over ``selectors``, if it is local."""
    from mason.errors import MasonError
    from mason.solver import LOCAL_SOURCE, VertexState

    if src is None or src.result is None or any(isinstance(v.op, SourceOp) for v in src.vertices):
        return None
    local = src.state is VertexState.EXECUTED or (
        src.state is VertexState.CACHED and src.source == LOCAL_SOURCE
    )
    if not local:
        return None
    try:
        with view(src.result.layers) as path, ContentTree.for_snapshot(path) as tree:
            return content_key(tree, selectors).record
    except (OSError, MasonError):
        return None  # advisory: the export only lacks one alternative link


class PlatformKeys:
    """The keys of a build for several platforms: one ``BuildKeys`` per platform (None where
    ``plan_llb`` could not plan it); a vertex shared by two platforms (a ``--platform=
    $BUILDPLATFORM`` stage) is keyed by the first that matched it."""

    def __init__(self, per_platform: Sequence[BuildKeys | None]) -> None:
        self._keys = [k for k in per_platform if k is not None]

    def rekey(
        self,
        vertex: Vertex[StepResult],
        own_key: Callable[[], CacheKey],
        inputs: Sequence[CacheKey],
    ) -> CacheKey:
        for keys in self._keys:
            if keys.matches(vertex):
                return keys.rekey(vertex, own_key, inputs)
        return own_key()

    def link_contents(self, graph: Any) -> None:
        for keys in self._keys:
            keys.link_contents(graph)

    def close(self) -> None:
        for keys in self._keys:
            keys.close()


def _scratch_root(op: pb.Op, selectors: tuple[Selector, ...]) -> Digest | None:
    """The content root of a file op on scratch that mason runs inside another step (a
    ``RUN <<EOF`` heredoc's ``mkfile``): its files written to an empty directory, hashed."""
    import shutil
    import tempfile

    fop = op.file
    if fop is None or op.inputs or not fop.actions:
        return None
    actions = [a.action for a in fop.actions]
    if not all(
        isinstance(a, pb.FileActionMkFile | pb.FileActionMkDir) and a.owner is None for a in actions
    ):
        return None
    root = Path(tempfile.mkdtemp(prefix="mason-mkfile-"))
    try:
        with FsRoot(root) as fs:
            for a in actions:
                if isinstance(a, pb.FileActionMkFile):
                    fd = fs.open(a.path.lstrip("/"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as f:
                        f.write(a.data)
                        os.fchmod(f.fileno(), a.mode)
                elif isinstance(a, pb.FileActionMkDir):
                    path, _ = fs.mkdirs(a.path.lstrip("/"), mode=0o755)
                    os.chmod(path, a.mode)
        with ContentTree.for_snapshot(root) as tree:
            return content_key(tree, selectors).record
    except (OSError, ValueError, MasonError):
        return None  # advisory: the export only lacks one alternative link
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _download_root(path: Path, filename: str, selectors: tuple[Selector, ...]) -> Digest | None:
    """BuildKit's HTTP source result (one file, 0600, owned 0:0) over ``selectors``."""
    import shutil
    import tempfile

    if os.geteuid() != 0 or "/" in filename or filename in ("", ".", ".."):
        return None  # the result's owner is root: only root can make the same tree
    root = Path(tempfile.mkdtemp(prefix="mason-download-"))
    try:
        target = root / filename
        shutil.copyfile(path, target)
        os.chmod(target, 0o600)
        os.chown(target, 0, 0)
        with ContentTree.for_snapshot(root) as tree:
            return content_key(tree, selectors).record
    except (OSError, MasonError):
        return None  # advisory: the export only lacks one alternative link
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _pinned(attrs: Mapping[str, str]) -> bool:
    """A download BuildKit keys without fetching it: ``--checksum``, default mode and owner."""
    return (
        bool(attrs.get("http.checksum"))
        and "http.filename" in attrs
        and not any(k in attrs for k in ("http.perm", "http.uid", "http.gid"))
    )


def plan_keys(
    converted: Any,
    *,
    context: Path,
    ignore: DockerIgnore,
    platform: str,
    build_args: Mapping[str, str],
    view: View | None = None,
    digests: FileDigests | None = None,
    run_defaults: RunDefaults | None = None,
) -> BuildKeys | None:
    """The BuildKit keys of a converted build (``engine.convert.ConvertedBuild``), or None when
    ``plan_llb`` cannot plan it (then every step keeps mason's own key). ``digests``: the
    context files' digests kept from earlier builds (``mason.engine.filedigests``);
    ``run_defaults``: the command line's RUN options."""
    from mason.engine.llbplan import BaseImage, parse_platform, plan_llb

    images: dict[str, list[Any]] = {}
    for img in converted.images:
        images.setdefault(str(img.ref), []).append(img)

    def resolve(ref: str, platform: pb.Platform) -> BaseImage:
        img = _for_platform(images.get(ref, []), platform)
        if img is None:
            raise _Unplanned(ref)
        return BaseImage(img.manifest_digest, img.config)

    # the context source's attributes (.dockerignore patterns, session) enter no key: the
    # context is keyed by the content of what each step reads
    try:
        definition = plan_llb(
            converted.plan,
            resolve=resolve,
            platform=parse_platform(platform),
            build_args=build_args,
            follow_paths=False,
            run_defaults=run_defaults,
        )
    except (MasonError, _Unplanned):
        return None
    diff_ids = {
        img.manifest_digest: [
            str(d) for d in (img.config.get("rootfs") or {}).get("diff_ids") or ()
        ]
        for img in converted.images
    }
    return BuildKeys(
        definition,
        match_vertices(converted, definition),
        context=context,
        ignore=ignore,
        platform=parse_platform(platform),
        diff_ids=diff_ids,
        view=view,
        digests=digests,
    )


def _for_platform(candidates: Sequence[Any], platform: pb.Platform) -> Any:
    """The resolved image of a reference for ``platform`` (one reference may be resolved for
    the build platform and for a target platform): its config's os and architecture, the
    variant when both name one; None when that is not one image."""
    fits = [
        img
        for img in candidates
        if img.config.get("os", "linux") == platform.os
        and img.config.get("architecture") == platform.architecture
        and (
            not platform.variant or img.config.get("variant", platform.variant) == platform.variant
        )
    ]
    return fits[0] if len({i.manifest_digest for i in fits}) == 1 else None


class _Unplanned(Exception):
    """A base image the build did not resolve (plan_llb asked for another reference)."""
