"""The ``registry`` cache backend: a cache image in an OCI registry.

Import reads the manifest (either form, OCI or Docker types, or an image with inline
cache) and the cache config, nothing else; layer blobs are opened lazily through the
client when a hit must be materialised.

Export: blobs the cache the ref currently points at references (from the import of the same
ref, or read here with one manifest GET + one config GET) are HEADed, and skipped when they
are still there (a deleted one is stored again); blobs whose descriptor names another repository of the
same registry (``containerd.io/distribution.source.<host>``) are cross-repo mounted;
the rest are pushed (the client HEADs first) in parallel with a bound; then the config;
the manifest goes last. When the new manifest's digest equals the one the ref holds,
nothing at all is written.

The per-blob step (HEAD, mount, else upload in the declined mount's session) is
``mason.registry.push.push_blob``, which the image push and ``imagetools copy`` use too.

Only this module of ``mason.cache`` imports ``mason.registry``; everything is written
against ``CacheRegistry`` (the subset of ``mason.registry.client.RegistryClient`` used),
so unit tests use an in-memory fake.
"""

from __future__ import annotations

import functools
import io
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import BinaryIO

from mason.cache.backends import CacheBackend, ExportRequest
from mason.cache.document import build_cache_document, plan_cache_document, read_cache_document
from mason.cache.format import CacheConfig, CacheFormatError, rfc3339_nano
from mason.cache.model import (
    DISTRIBUTION_SOURCE_PREFIX,
    CacheExportError,
    CacheRegistry,
    CacheSource,
    ExportBlobStore,
    ExportPlan,
    ExportResult,
    SolvedRecord,
)
from mason.cache.mounts import (
    MAX_INDEX_SIZE,
    MOUNTS_INDEX_MEDIA_TYPE,
    index_descriptor,
    mount_layer,
    mounts_index,
    parse_mounts_index,
)
from mason.cache.options import (
    COMMON_EXPORT_ATTRS,
    CacheOptions,
    CacheOptionsError,
    export_settings,
    option_bool,
    parse_ref,
)
from mason.digest import Digest
from mason.errors import MasonError
from mason.futures import ThreadPoolExecutor
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.manifest import ImageIndex, ImageManifest
from mason.oci.reference import Reference
from mason.registry.errors import RegistryError, RegistryNotFoundError
from mason.registry.push import push_blob
from mason.structs import Struct, field, replace

__all__ = [
    "BACKEND",
    "CacheRegistry",
    "PruneReport",
    "export_registry_cache",
    "load_registry_cache",
    "peek_blob",
    "prune_registry_cache",
]


class _RegistryBlobs:
    """Lazy blob access for an imported registry cache."""

    def __init__(self, client: CacheRegistry, ref: Reference) -> None:
        self._client = client
        self._ref = ref

    def open_blob(self, desc: Descriptor) -> AbstractContextManager[BinaryIO]:
        return self._client.open_blob(self._ref, desc)

    def peek_blob(self, desc: Descriptor, n: int) -> bytes | None:
        return peek_blob(self._client, self._ref, desc, n)


def peek_blob(client: CacheRegistry, ref: Reference, desc: Descriptor, n: int) -> bytes | None:
    """The first ``n`` bytes of a blob in ``ref``'s repository, or ``None`` when it is not there
    (the registry client's ranged ``GET``): whether the blob exists and how it starts."""
    return client.peek_blob(ref, desc, n)


def _read_small(client: CacheRegistry, ref: Reference, desc: Descriptor, limit: int) -> bytes:
    if desc.size > limit:
        raise CacheFormatError(
            f"{desc.media_type} {desc.digest} is too large ({desc.size} > {limit} bytes)"
        )
    with client.open_blob(ref, desc) as stream:
        data = stream.read(desc.size + 1)
        while stream.read(65536):  # drain to end so a verifying stream checks the digest
            pass
    return data


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MasonError):
        return str(exc).replace("\n", " | ")
    return f"{type(exc).__name__}: {exc}"


def load_registry_cache(
    client: CacheRegistry, ref: Reference, *, name: str | None = None
) -> CacheSource:
    """Import the cache at ``ref``. Never raises for a missing, forbidden or corrupt cache:
    returns an empty source whose ``warning`` says what went wrong."""
    display = name or f"registry {ref}"
    try:
        try:
            doc = client.get_manifest(ref)
        except RegistryNotFoundError:
            # nothing pushed there yet: the normal first build, not a failed import
            return CacheSource.empty(display, origin=str(ref), missing=f"no cache at {ref} yet")
        parsed = read_cache_document(
            doc,
            lambda desc, limit: _read_small(client, ref, desc, limit),
            what=f"cache {ref}",
        )
        mounts = _read_mounts(client, ref, parsed.extras)
    except Exception as exc:
        return CacheSource.empty(
            display,
            f"cache import from {ref} failed, continuing without it: {_describe(exc)}",
            origin=str(ref),
        )
    hint = {DISTRIBUTION_SOURCE_PREFIX + ref.registry: ref.repository}
    return CacheSource(
        display,
        parsed.config,
        parsed.descriptors,
        _RegistryBlobs(client, ref),
        manifest=parsed.manifest,
        form=parsed.form,
        config_descriptor=parsed.config_descriptor,
        blob_annotations=hint,
        origin=str(ref),
        mounts=mounts,
    )


def _read_mounts(
    client: CacheRegistry, ref: Reference, extras: Sequence[Descriptor]
) -> dict[str, Descriptor]:
    """The cache-mounts index the manifest lists, if any (``cache.mounts``); one small GET."""
    index = next((d for d in extras if d.media_type == MOUNTS_INDEX_MEDIA_TYPE), None)
    if index is None:
        return {}
    raw = _read_small(client, ref, index, MAX_INDEX_SIZE)
    return parse_mounts_index(raw, f"cache {ref}")


#: statuses registries refuse a cache manifest with (ECR 400/405, Harbor 404, Nexus 500, others 415)
_MANIFEST_REFUSED = frozenset({400, 404, 405, 415, 500})
#: distribution error codes that name another cause than the manifest's media type
_OTHER_CAUSES = frozenset(
    {
        "BLOB_UNKNOWN",
        "MANIFEST_BLOB_UNKNOWN",
        "NAME_UNKNOWN",
        "NAME_INVALID",
        "TAG_INVALID",
        "DIGEST_INVALID",
        "SIZE_INVALID",
        "MANIFEST_UNVERIFIED",
        "DENIED",
        "UNAUTHORIZED",
        "TOOMANYREQUESTS",
    }
)


#: the error codes of a manifest PUT that names a blob the repository does not have
_BLOB_UNKNOWN = frozenset({"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN"})


def _error_codes(exc: RegistryError) -> set[str]:
    return {str(e.get("code", "")).upper() for e in exc.errors}


def _refused_for_its_type(exc: RegistryError) -> bool:
    """Whether a failed manifest PUT may be a refusal of its media type: a status registries
    use for that, and no error code naming another cause (a missing blob, a denied push)."""
    return exc.status in _MANIFEST_REFUSED and not _error_codes(exc) & _OTHER_CAUSES


def _still_there(
    client: CacheRegistry, ref: Reference, digests: Sequence[Digest], max_workers: int
) -> set[Digest]:
    """The blobs of ``digests`` that ``ref``'s repository holds now (one HEAD each). Asked as
    before a push: the destination itself, never a pull mirror of it (registries.conf)."""
    if not digests:
        return set()
    with ThreadPoolExecutor(
        max_workers=max(1, max_workers), thread_name_prefix="cache-head"
    ) as pool:
        found = pool.map(lambda d: client.blob_exists(ref, d, for_push=True), digests)
        return {d for d, there in zip(digests, found, strict=True) if there}


def _refused_manifest_hint(options: CacheOptions, media_type: str) -> str:
    if not options.image_manifest:
        return (
            f"this registry may not accept the cache index form ({media_type}): use image-manifest=true,"
            "oci-mediatypes=true, the OCI image-manifest form ECR, GCR, Quay and Harbor accept"
        )
    return (
        f"this registry may not accept an OCI image manifest ({media_type}) whose config is a "
        f"{mt.BUILDKIT_CACHE_CONFIG}; if it takes only Docker media types, try image-manifest=false,"
        "oci-mediatypes=false (a Docker manifest list), or ignore-error=true to keep builds green"
    )


class _Stored(Struct):
    """What storing a cache's blobs did, per blob: uploaded, mounted from another repository,
    or already there; ``sent`` counts the uploaded bytes."""

    uploaded: list[Digest] = field(default_factory=list)
    mounted: list[Digest] = field(default_factory=list)
    existing: list[Digest] = field(default_factory=list)
    sent: int = 0

    def add(self, outcome: str, desc: Descriptor) -> None:
        if outcome == "uploaded":
            self.uploaded.append(desc.digest)
            self.sent += desc.size
        elif outcome == "mounted":
            self.mounted.append(desc.digest)
        else:
            self.existing.append(desc.digest)


def _store_blobs(
    client: CacheRegistry,
    ref: Reference,
    plan: ExportPlan,
    config_desc: Descriptor,
    known: set[Digest],
    blobs: ExportBlobStore,
    max_workers: int,
) -> _Stored:
    """Store the plan's layer blobs and its config, in parallel, skipping ``known`` (issue 14:
    the config no longer waits for the layers; only the manifest, put last, needs them)."""
    stored = _Stored()

    def store(desc: Descriptor) -> tuple[str, Descriptor]:
        if desc.digest in known:
            return "existing", desc
        return push_blob(client, ref, desc, lambda: blobs.open_blob(desc)), desc

    def store_config() -> str:
        config_raw = plan.config_raw
        if config_desc.digest in known:
            return "existing"
        opener = functools.partial(io.BytesIO, config_raw)
        return push_blob(client, ref, config_desc, opener, made_here=True)

    with ThreadPoolExecutor(
        max_workers=max(1, max_workers), thread_name_prefix="cache-push"
    ) as pool:
        config = pool.submit(store_config)
        for outcome, desc in pool.map(store, plan.blobs):
            stored.add(outcome, desc)
        stored.add(config.result(), config_desc)
    return stored


def _put_manifest(
    client: CacheRegistry,
    ref: Reference,
    document: ImageManifest | ImageIndex,
    options: CacheOptions,
) -> None:
    """PUT the cache's manifest or index; a refusal gets a hint saying what to try."""
    try:
        client.put_manifest(ref, document.raw, document.media_type)
    except RegistryError as exc:
        if _refused_for_its_type(exc):
            exc.hint = _refused_manifest_hint(options, document.media_type)
        elif _error_codes(exc) & _BLOB_UNKNOWN:
            # every blob was HEADed or stored just now, so one vanished meanwhile (a garbage collection)
            exc.hint = (
                "the registry kept losing a blob this cache references, though it was checked "
                "or stored just before each put; run the build again (its export stores it again)"
            )
        raise


def export_registry_cache(
    options: CacheOptions,
    records: Sequence[SolvedRecord],
    *,
    client: CacheRegistry,
    blobs: ExportBlobStore,
    image_diff_ids: Sequence[Digest] | Sequence[Sequence[Digest]] | None,
    prior: CacheSource | None = None,
    clock: Callable[[], str] = rfc3339_nano,
    max_workers: int = 4,
    mounts: Mapping[str, Descriptor] | None = None,
    written: Callable[[], None] | None = None,
) -> ExportResult:
    """Write the cache for ``records`` (and, with ``cache-mounts=true``, the cache mounts'
    layers ``mounts``) to ``options.ref``. Raises on failure (the caller
    applies ``ignore-error``, see ``mason.cache.export_cache``). ``written`` is called once
    the manifest is put, before the read-back below waits.

    ``prior`` is the import of the same ref, if the build had one; otherwise the ref's
    current cache is read here (a missing or unreadable one is just "nothing known"). With
    ``merge`` (``mason.cache.merge.wants_merge``) the records the ref holds are kept, and
    concurrent writers are detected and merged with (``_Writer.settle``).
    """
    ref = options.ref
    if ref is None:
        raise CacheExportError("registry cache export needs ref")
    if prior is None or prior.origin != str(ref):  # an import of this ref that failed is reused too
        prior = load_registry_cache(client, ref)
    writer = _Writer(
        options, ref, records, client, blobs, image_diff_ids, clock, max_workers, dict(mounts or {})
    )
    from mason.cache.merge import wants_merge  # start-up (issue 14): exports only

    merging = wants_merge(options.merge, prior)
    result = writer.write(prior, merge=merging)
    if written is not None:
        written()
    if merging and result.manifest is not None and not result.unchanged:
        result = writer.settle(result)
    return result


#: How many times an export merges again with a concurrent writer's cache before giving up.
_MERGE_ATTEMPTS = 8
#: A merged write is read back after a wait (once; twice in a row after a re-merge), later
#: than another writer's HEAD-to-PUT gap, whose PUT would otherwise replace ours unseen: the
#: wait is ``_SETTLE_FACTOR`` times this writer's own gap (its HEAD and PUT, on the same
#: registry), at least ``_SETTLE_MIN`` and at most ``_SETTLE_SECONDS``; once writers were seen
#: racing, each wait is that times 1-2 (jitter, so that they do not re-read in lockstep).
#: Issue 14: a fixed 0.15 s, twice, was most of a small build's cache export on a registry
#: that answers in milliseconds; a second read with no race seen was ~30 ms more, and the
#: jitter on the first wait ~15 ms more (its length, not its jitter, is the guarantee).
_SETTLE_SECONDS = 0.15
_SETTLE_MIN = 0.02
_SETTLE_FACTOR = 2.0


class _Planned(Struct):
    """One export attempt: the plan, its document (None: no layers), the listed blobs still
    in the repository, and the cache mounts it carries (id -> layer)."""

    plan: ExportPlan
    built: tuple[ImageManifest | ImageIndex, Descriptor] | None
    known: set[Digest]
    mounts: Mapping[str, Descriptor]

    @property
    def index_raw(self) -> bytes:
        return mounts_index(self.mounts)

    @property
    def extras(self) -> tuple[Descriptor, ...]:
        """The cache-mounts index and the mount layers, as the manifest lists them."""
        if not self.mounts:
            return ()
        layers = tuple(mount_layer(i, self.mounts[i]) for i in sorted(self.mounts))
        return (index_descriptor(self.index_raw), *layers)

    def store_mounts(
        self, client: CacheRegistry, ref: Reference, blobs: ExportBlobStore, stored: _Stored
    ) -> None:
        """Store the mount layers the repository lacks (an unchanged mount is the same blob,
        already there), then the index."""
        if not self.mounts:
            return
        for desc in self.mounts.values():
            if desc.digest in self.known:
                stored.add("existing", desc)
            else:
                stored.add(
                    push_blob(client, ref, desc, functools.partial(blobs.open_blob, desc)), desc
                )
        raw = self.index_raw
        index = index_descriptor(raw)
        pushed = client.push_blob(ref, index, lambda: io.BytesIO(raw))
        stored.add("uploaded" if pushed else "existing", index)


class _Writer(Struct):
    options: CacheOptions
    ref: Reference
    records: Sequence[SolvedRecord]
    client: CacheRegistry
    blobs: ExportBlobStore
    image_diff_ids: Sequence[Digest] | Sequence[Sequence[Digest]] | None
    clock: Callable[[], str]
    max_workers: int
    #: this build's ``RUN --mount=type=cache`` contents (id -> layer), for ``cache-mounts=true``
    mounts: Mapping[str, Descriptor] = field(default_factory=dict)
    #: this build's own records (before any merge): what a concurrent writer must not drop
    own: CacheConfig = field(default_factory=CacheConfig)
    #: the longest re-read-to-PUT gap this writer saw (seconds): what another writer's is like
    gap: float = 0.0

    def _plan(self, prior: CacheSource, merge: bool) -> _Planned:
        """The plan (this build's records stamped with their last use; merged with ``prior``
        and pruned by ``keep-duration`` when asked), the cache mounts it carries, its
        document, and the listed blobs that are still in the repository."""
        plan, _document = plan_cache_document(
            self.options,
            self.records,
            blobs=self.blobs,
            image_diff_ids=self.image_diff_ids,
            prior=prior,
            clock=self.clock,
        )
        now = self.clock()
        from mason.cache.merge import merge_export, retain, stamped
        from mason.cache.retention import parse_time

        plan = stamped(plan, prior.config.last_used, now)
        self.own = plan.config
        # What the ref's current cache lists is only a claim about the repository: a blob
        # deleted since (garbage collection, a retention policy) would make the manifest PUT
        # fail with MANIFEST_BLOB_UNKNOWN. So each listed blob is HEADed (in parallel); a
        # missing one of ours is stored again, a missing one of another builder's drops the
        # results built on it from the merge.
        listed = prior.known_blobs if prior.manifest is not None else frozenset()
        mounts: dict[str, Descriptor] = {}
        if merge and prior.manifest is not None:
            theirs = {d.digest for d in prior.mounts.values()}
            alive = _still_there(
                self.client, self.ref, sorted(set(prior.descriptors) | theirs), self.max_workers
            )
            plan = merge_export(plan, prior, alive, oci_mediatypes=self.options.oci_mediatypes)
            if self.options.keep_duration is not None:
                plan = retain(plan, self.options.keep_duration, parse_time(now))
            mounts = {i: d for i, d in prior.mounts.items() if d.digest in alive}
        else:
            needed = [d.digest for d in plan.blobs]
            alive = _still_there(
                self.client, self.ref, [d for d in needed if d in listed], self.max_workers
            )
        if self.options.cache_mounts:
            mounts.update(self.mounts)
        planned = _Planned(plan, None, alive, mounts)
        if not plan.layers:
            return planned
        planned.built = build_cache_document(
            plan,
            oci_mediatypes=self.options.oci_mediatypes,
            image_manifest=self.options.image_manifest,
            extras=planned.extras,
        )
        if planned.built[1].digest in listed:
            alive |= _still_there(self.client, self.ref, [planned.built[1].digest], 1)
        return planned

    def write(self, prior: CacheSource, *, merge: bool, attempt: int = 0) -> ExportResult:
        destination = f"registry {self.ref}"
        planned = self._plan(prior, merge)
        plan, known = planned.plan, planned.known
        n_records = len(plan.config.records)
        if planned.built is None:
            return ExportResult(
                destination, records=n_records, skipped_reason="no layers to export"
            )
        document, config_desc = planned.built
        manifest_desc = document.descriptor()
        needed = {d.digest for d in plan.blobs} | {config_desc.digest}
        if (
            prior.manifest is not None
            and prior.manifest.digest == manifest_desc.digest
            and known >= needed
        ):
            return ExportResult(
                destination,
                manifest_desc,
                existing=tuple(b.digest for b in plan.blobs),
                unchanged=True,
                records=n_records,
                records_with_results=plan.records_with_results,
            )
        stored = _store_blobs(
            self.client, self.ref, plan, config_desc, known, self.blobs, self.max_workers
        )
        planned.store_mounts(self.client, self.ref, self.blobs, stored)
        start = time.monotonic()
        if merge and attempt < _MERGE_ATTEMPTS and not self._holds(_digest_of(prior)):
            latest = load_registry_cache(self.client, self.ref)
            if _digest_of(latest) != _digest_of(prior):
                return self.write(latest, merge=True, attempt=attempt + 1)  # another writer
        try:
            _put_manifest(self.client, self.ref, document, self.options)  # last: complete
        except RegistryError as exc:
            if attempt >= _MERGE_ATTEMPTS or not _error_codes(exc) & _BLOB_UNKNOWN:
                raise
            # Every blob was checked or stored just now, yet one was not there at the PUT:
            # another writer's upload of the same blob was being linked again (a registry
            # rewrites the link in place), or a garbage collection took it. Check them all
            # again, store what is missing, put again.
            latest = load_registry_cache(self.client, self.ref)
            return self.write(latest, merge=merge, attempt=attempt + 1)
        self.gap = max(self.gap, time.monotonic() - start)
        return ExportResult(
            destination,
            manifest_desc,
            tuple(stored.uploaded),
            tuple(stored.mounted),
            tuple(stored.existing),
            records=n_records,
            records_with_results=plan.records_with_results,
            bytes_uploaded=stored.sent,
        )

    def _holds(self, digest: Digest | None) -> bool:
        """Whether the ref's manifest is still ``digest`` (None: no manifest), by one ``HEAD``
        instead of reading the whole cache back; False when the ``HEAD`` fails, so that the
        caller reads the cache as before."""
        try:
            current = self.client.head_manifest(self.ref)
        except RegistryError:
            return False
        return (current.digest if current is not None else None) == digest

    def settle(self, result: ExportResult) -> ExportResult:
        """Read the ref back until it holds our records: a concurrent writer that read the ref
        before our write replaced it without them, so merge again. Another writer checks the
        ref by a ``HEAD`` just before its own PUT, so only its short HEAD-to-PUT gap can hide
        our write from it: one read after the wait sees its PUT. Once writers were seen
        racing, the ref must hold our records twice in a row."""
        steady, wanted = 0, 1
        delay = min(_SETTLE_SECONDS, max(_SETTLE_MIN, _SETTLE_FACTOR * self.gap))
        for _attempt in range(_MERGE_ATTEMPTS):
            time.sleep(delay if wanted == 1 else delay * _jitter())
            if result.manifest is not None and self._holds(result.manifest.digest):
                steady += 1  # our own document is still the ref's: nobody wrote meanwhile
                if steady == wanted:
                    return result
                continue
            from mason.cache.merge import missing_records

            current = load_registry_cache(self.client, self.ref)
            if current.manifest is not None and missing_records(self.own, current.config) == 0:
                steady += 1
                if steady == wanted:
                    return result
                continue
            steady, wanted = 0, 2
            result = self.write(current, merge=True)
        raise CacheExportError(
            f"registry {self.ref}: other builders kept replacing the cache while it was "
            f"written; gave up after {_MERGE_ATTEMPTS} merges",
            hint="run the build again; its records are merged with whatever the ref holds then",
        )


def _jitter() -> float:
    """1-2: writers seen racing re-read at different times. ``random`` is imported only
    then (start-up, issue 14: ~1 ms of every build with a registry cache)."""
    import random

    return 1 + random.random()


def _digest_of(source: CacheSource) -> Digest | None:
    return source.manifest.digest if source.manifest is not None else None


# -- retention (mason cache prune REF) -----------------------------------------------------


class PruneReport(Struct, frozen=True):
    """What ``prune_registry_cache`` found and did: ``written`` is the new manifest (None for
    a dry run, nothing to drop, or a deleted tag); ``deleted`` when nothing was left."""

    records: int
    with_results: int
    dropped: int
    kept_bytes: int
    freed_bytes: int
    written: Descriptor | None = None
    deleted: bool = False


def prune_registry_cache(
    client: CacheRegistry,
    ref: Reference,
    *,
    now: datetime,
    keep_duration: float | None = None,
    keep_size: int | None = None,
    dry_run: bool = False,
) -> PruneReport:
    """Rewrite the cache at ``ref`` without the least recently used records
    (``mason.cache.retention.prune_config``), in the form it was stored in; delete the tag
    when no result is left. The blobs stay until the registry's garbage collection."""
    source = load_registry_cache(client, ref)
    if source.warning or source.manifest is None:
        raise CacheExportError(
            f"cannot prune {ref}: {source.warning or source.missing or 'no cache there'}"
        )
    from mason.cache.merge import plan_for
    from mason.cache.retention import prune_config

    sizes = {d: desc.size for d, desc in source.descriptors.items()}
    pruned = prune_config(
        source.config, sizes, now, keep_duration=keep_duration, keep_size=keep_size
    )
    report = PruneReport(
        len(source.config.records),
        sum(1 for r in source.config.records if r.has_result),
        pruned.dropped,
        pruned.kept_bytes,
        pruned.freed_bytes,
    )
    if dry_run or pruned.dropped == 0:
        return report
    if not any(r.has_result for r in pruned.config.records):
        client.delete_manifest(ref, source.manifest.digest)
        return replace(report, deleted=True)
    plan = plan_for(pruned.config, source.descriptors, ())
    oci = source.manifest.media_type in (mt.OCI_MANIFEST, mt.OCI_INDEX)
    document, config_desc = build_cache_document(
        plan, oci_mediatypes=oci, image_manifest=source.form == "image-manifest"
    )
    config_raw = plan.config_raw
    client.push_blob(ref, config_desc, lambda: io.BytesIO(config_raw))
    client.put_manifest(ref, document.raw, document.media_type)
    return replace(report, written=document.descriptor())


# -- the backend (mason.cache.backends) ------------------------------------------------

_REGISTRY_ATTRS = frozenset({"ref", "registry.insecure", "scope"})


def _insecure(attrs: Mapping[str, str], text: str) -> bool:
    return (
        option_bool("registry.insecure", attrs["registry.insecure"], text)
        if "registry.insecure" in attrs
        else False
    )


def _parse_to(attrs: Mapping[str, str], text: str, images: Sequence[Reference]) -> CacheOptions:
    if not attrs.get("ref", "").strip():
        raise CacheOptionsError(
            f"invalid --cache-to {text!r}: registry cache exporter requires ref"
        )
    ref = parse_ref(attrs["ref"].strip(), text, "ref")
    if ref.digest is not None:
        raise CacheOptionsError(
            f"invalid --cache-to {text!r}: ref must be a tag, not a digest ({ref})"
        )
    if "scope" in attrs:
        from mason.cache.scopes import scoped_refs

        (ref,) = scoped_refs(attrs["ref"].strip(), ref, attrs["scope"], text, reading=False)
    for image in images:
        if image.name == ref.name and image.identifier == ref.identifier:
            raise CacheOptionsError(
                f"invalid --cache-to {text!r}: the cache ref {ref} is the image's own name",
                reference="cache-ref-is-image",
                hint="use another tag or repository, e.g. ref="
                + f"{ref.name}-cache or {ref.name}:buildcache",
            )
    merge = option_bool("merge", attrs["merge"], text) if "merge" in attrs else None
    keep_duration = None
    if keep := attrs.get("keep-duration"):
        from mason.cache.retention import parse_duration  # start-up (issue 14)

        keep_duration = parse_duration(keep, f"--cache-to {text!r}: keep-duration")
    base = CacheOptions(
        "registry",
        "to",
        text,
        dict(attrs),
        ref=ref,
        insecure=_insecure(attrs, text),
        merge=merge,
        keep_duration=keep_duration,
        cache_mounts=(
            option_bool("cache-mounts", attrs["cache-mounts"], text)
            if "cache-mounts" in attrs
            else False
        ),
    )
    if base.keep_duration is not None and merge is False:
        raise CacheOptionsError(
            f"invalid --cache-to {text!r}: keep-duration prunes what the ref holds, and "
            "merge=false replaces it",
            hint="drop merge=false (the export then keeps what the ref holds, minus what expired)",
        )
    return replace(base, **export_settings(attrs, text))


def _parse_from(attrs: Mapping[str, str], text: str) -> list[CacheOptions]:
    """One import per ref: with ``scope=``, the scope's tag and then its fallbacks'."""
    if not attrs.get("ref", "").strip():
        raise CacheOptionsError(
            f"invalid --cache-from {text!r}: registry cache importer requires ref"
        )
    ref = parse_ref(attrs["ref"].strip(), text, "ref")
    refs = [ref]
    if "scope" in attrs:
        from mason.cache.scopes import scoped_refs  # start-up (issue 14): when scoped only

        refs = scoped_refs(attrs["ref"].strip(), ref, attrs["scope"], text, reading=True)
    insecure = _insecure(attrs, text)
    return [
        CacheOptions("registry", "from", text, dict(attrs), ref=r, insecure=insecure) for r in refs
    ]


def _load(options: CacheOptions, client: CacheRegistry | None) -> CacheSource:
    if client is None or options.ref is None:
        return CacheSource.empty(
            options.display_name, f"cache import from {options.text} skipped: no registry client"
        )
    return load_registry_cache(client, options.ref, name=options.display_name)


def _export(options: CacheOptions, req: ExportRequest) -> ExportResult:
    if req.client is None:
        raise CacheExportError(f"--cache-to {options.text}: no registry client")
    return export_registry_cache(
        options,
        req.records,
        client=req.client,
        blobs=req.blobs,
        image_diff_ids=req.image_diff_ids,
        prior=req.prior,
        clock=req.clock,
        max_workers=req.max_workers,
        mounts=req.cache_mounts,
        written=req.written,
    )


BACKEND = CacheBackend(
    "registry",
    display_name=lambda o: f"registry {o.ref}",
    destination=lambda o: f"registry {o.ref}",
    export_attrs=_REGISTRY_ATTRS | COMMON_EXPORT_ATTRS | {"merge", "keep-duration", "cache-mounts"},
    parse_to=_parse_to,
    progress_name="registry",
    export=_export,
    import_attrs=_REGISTRY_ATTRS,
    ignored_import_attrs=COMMON_EXPORT_ATTRS | {"tag", "merge", "keep-duration", "cache-mounts"},
    parse_from=_parse_from,
    load=_load,
)
