"""The builder-facing cache model: imported sources with key lookup, and solved records to export.

Key scheme. The builder's solver computes full content-addressed step keys that
already include the keys of their inputs (docs/architecture.md §4). mason writes each key
as a record whose ``digest`` *is* that key, with ``inputs`` links to the records
of the input keys (for format fidelity; lookup never walks them). A lookup is
therefore one dict access: ``CacheSource.lookup(key)``. Records in a cache that
BuildKit wrote parse fine but never match a mason key.

Descriptors handed out by a ``CacheHit`` carry ``containerd.io/uncompressed``
(the diff ID) and, for registry sources, ``containerd.io/distribution.source.<host>``
naming the cache repository, so an image push to the same registry can mount the
blob instead of downloading it (BuildKit's convention).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import BinaryIO, Literal, Protocol

from mason.cache.blobcheck import MAGIC_BYTES, compression_mismatch, known_layer_compression
from mason.cache.format import (
    ZERO_TIME,
    CacheConfig,
    CacheInput,
    CacheLayer,
    CacheRecord,
    CacheResult,
    normalize_cache_config,
    rfc3339_nano,
    serialize_cache_config,
)
from mason.compression.annotations import ANNOTATION_TOC_DIGEST, ANNOTATION_UNCOMPRESSED_SIZE
from mason.digest import Digest
from mason.errors import DiagnosticError
from mason.futures import Future
from mason.oci import mediatypes as mt
from mason.oci.descriptor import ANNOTATION_UNCOMPRESSED, DISTRIBUTION_SOURCE_PREFIX, Descriptor
from mason.oci.manifest import ImageIndex, ImageManifest
from mason.oci.reference import Reference
from mason.structs import Struct, eq_without, field, repr_without

__all__ = [
    "ANNOTATION_CREATED_AT",
    "DISTRIBUTION_SOURCE_PREFIX",
    "KEPT_LAYER_ANNOTATIONS",
    "BlobProvider",
    "CacheExportError",
    "CacheHit",
    "CacheRegistry",
    "CacheSource",
    "ExportBlobStore",
    "ExportPlan",
    "ExportResult",
    "SolvedRecord",
    "diff_id_of",
    "first_hit",
    "index_records",
    "input_links",
    "plan_export",
]

ANNOTATION_CREATED_AT = "buildkit/createdat"
#: Layer annotations written into cache manifests. Distribution-source hints are dropped so
#: that a warm re-export (whose layers came from an import) is byte-identical to the cold one.
KEPT_LAYER_ANNOTATIONS = (
    ANNOTATION_UNCOMPRESSED,
    ANNOTATION_CREATED_AT,
    ANNOTATION_TOC_DIGEST,
    ANNOTATION_UNCOMPRESSED_SIZE,
)


class CacheExportError(DiagnosticError):
    reference = "cache-export-failed"


def diff_id_of(desc: Descriptor) -> Digest | None:
    value = desc.annotations.get(ANNOTATION_UNCOMPRESSED)
    return Digest(value) if value else None


class BlobProvider(Protocol):
    """Opens a blob of an imported cache (lazily: only when a hit is materialised)."""

    def open_blob(self, desc: Descriptor) -> AbstractContextManager[BinaryIO]: ...

    def peek_blob(self, desc: Descriptor, n: int) -> bytes | None:
        """The blob's first ``n`` bytes (fewer for a shorter blob), or ``None`` when the blob is
        not there; one small read, never the whole blob."""
        ...


# --------------------------------------------------------------------------- import side


class CacheHit(Struct, frozen=True):
    """A record with a usable result in an imported cache."""

    key: Digest
    #: The layer chain, base first. Each has ``containerd.io/uncompressed``.
    layers: tuple[Descriptor, ...]
    created_at: str
    #: Display name of the source that served the hit, e.g. ``registry 127.0.0.1:5000/app-cache:latest``.
    source: str
    #: The Dockerfile step that wrote it, when mason wrote the cache.
    step: str | None
    provider: BlobProvider
    #: the record's links to root records (no inputs, no result: BuildKit's content roots)
    #: as ``(input index, linked digest)``
    root_links: tuple[tuple[int, str], ...] = ()

    __repr__ = repr_without("provider")
    __eq__, __hash__ = eq_without("provider")

    @property
    def diff_ids(self) -> tuple[Digest, ...]:
        return tuple(Digest(d.annotations[ANNOTATION_UNCOMPRESSED]) for d in self.layers)

    def open_blob(self, desc: Descriptor) -> AbstractContextManager[BinaryIO]:
        """A stream of the compressed blob, verified against its digest and size as it is read
        (downloads now, not at import). An eStargz layer's TOC and chunks are checked against
        its annotations where the blob is stored (``mason.engine.blobs``), once, not here."""
        return self.provider.open_blob(desc)


class _NoBlobs:
    def open_blob(self, desc: Descriptor) -> AbstractContextManager[BinaryIO]:
        raise CacheExportError(f"blob {desc.digest} is not available from an empty cache source")

    def peek_blob(self, desc: Descriptor, n: int) -> bytes | None:
        return None


class CacheSource:
    """An imported cache: records in memory, blobs fetched on demand.

    A source whose import failed is empty and carries ``warning`` (one line the CLI prints);
    lookups on it return ``None``. A source with nothing stored at its ref yet (a first build)
    is empty too, and carries ``missing`` instead: a quiet note, not a warning.
    """

    def __init__(
        self,
        name: str,
        config: CacheConfig | None = None,
        descriptors: Mapping[Digest, Descriptor] | None = None,
        provider: BlobProvider | None = None,
        *,
        warning: str | None = None,
        missing: str | None = None,
        manifest: Descriptor | None = None,
        form: str = "",
        config_descriptor: Descriptor | None = None,
        blob_annotations: Mapping[str, str] | None = None,
        origin: str | None = None,
        mounts: Mapping[str, Descriptor] | None = None,
    ) -> None:
        self.name = name
        #: ``RUN --mount=type=cache`` contents stored with the cache: mount id -> its layer
        self.mounts: dict[str, Descriptor] = dict(mounts or {})
        #: Where it was read from: the registry ref string or the local directory (an
        #: exporter to the same place trusts ``known_blobs`` and ``createdAt`` from it).
        self.origin = origin
        self.config = config or CacheConfig()
        self.descriptors: dict[Digest, Descriptor] = dict(descriptors or {})
        self.provider: BlobProvider = provider or _NoBlobs()
        self.warning = warning
        #: "no cache at REF yet" when nothing is stored there (not an error: the first build).
        self.missing = missing
        #: Descriptor of the top-level document that was read (None when the import failed).
        self.manifest = manifest
        #: "image-manifest", "index", "inline" or "" (empty source).
        self.form = form
        self.config_descriptor = config_descriptor
        self._extra = dict(blob_annotations or {})
        self._by_key: dict[str, list[int]] = {}
        for i, rec in enumerate(self.config.records):
            self._by_key.setdefault(rec.digest, []).append(i)
        for i, keys in enumerate(_chain_keys(self.config)):
            for key in keys:
                self._by_key.setdefault(key, []).append(i)
        #: Layer blobs no hit may use, with the reason: an unknown media type makes every
        #: result whose chain holds the blob unusable, and only those.
        self.unusable: dict[Digest, str] = {
            digest: f"media type {desc.media_type!r} is not a layer type mason can unpack"
            for digest, desc in self.descriptors.items()
            if desc.media_type != mt.BUILDKIT_CACHE_CONFIG
            and known_layer_compression(desc.media_type) is None
        }
        self._checked: dict[Digest, Future[str | None]] = {}
        self._check_lock = threading.Lock()

    @property
    def notices(self) -> list[str]:
        """Warnings about an import that worked: one line for the layers no result can use."""
        if not self.unusable:
            return []
        listed = ", ".join(f"{d} ({why})" for d, why in sorted(self.unusable.items())[:3])
        more = f" and {len(self.unusable) - 3} more" if len(self.unusable) > 3 else ""
        return [
            f"cache {self.name}: {len(self.unusable)} layer blob(s) cannot be used: {listed}{more}; "
            "the results built on them are not used, the rest of the cache is"
        ]

    def check_blob(self, desc: Descriptor) -> str | None:
        """Why the blob of ``desc`` cannot serve a hit now, or ``None``: it must still be where the
        cache is (a hit whose blob is gone is a miss, not a failed push) and start the way its
        media type says. One small ranged read per blob, remembered for the source's lifetime:
        the solver asks for every step at once, and steps whose hits share a blob ask together
        (a caller asking while another thread reads waits for that read; if that one failed,
        the caller reads again itself, and raises its own error)."""
        while True:
            with self._check_lock:
                pending = self._checked.get(desc.digest)
                mine = pending is None
                if pending is None:
                    pending = self._checked[desc.digest] = Future()
            if not mine:
                with contextlib.suppress(Exception):
                    return pending.result()
                continue
            try:
                reason = self._check_now(desc)
            except BaseException as exc:
                with self._check_lock:
                    del self._checked[desc.digest]
                pending.set_exception(exc)
                raise
            pending.set_result(reason)
            return reason

    def _check_now(self, desc: Descriptor) -> str | None:
        reason = self.unusable.get(desc.digest)
        if reason is None:
            head = self.provider.peek_blob(desc, MAGIC_BYTES)
            if head is None:
                reason = f"blob {desc.digest} is missing from {self.origin or self.name}"
            else:
                mismatch = compression_mismatch(desc.media_type, head)
                reason = f"blob {desc.digest}: {mismatch}" if mismatch else None
        return reason

    @classmethod
    def empty(
        cls,
        name: str,
        warning: str | None = None,
        *,
        origin: str | None = None,
        missing: str | None = None,
    ) -> CacheSource:
        return cls(name, warning=warning, missing=missing, origin=origin)

    def __repr__(self) -> str:
        return f"CacheSource({self.name!r}, records={len(self.config.records)}, warning={self.warning!r})"

    @property
    def known_blobs(self) -> frozenset[Digest]:
        """Blobs the source's document references (known to exist where it is stored)."""
        extra = {self.config_descriptor.digest} if self.config_descriptor else set()
        return frozenset(self.descriptors) | extra

    def _chain(self, rec: CacheRecord) -> tuple[tuple[int, ...], str] | None:
        if rec.results:
            best = max(rec.results, key=lambda r: r.created_at)
            return self.config.chain(best.layer), best.created_at
        if rec.chains:
            best_chain = max(rec.chains, key=lambda c: c.created_at)
            return best_chain.layers, best_chain.created_at
        return None

    def _layer_descs(self, indexes: Sequence[int]) -> tuple[Descriptor, ...] | None:
        out = []
        for index in indexes:
            desc = self.descriptors.get(self.config.layers[index].blob)
            # BuildKit drops results whose blobs have no descriptor or no diff ID; so do we,
            # and results on a blob of a type mason cannot unpack.
            if (
                desc is None
                or not desc.annotations.get(ANNOTATION_UNCOMPRESSED)
                or desc.digest in self.unusable
            ):
                return None
            out.append(desc.with_annotations(self._extra) if self._extra else desc)
        return tuple(out)

    def lookup(self, key: Digest | str) -> CacheHit | None:
        """The hit for ``key`` (a record with a usable result), or ``None``."""
        for index in self._by_key.get(key, ()):
            rec = self.config.records[index]
            found = self._chain(rec)
            if found is None:
                continue
            layers = self._layer_descs(found[0])
            if layers is None:
                continue
            step = self.config.steps.get(rec.digest)
            roots = self._root_links(rec)
            return CacheHit(Digest(key), layers, found[1], self.name, step, self.provider, roots)
        return None

    def _root_links(self, rec: CacheRecord) -> tuple[tuple[int, str], ...]:
        records = self.config.records
        return tuple(
            (i, records[alt.link].digest)
            for i, alts in enumerate(rec.inputs)
            for alt in alts
            if not alt.selector
            and not records[alt.link].inputs
            and not records[alt.link].has_result
        )

    def created_at_for(self, key: Digest | str, diff_ids: Sequence[Digest]) -> str | None:
        """The ``createdAt`` this source recorded for ``key`` with the same layer content, so a
        re-export of an unchanged result writes identical bytes."""
        hit = self.lookup(key)
        if hit is not None and hit.diff_ids == tuple(diff_ids):
            return hit.created_at
        return None

    def layer_created_at(self, blob: Digest) -> str | None:
        desc = self.descriptors.get(blob)
        return desc.annotations.get(ANNOTATION_CREATED_AT) if desc else None


def _chain_keys(config: CacheConfig) -> list[set[Digest]]:
    """Every record's chain keys (``mason.llb.cachegraph``: its digest with its inputs), what a
    step keyed as BuildKit keys it is looked up by. A config whose links do not form a graph
    gives none: its records are then found by digest only (mason's older keys)."""
    from mason.llb.cachegraph import CacheGraphError, record_chain_keys

    doc = {
        "records": [
            {
                "digest": rec.digest,
                "inputs": [
                    [{"link": a.link, "selector": a.selector} for a in alts] for alts in rec.inputs
                ],
            }
            for rec in config.records
        ]
    }
    try:
        return record_chain_keys(doc)
    except CacheGraphError:
        return [set() for _ in config.records]


def first_hit(sources: Iterable[CacheSource], key: Digest | str) -> CacheHit | None:
    """Several ``--cache-from``: the first source (in command-line order) with a hit wins."""
    for source in sources:
        hit = source.lookup(key)
        if hit is not None:
            return hit
    return None


# --------------------------------------------------------------------------- export side


class SolvedRecord(Struct, frozen=True):
    """One step the solver settled (ran, or got from a cache), as the exporter needs it.

    ``key`` is the step's full cache key; ``inputs[i]`` the key of its input ``i``
    (``selectors[i]`` an optional selector for that link). ``layers`` is the result's whole
    layer chain, base first (compressed descriptors with ``containerd.io/uncompressed``), or
    ``None`` for a step without a filesystem result. ``step`` names the Dockerfile step
    (``[build 2/4] RUN make``) for ``mason cache inspect``. ``created_at`` (RFC 3339) is when
    the result was first made, if the builder knows it: for a cache hit pass ``hit.created_at``
    and ``hit.layers`` as they are, so a re-export of an imported result writes the same bytes.
    """

    key: Digest
    inputs: tuple[Digest, ...] = ()
    layers: tuple[Descriptor, ...] | None = None
    step: str | None = None
    created_at: str | None = None
    selectors: tuple[str, ...] = ()
    #: the digest the record is written under when it is not ``key`` (BuildKit's record
    #: digest; ``key`` then only tells records apart: the same op over other inputs)
    digest: Digest | None = None
    #: per input index, the alternatives ``(selector, linked record's key)``; replaces
    #: ``inputs``/``selectors`` when given
    links: tuple[tuple[tuple[str, Digest], ...], ...] | None = None
    #: the step's readable inputs (``mason.explain``), for ``--explain-cache`` elsewhere
    explain: Mapping[str, object] | None = None

    @property
    def written_digest(self) -> Digest:
        return self.digest or self.key

    @property
    def linked_keys(self) -> tuple[Digest, ...]:
        if self.links is None:
            return self.inputs
        return tuple(k for alts in self.links for _, k in alts)


class CacheRegistry(Protocol):
    """What the cache needs from ``mason.registry.client.RegistryClient`` (here, not in
    ``cache.registry``, so modules typed against it need not import the registry client)."""

    def get_manifest(self, ref: Reference) -> ImageManifest | ImageIndex: ...

    def head_manifest(self, ref: Reference) -> Descriptor | None: ...

    def put_manifest(self, ref: Reference, manifest_raw: bytes, media_type: str) -> Digest: ...

    def open_blob(self, ref: Reference, desc: Descriptor) -> AbstractContextManager[BinaryIO]: ...

    def push_blob(
        self, ref: Reference, desc: Descriptor, opener: Callable[[], BinaryIO]
    ) -> bool: ...

    def mount_blob(self, ref: Reference, digest: Digest, from_repository: str) -> bool: ...

    def delete_manifest(self, ref: Reference, digest: Digest) -> None: ...

    def blob_exists(self, ref: Reference, digest: Digest, *, for_push: bool = False) -> bool: ...

    def peek_blob(self, ref: Reference, desc: Descriptor, n: int) -> bytes | None: ...

    def push_blob_outcome(
        self,
        ref: Reference,
        desc: Descriptor,
        opener: Callable[[], BinaryIO],
        *,
        mount_from: str | None = None,
        ask_first: bool = True,
    ) -> Literal["exists", "mounted", "uploaded"]: ...

    def put_repositories(self, registry: str, digest: Digest) -> list[str]: ...


class ExportBlobStore(Protocol):
    """The builder's content store, as the cache exporter sees it.

    ``cache_blob`` returns the descriptor of ``layer`` in the blob form the cache should hold:
    with ``force`` the layer in ``compression`` (compressing once and keeping the result);
    without it any existing compressed form may be returned as is (BuildKit keeps e.g. a
    pulled gzip base layer in a zstd cache). The returned descriptor must carry
    ``containerd.io/uncompressed``. ``open_blob`` gives the compressed bytes of a descriptor
    ``cache_blob`` returned (it may download a lazily imported blob).
    """

    def cache_blob(
        self, layer: Descriptor, compression: str, level: int | None, force: bool
    ) -> Descriptor: ...

    def open_blob(self, desc: Descriptor) -> BinaryIO: ...


class ExportPlan(Struct, frozen=True):
    """A cache document ready to store: config bytes and the layer descriptors in config order."""

    config: CacheConfig
    config_raw: bytes
    #: One descriptor per ``config.layers`` entry, same order (duplicates possible).
    layers: tuple[Descriptor, ...]
    #: Distinct blobs to store, with the source descriptor (mount hints kept).
    blobs: tuple[Descriptor, ...]

    @property
    def records_with_results(self) -> int:
        return sum(1 for r in self.config.records if r.has_result)


class ExportResult(Struct, frozen=True):
    """What a cache export did (or, with ``ignore-error``, the warning it swallowed)."""

    destination: str
    manifest: Descriptor | None = None
    uploaded: tuple[Digest, ...] = ()
    mounted: tuple[Digest, ...] = ()
    existing: tuple[Digest, ...] = ()
    unchanged: bool = False
    records: int = 0
    records_with_results: int = 0
    warning: str | None = None
    skipped_reason: str | None = None
    bytes_uploaded: int = 0


def _convert_media_type(desc: Descriptor, oci: bool) -> str:
    try:
        return mt.layer_media_type(mt.compression_of(desc.media_type), oci)
    except ValueError:
        return desc.media_type  # an unknown layer type is passed through untouched


def index_records(records: Sequence[SolvedRecord]) -> tuple[dict[str, SolvedRecord], list[str]]:
    """The first record per key, and every key (records' and their inputs') in sorted order:
    the record order of an exported cache config."""
    by_key: dict[str, SolvedRecord] = {}
    for rec in records:
        by_key.setdefault(rec.key, rec)
    keys = set(by_key)
    for rec in records:
        keys.update(rec.linked_keys)
    return by_key, sorted(keys)


def input_links(
    rec: SolvedRecord, index_of: Mapping[str, int]
) -> tuple[tuple[CacheInput, ...], ...]:
    """``rec``'s inputs as cache-config links (one alternative each, with its selector)."""
    if rec.links is not None:
        return tuple(tuple(CacheInput(index_of[k], sel) for sel, k in alts) for alts in rec.links)
    return tuple(
        (CacheInput(index_of[inp], rec.selectors[i] if i < len(rec.selectors) else ""),)
        for i, inp in enumerate(rec.inputs)
    )


class _BlobResolver:
    """A cached layer's blob in the export's compression, resolved once per (digest, media type)."""

    def __init__(
        self, blobs: ExportBlobStore, compression: str, level: int | None, force: bool
    ) -> None:
        self._blobs = blobs
        self._compression = compression
        self._level = level
        self._force = force
        self._resolved: dict[tuple[Digest, str], Descriptor] = {}
        self._lock = threading.Lock()

    def __call__(self, layer: Descriptor) -> Descriptor:
        diff_id = diff_id_of(layer)
        if diff_id is None:
            raise CacheExportError(
                f"layer {layer.digest} has no {ANNOTATION_UNCOMPRESSED} annotation",
                hint="this is a bug in the builder: every cached layer needs its diff ID",
            )
        cache_key = (layer.digest, layer.media_type)
        with self._lock:
            if cache_key in self._resolved:
                return self._resolved[cache_key]
        out = self._blobs.cache_blob(layer, self._compression, self._level, self._force)
        # A converted blob keeps its own diff ID: an eStargz blob's stream includes the TOC
        # (BuildKit's containerd.io/uncompressed), and eStargz converted to gzip is the tar's.
        if diff_id_of(out) is None:
            out = out.with_annotations({ANNOTATION_UNCOMPRESSED: diff_id})
        if out.digest == layer.digest:  # same bytes: keep the original's mount hints and createdat
            kept = {
                k: v
                for k, v in layer.annotations.items()
                if (k.startswith(DISTRIBUTION_SOURCE_PREFIX) or k in KEPT_LAYER_ANNOTATIONS)
                and k not in out.annotations
            }
            if kept:
                out = out.with_annotations(kept)
        with self._lock:
            self._resolved[cache_key] = out
        return out


class _LayerTable(Struct):
    """The cache config's layers as they are added chain by chain: one entry per (blob, parent),
    the descriptor of each blob, and the times that date each layer."""

    layers: list[CacheLayer] = field(default_factory=list)
    index: dict[tuple[Digest, int], int] = field(default_factory=dict)
    #: per layer, the earliest time a record whose result ends at it was made
    own: dict[int, str] = field(default_factory=dict)
    #: per layer, the earliest time a record whose chain passes through it was made
    seen: dict[int, str] = field(default_factory=dict)
    blob_desc: dict[Digest, Descriptor] = field(default_factory=dict)

    def add_chain(
        self, chain: Sequence[Descriptor], created: str, resolve: Callable[[Descriptor], Descriptor]
    ) -> int:
        """Add a result's layer chain; the index of its last layer."""
        parent = -1
        for position, layer in enumerate(chain):
            desc = resolve(layer)
            self.blob_desc.setdefault(desc.digest, desc)
            ident = (desc.digest, parent)
            if ident not in self.index:
                self.index[ident] = len(self.layers)
                self.layers.append(CacheLayer(desc.digest, parent))
            parent = self.index[ident]
            # a layer was made by the step whose result ends at it; a record further up
            # the chain only shows it existed by then (earliest wins, order-independent)
            times = self.own if position == len(chain) - 1 else self.seen
            times[parent] = min(times.get(parent, created), created)
        return parent

    def created(self) -> dict[int, str]:
        return {i: self.own.get(i) or self.seen[i] for i in self.own.keys() | self.seen.keys()}


def _image_chains(
    image_diff_ids: Sequence[Digest] | Sequence[Sequence[Digest]] | None,
) -> tuple[tuple[Digest, ...], ...]:
    """One image's diff IDs, or one chain per platform's image, as chains."""
    chains = list(image_diff_ids or ())
    if chains and isinstance(chains[0], str):
        return (tuple(Digest(str(d)) for d in chains),)
    return tuple(tuple(Digest(str(d)) for d in chain) for chain in chains)


def _keeps_result(
    mode: Literal["min", "max"],
    diff_ids: tuple[Digest | None, ...],
    images: tuple[tuple[Digest, ...], ...],
) -> bool:
    """min mode keeps a result only when its chain is a prefix of an exported image's."""
    return mode == "max" or any(
        len(diff_ids) <= len(image) and diff_ids == image[: len(diff_ids)] for image in images
    )


def _result_of(
    rec: SolvedRecord,
    chain: Sequence[Descriptor],
    table: _LayerTable,
    resolve: Callable[[Descriptor], Descriptor],
    prior: CacheSource | None,
    clock: Callable[[], str],
) -> tuple[CacheResult, ...]:
    """The record's result (``chain``, its layers, added to ``table``), dated from ``prior`` when unchanged."""
    diff_ids = tuple(diff_id_of(d) for d in chain)
    created = None
    if prior is not None:
        created = prior.created_at_for(rec.key, [d for d in diff_ids if d is not None])
    created = created or rec.created_at or clock()
    return (CacheResult(table.add_chain(chain, created, resolve), created),)


def _export_layers(
    normalized: CacheConfig,
    blob_desc: Mapping[Digest, Descriptor],
    first_created: Mapping[Digest, str],
    prior: CacheSource | None,
    oci_mediatypes: bool,
) -> list[Descriptor]:
    """The normalised config's layers as descriptors, each with its ``createdAt``."""
    out_layers = []
    for cache_layer in normalized.layers:
        src = blob_desc[cache_layer.blob]
        created_at = (
            src.annotations.get(ANNOTATION_CREATED_AT)
            or (prior.layer_created_at(cache_layer.blob) if prior is not None else None)
            or first_created.get(cache_layer.blob)
            or ZERO_TIME
        )
        annotations = {k: v for k, v in src.annotations.items() if k in KEPT_LAYER_ANNOTATIONS}
        annotations[ANNOTATION_CREATED_AT] = created_at
        out_layers.append(
            Descriptor(_convert_media_type(src, oci_mediatypes), src.digest, src.size, annotations)
        )
    return out_layers


def plan_export(
    records: Sequence[SolvedRecord],
    *,
    mode: Literal["min", "max"],
    image_diff_ids: Sequence[Digest] | Sequence[Sequence[Digest]] | None,
    blobs: ExportBlobStore,
    compression: str = "gzip",
    compression_level: int | None = None,
    force_compression: bool = False,
    oci_mediatypes: bool = True,
    prior: CacheSource | None = None,
    clock: Callable[[], str] = rfc3339_nano,
) -> ExportPlan:
    """Select results (min/max), resolve blobs, build the normalised cache config.

    ``mode="max"`` keeps every record's result. ``mode="min"`` keeps a result only when its
    diff-ID chain is a prefix of ``image_diff_ids`` (the exported image's layers; for other
    outputs the builder passes the final target's chain; a multi-platform build passes one
    chain per platform, and a prefix of any of them is kept); other records stay key-only.
    ``createdAt`` is carried over from ``prior`` (the cache previously stored at the same
    destination) for unchanged results, so an unchanged cache re-exports identical bytes.
    """
    image = _image_chains(image_diff_ids)
    by_key, ordered_keys = index_records(records)
    index_of = {k: i for i, k in enumerate(ordered_keys)}
    resolve = _BlobResolver(blobs, compression, compression_level, force_compression)
    table = _LayerTable()
    cache_records: list[CacheRecord] = []
    steps: dict[str, str] = {}
    explain: dict[str, Mapping[str, object]] = {}

    for key in ordered_keys:
        rec = by_key.get(key)
        if rec is None:
            cache_records.append(CacheRecord(Digest(key)))  # an input we only know by key
            continue
        if rec.step:
            steps[rec.written_digest] = rec.step
        if rec.explain:
            explain.setdefault(rec.written_digest, rec.explain)
        results: tuple[CacheResult, ...] = ()
        chain = rec.layers
        if chain and _keeps_result(mode, tuple(diff_id_of(d) for d in chain), image):
            results = _result_of(rec, chain, table, resolve, prior, clock)
        cache_records.append(
            CacheRecord(rec.written_digest, results, (), input_links(rec, index_of))
        )

    config = CacheConfig(tuple(table.layers), tuple(cache_records), steps, explain=explain)
    normalized = normalize_cache_config(config)
    first_created = _first_created(config, table.created())
    out_layers = _export_layers(normalized, table.blob_desc, first_created, prior, oci_mediatypes)
    raw = serialize_cache_config(normalized)
    blob_list = tuple(table.blob_desc[d] for d in sorted(table.blob_desc))
    return ExportPlan(normalized, raw, tuple(out_layers), blob_list)


def _first_created(config: CacheConfig, created: Mapping[int, str]) -> dict[Digest, str]:
    """Per blob, the earliest time it was recorded (one blob may sit in several chains); one
    pass over the layers, not one per layer."""
    out: dict[Digest, str] = {}
    for i, layer in enumerate(config.layers):
        if i in created and (layer.blob not in out or created[i] < out[layer.blob]):
            out[layer.blob] = created[i]
    return out
