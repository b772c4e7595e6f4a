"""Adapters between the builder and ``mason.cache``: imported caches as solver
sources (lazy: a hit registers where its blobs are, downloads nothing), the
content store as the exporter's ``ExportBlobStore``, solved vertices as
``SolvedRecord``s, and inline cache metadata for the image config.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, BinaryIO

from mason.cache.backends import backend_of
from mason.cache.blobcheck import MAGIC_BYTES, compression_mismatch
from mason.cache.format import ZERO_TIME
from mason.cache.model import ANNOTATION_CREATED_AT, DISTRIBUTION_SOURCE_PREFIX
from mason.digest import Digest
from mason.engine.blobs import Blobs, RemoteLocation
from mason.engine.explain import exported_inputs
from mason.engine.llbkeys import RecordNode, StepKeys
from mason.engine.ops import SourceOp, StepResult
from mason.engine.state import LayerRef
from mason.errors import MasonError
from mason.futures import Future, in_daemon_thread
from mason.oci.descriptor import ANNOTATION_UNCOMPRESSED, Descriptor
from mason.oci.errors import InvalidReferenceError
from mason.oci.reference import Reference
from mason.progress import Event, ProgressSink
from mason.solver import CacheKey, CacheSource, SolvedGraph, Vertex

if TYPE_CHECKING:
    from mason.cache.model import CacheHit, CacheRegistry, ExportResult, SolvedRecord
    from mason.cache.model import CacheSource as ImportedCache
    from mason.cache.options import CacheOptions
    from mason.engine.cachemounts import CacheMounts
    from mason.engine.convert import ConvertedBuild

__all__ = [
    "CacheBlobStore",
    "HitLookup",
    "export_caches",
    "finished_chain",
    "import_caches",
    "inline_cache_extra",
    "solved_records",
]

#: Records of steps that made no layer of their own (FROM) carry this fixed time, so a
#: re-export of an unchanged build writes the same bytes.
_EPOCH = "1970-01-01T00:00:00Z"
_NO_TIME = ("", ZERO_TIME, _EPOCH)


def _emit_task(
    sink: ProgressSink, name: str, status: str, text: str = "", elapsed: float | None = None
) -> None:
    sink.emit(Event(f"task:{name}", name, status, text, elapsed))  # type: ignore[arg-type]


class HitLookup:
    """A ``mason.cache.CacheSource`` as the solver's ``CacheLookup[StepResult]``.

    A hit is checked before the solver may take it: each layer blob the build does not hold
    yet must still be in the cache (one ranged read of its first bytes: ``CacheSource.check_blob``,
    as BuildKit checks that a remote cache's blobs exist when it resolves it) and start the way
    its media type says; a blob the build holds is checked from the content store, and a diff ID
    the build already knows for the blob (a base image's) must match. A hit that fails is a
    miss with one warning naming the step and the blob: the step runs. Nothing is downloaded."""

    def __init__(
        self, source: ImportedCache, blobs: Blobs, warn: Callable[[str], None] | None = None
    ) -> None:
        self.source = source
        self.blobs = blobs
        self._warn = warn or (lambda _text: None)
        self._checked: dict[Digest, str | None] = {}

    def lookup(self, key: CacheKey) -> StepResult | None:
        hit = next(filter(None, map(self.source.lookup, key.lookup_digests)), None)
        if hit is None:
            return None
        problem = next(filter(None, map(self._problem, hit.layers)), None)
        if problem is not None:
            self._warn(
                f"cache hit for {hit.step or key.digest} from {hit.source} not used, the step runs "
                f"instead: {problem}"
            )
            return None
        return self._result(hit)

    def _problem(self, desc: Descriptor) -> str | None:
        if desc.digest not in self._checked:
            self._checked[desc.digest] = self._check(desc)
        return self._checked[desc.digest]

    def _check(self, desc: Descriptor) -> str | None:
        claimed = desc.annotations[ANNOTATION_UNCOMPRESSED]
        known = self.blobs.known_diff_id(desc.digest)
        if known is not None and known != claimed:
            return f"blob {desc.digest}: the cache gives diff ID {claimed}, this build knows it as {known}"
        head = self.blobs.peek_local(desc.digest, MAGIC_BYTES)
        if head is None:
            reason: str | None = self.source.check_blob(desc)
            return reason
        mismatch = compression_mismatch(desc.media_type, head)
        return f"blob {desc.digest}: {mismatch}" if mismatch else None

    def _result(self, hit: CacheHit) -> StepResult:
        layers: list[LayerRef] = []
        created: list[str] = []
        for desc in hit.layers:
            diff_id = Digest(desc.annotations[ANNOTATION_UNCOMPRESSED])
            locations = _distribution_sources(desc)

            def opener(
                hit: CacheHit = hit, desc: Descriptor = desc
            ) -> AbstractContextManager[BinaryIO]:
                return hit.open_blob(desc)

            # The annotations travel with the location: an eStargz layer's TOC digest and size
            # let it count (and be re-exported) as eStargz without a download, and are what
            # its download is verified against.
            annotations = dict(desc.annotations)
            self.blobs.add_remote(
                desc.digest,
                diff_id,
                RemoteLocation(
                    locations[0] if locations else None,
                    desc.media_type,
                    desc.size,
                    opener,
                    annotations,
                ),
            )
            for ref in locations[1:]:
                self.blobs.add_remote(
                    desc.digest,
                    diff_id,
                    RemoteLocation(ref, desc.media_type, desc.size, annotations=annotations),
                )
            layers.append(LayerRef(diff_id, desc.digest, desc.size, desc.media_type))
            created.append(desc.annotations.get(ANNOTATION_CREATED_AT, ""))
        if created and not created[-1]:
            created[-1] = "" if hit.created_at in _NO_TIME else hit.created_at
        return StepResult(
            tuple(layers), tuple(created), source=hit.source, root_links=hit.root_links
        )


def _distribution_sources(desc: Descriptor) -> list[Reference]:
    """The repositories ``containerd.io/distribution.source.<host>=<repo>[,<repo>...]`` names."""
    found = []
    for key, value in desc.annotations.items():
        if key.startswith(DISTRIBUTION_SOURCE_PREFIX):
            host = key[len(DISTRIBUTION_SOURCE_PREFIX) :]
            for repo in filter(None, (r.strip() for r in value.split(","))):
                try:
                    found.append(Reference.parse(f"{host}/{repo}"))
                except InvalidReferenceError:
                    continue  # a hint naming no valid repository is only a lost mount
    return found


def import_caches(
    cache_from: Sequence[CacheOptions],
    client: CacheRegistry | None,
    blobs: Blobs,
    sink: ProgressSink,
) -> tuple[list[CacheSource[StepResult]], dict[str, ImportedCache]]:
    """Load every ``--cache-from`` (documents only). A failed import is one warning."""
    from mason.cache import load_cache_source

    sources: list[CacheSource[StepResult]] = []
    imported: dict[str, ImportedCache] = {}
    for opt in cache_from:
        name = f"importing cache manifest from {opt.display_name.split(' ', 1)[-1]}"
        _emit_task(sink, name, "started")
        src = load_cache_source(opt, client)
        if src.missing:  # a first build: one quiet line, no WARNING, no ERROR
            _emit_task(sink, name, "log", src.missing)
            _emit_task(sink, name, "done")
            continue
        if src.warning:
            # the reason once (WARNING), then BuildKit's ERROR status for the vertex (the build goes on)
            _emit_task(sink, name, "warning", src.warning)
            _emit_task(sink, name, "error", "cache not imported; the build goes on without it")
            continue
        for notice in src.notices:  # e.g. layers of unknown media types: those results are not used
            _emit_task(sink, name, "warning", notice)
        _emit_task(sink, name, "done")
        imported[_dest_key(opt)] = src

        def warn(text: str, name: str = name) -> None:
            _emit_task(sink, name, "warning", text)

        sources.append(CacheSource(src.name, HitLookup(src, blobs, warn)))
    return sources, imported


def read_export_priors(
    cache_to: Sequence[CacheOptions],
    cache_from: Sequence[CacheOptions],
    client: CacheRegistry | None,
) -> dict[str, Future[ImportedCache]]:
    """Start reading, in the background, what each registry ``--cache-to`` ref holds now, when
    no ``--cache-from`` of the same ref reads it (issue 14: the export then finds its prior
    read instead of reading it on its own critical path). A read that is stale by the time of
    the export costs nothing: a merging export checks the ref by a ``HEAD`` just before its
    ``PUT`` and reads it again when it changed, as it does after its own read."""
    from mason.cache.registry import load_registry_cache

    imported = {_dest_key(o) for o in cache_from}
    return {
        _dest_key(opt): in_daemon_thread("cache-prior", load_registry_cache, client, opt.ref)
        for opt in cache_to
        if client is not None
        and opt.type == "registry"
        and opt.ref is not None
        and _dest_key(opt) not in imported
    }


def _prior(
    opt: CacheOptions,
    imported: dict[str, ImportedCache],
    priors: Mapping[str, Future[ImportedCache]],
) -> ImportedCache | None:
    """What the build read of ``opt``'s destination: its import, or its prior read early
    (None: the export reads it, also after an early read that failed)."""
    key = _dest_key(opt)
    if key in imported:
        return imported[key]
    future = priors.get(key)
    if future is None or future.exception() is not None:
        return None  # the export reads the ref itself and reports what fails
    prior = future.result()
    return None if prior.warning else prior


def _dest_key(opt: CacheOptions) -> str:
    """Where a cache is: an import and an export of the same place share this key (the export
    then knows what the import read). A registry cache has a ref, a local one a path."""
    return f"{opt.type}:{opt.ref if opt.ref is not None else opt.path}"


class CacheBlobStore:
    """The content store as ``mason.cache.ExportBlobStore``."""

    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs
        #: the layer descriptors ``cache_blob`` chose, by digest (what an export may store)
        self.returned: dict[Digest, Descriptor] = {}
        self._lock = threading.Lock()

    def note_stored(self, ref: Reference, digests: Sequence[Digest]) -> None:
        """After an export to ``ref``: its repository holds these layer blobs now."""
        for digest in digests:
            desc = self.returned.get(digest)
            if desc is not None:
                self.blobs.note_stored(digest, ref, desc.media_type, desc.size)

    @staticmethod
    def _ref(desc: Descriptor) -> LayerRef:
        return LayerRef(
            Digest(desc.annotations[ANNOTATION_UNCOMPRESSED]),
            desc.digest,
            desc.size,
            desc.media_type,
        )

    def cache_blob(
        self, layer: Descriptor, compression: str, level: int | None, force: bool
    ) -> Descriptor:
        # which blob to ship is Blobs.export_variant's rule (shared with image outputs); the
        # descriptor names every repository known to hold that blob, for cross-repo mounts
        lr = self.blobs.export_variant(self._ref(layer), compression, level, force)
        out = (
            layer if lr.blob == layer.digest else self.blobs.descriptor(lr, oci=True, annotate=True)
        )
        assert lr.blob is not None
        hints = self.blobs.mount_hints(lr.blob)
        out = out.with_annotations(hints) if hints else out
        with self._lock:
            self.returned[out.digest] = out
        return out

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        return self.blobs.opener(self._ref(desc))()


def solved_records(graph: SolvedGraph[StepResult], blobs: Blobs) -> list[SolvedRecord]:
    from mason.cache.model import SolvedRecord

    records = []
    linked: dict[Digest, SolvedRecord] = {}
    # a layer is in the result of every step built on it: described once (metadata queries)
    describe = functools.cache(functools.partial(_annotated, blobs))
    for sv in graph.vertices:
        layers = None
        created = None
        source = any(isinstance(v.op, SourceOp) for v in sv.vertices)
        if sv.has_result and sv.result is not None:
            res: StepResult = sv.result
            layers = tuple(describe(lr) for lr in res.layers)
            # each layer's createdAt is derived from the record that made it (cache.plan_export)
            complete = bool(res.created) and len(res.created) == len(res.layers)
            created = res.created[-1] if complete and res.created[-1] else _EPOCH
            if source:
                # a base image's layers are not this build's: no time of ours, whether FROM ran
                # (no times) or came from an inline cache (its image history's times), so a cold
                # and a cache-imported build write the same record and the same image
                created = _EPOCH
        explain = exported_inputs(sv.key, sv.vertices[0].op)
        keys = sv.key.export
        if isinstance(keys, StepKeys):
            carried = sv.result.root_links if sv.has_result and sv.result is not None else ()
            width = len(keys.own[0].links)
            roots = [r for r in keys.export_links(carried) if r.index < width]
            records.extend(_buildkit_records(keys, layers, sv.name, created, explain, roots))
            for node in [*keys.closure.values(), *roots]:
                linked.setdefault(
                    node.key, SolvedRecord(node.key, digest=node.digest, links=node.links)
                )
            continue
        records.append(
            SolvedRecord(
                key=sv.key.digest,
                inputs=tuple(sv.key.inputs),
                layers=layers,
                step=sv.name or None,
                created_at=created,
                explain=explain,
            )
        )
    # records only linked to (content roots, ops mason runs inside a step), after the steps'
    # own: the exporter keeps the first record of each key
    return records + list(linked.values())


def _buildkit_records(
    keys: StepKeys,
    layers: tuple[Descriptor, ...] | None,
    name: str,
    created: str | None,
    explain: dict[str, object],
    roots: Sequence[RecordNode] = (),
) -> list[SolvedRecord]:
    """A step keyed as BuildKit keys it: its own records under BuildKit's digests and links,
    the first with the result."""
    from mason.cache.model import SolvedRecord

    out = []
    for i, node in enumerate(keys.own):
        links = node.links
        if i == 0 and roots:  # each content root is one more alternative of its input
            extra = [tuple(("", r.key) for r in roots if r.index == j) for j in range(len(links))]
            links = tuple(
                tuple(dict.fromkeys(own + more)) for own, more in zip(links, extra, strict=True)
            )
        out.append(
            SolvedRecord(
                key=node.key,
                digest=node.digest,
                links=links,
                layers=layers if i == 0 else None,
                step=name or None,
                created_at=created,
                explain=explain if i == 0 else None,
            )
        )
    return out


def _annotated(blobs: Blobs, lr: LayerRef) -> Descriptor:
    desc = blobs.descriptor(lr, oci=True, annotate=True)
    assert lr.blob is not None
    extra = blobs.mount_hints(lr.blob)
    return desc.with_annotations(extra) if extra else desc


def inline_cache_extra(
    cache_to: Sequence[CacheOptions],
    graph: SolvedGraph[StepResult],
    converted: ConvertedBuild,
    blobs: Blobs,
) -> dict[str, str] | None:
    """``{"moby.buildkit.cache.v0": ...}`` for ``--cache-to type=inline`` (min mode records)."""
    if not any(backend_of(o).in_image for o in cache_to):
        return None
    from mason.cache.inline import INLINE_CACHE_KEY, inline_cache_value

    result: StepResult = graph.result_of(converted.target.vertex)
    value = inline_cache_value(solved_records(graph, blobs), [lr.diff_id for lr in result.layers])
    return {INLINE_CACHE_KEY: value} if value else None


def finished_chain(graph: SolvedGraph[StepResult], vertex: Vertex[StepResult]) -> list[Digest]:
    """The diff IDs of the last step of ``vertex``'s stage that finished (executed or cached):
    the target's own layers after a successful solve; after a failed one, the chain the
    target stage had reached (a step's parent filesystem is its first input)."""
    while True:
        solved = graph.get(vertex)
        if solved.has_result and solved.result is not None:
            return [lr.diff_id for lr in solved.result.layers]
        if not vertex.inputs:
            return []
        vertex = vertex.inputs[0]


def _report_export(
    sink: ProgressSink,
    vid: str,
    name: str,
    opt: CacheOptions,
    res: ExportResult,
    store: CacheBlobStore,
    t0: float,
) -> None:
    """The export's lines in BuildKit's shape, then mason's own; where the blobs went is kept
    (a registry: later pushes may mount from there)."""
    if res.warning:
        sink.emit(Event(vid, name, "warning", res.warning))
        return
    if opt.ref is not None:
        store.note_stored(opt.ref, [*res.uploaded, *res.mounted, *res.existing])
    for digest in sorted({*res.uploaded, *res.mounted, *res.existing}):
        sink.emit(Event(vid, name, "log", f"writing layer {digest} done"))
    elapsed = time.monotonic() - t0
    sink.emit(Event(vid, name, "log", f"preparing build cache for export {elapsed:.1f}s done"))
    if res.manifest is not None:
        sink.emit(Event(vid, name, "log", f"writing manifest {res.manifest.digest} done"))
        moved = (
            f"exported to {opt.display_name}: {len(res.uploaded)} uploaded, "
            f"{len(res.mounted)} mounted, {len(res.existing)} already there"
        )
        sink.emit(Event(vid, name, "log", moved))


def export_caches(
    cache_to: Sequence[CacheOptions],
    graph: SolvedGraph[StepResult],
    converted: ConvertedBuild | Sequence[ConvertedBuild],
    blobs: Blobs,
    client: CacheRegistry | None,
    sink: ProgressSink,
    imported: dict[str, ImportedCache],
    *,
    best_effort: bool = False,
    cache_mounts: CacheMounts | None = None,
    priors: Mapping[str, Future[ImportedCache]] | None = None,
    written: Callable[[], None] | None = None,
) -> list[ExportResult]:
    """Export every registry/local ``--cache-to``; failures raise unless ignore-error.
    ``cache_mounts``: the build's cache mounts, stored by the exports with ``cache-mounts=true``.
    ``priors``: the destinations' caches read early (``read_export_priors``). ``written``:
    called when a registry export has put its manifest, before it waits to read it back.

    ``converted``: the build of each platform (min mode keeps the chains of all their images).
    ``best_effort`` (export on a failed build): the graph may be partly solved, min mode
    keeps the target stage's finished chain, and a failing export is a warning on its vertex
    (the build's own error is what the user must see)."""
    from mason.cache import export_cache

    records = solved_records(graph, blobs)
    builds = list(converted) if isinstance(converted, Sequence) else [converted]
    # one chain per platform's image: min mode keeps what any of them is made of
    image_diff_ids = [finished_chain(graph, c.target.vertex) for c in builds]
    store = CacheBlobStore(blobs)
    mounts = (
        cache_mounts.layers(blobs)
        if cache_mounts is not None and any(o.cache_mounts for o in cache_to)
        else {}
    )
    results = []
    for opt in cache_to:
        kind = backend_of(opt)
        if kind.in_image:
            continue  # written into the image config by the image exporter (inline_cache_extra)
        # BuildKit's vertex names and lines, so log readers see the same shape; the
        # destination and what moved are mason's own extra lines
        name = "exporting cache to " + kind.progress_name
        vid = f"task:cache-export:{opt.display_name}"
        sink.emit(Event(vid, name, "started"))
        sink.emit(Event(vid, name, "log", "preparing build cache for export"))
        t0 = time.monotonic()
        try:
            res = export_cache(
                opt,
                records,
                blobs=store,
                image_diff_ids=image_diff_ids,
                client=client,
                prior=_prior(opt, imported, priors or {}),
                cache_mounts=mounts if opt.cache_mounts else None,
                written=written,
            )
        except Exception as exc:
            if not best_effort:
                raise
            # any failure (a registry error, a blob gone from the store) only costs the cache
            text = str(exc) if isinstance(exc, MasonError) else f"{type(exc).__name__}: {exc}"
            sink.emit(
                Event(vid, name, "warning", f"cache not exported after the failed build: {text}")
            )
            sink.emit(Event(vid, name, "done", elapsed=time.monotonic() - t0))
            continue
        _report_export(sink, vid, name, opt, res, store, t0)
        sink.emit(Event(vid, name, "done", elapsed=time.monotonic() - t0))
        results.append(res)
    return results
