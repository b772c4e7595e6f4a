"""Cache documents as stored: the image-manifest form, the index / manifest-list form, and
reading a cache out of whatever a ref holds (shared by the registry and local backends).

Forms (BuildKit ``cache/remotecache/export.go``):

* ``image-manifest``: OCI image manifest, ``config`` = the cacheconfig blob, ``layers`` =
  the layer blobs in cache-config order;
* ``index``: OCI index (or Docker manifest list with ``oci-mediatypes=false``) whose
  ``manifests[]`` holds the layer descriptors followed by the cacheconfig descriptor;
* anything else with image configs is read as an inline cache (``moby.buildkit.cache.v0``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mason.cache.format import (
    MAX_CACHE_CONFIG_SIZE,
    CacheConfig,
    CacheFormatError,
    CacheInput,
    CacheLayer,
    CacheRecord,
    CacheResult,
    ChainedResult,
    parse_cache_config,
)
from mason.cache.model import CacheSource, ExportBlobStore, ExportPlan, SolvedRecord, plan_export
from mason.cache.mounts import is_mount_entry
from mason.cache.options import CacheOptions
from mason.digest import Digest, sha256_bytes
from mason.oci import mediatypes as mt
from mason.oci.config import parse_image_config
from mason.oci.descriptor import Descriptor
from mason.oci.errors import OCIError
from mason.oci.manifest import (
    ImageIndex,
    ImageManifest,
    build_index,
    build_manifest,
    parse_manifest,
)
from mason.structs import Struct, replace

__all__ = [
    "MAX_MANIFEST_SIZE",
    "ParsedCache",
    "build_cache_document",
    "config_descriptor",
    "plan_cache_document",
    "read_cache_document",
]

#: docs/architecture.md §6: manifests are capped at 4 MiB (registries commonly refuse larger ones too).
MAX_MANIFEST_SIZE = 4 << 20
#: Image configs read for inline cache.
_MAX_IMAGE_CONFIG = 8 << 20


class ParsedCache(Struct, frozen=True):
    config: CacheConfig
    descriptors: dict[Digest, Descriptor]
    form: str  # "image-manifest", "index" or "inline"
    config_descriptor: Descriptor | None
    manifest: Descriptor
    #: the cache-mounts index and mount layers (``cache.mounts``), kept apart from the layers
    extras: tuple[Descriptor, ...] = ()


def config_descriptor(raw: bytes) -> Descriptor:
    return Descriptor(mt.BUILDKIT_CACHE_CONFIG, sha256_bytes(raw), len(raw))


def build_cache_document(
    plan: ExportPlan,
    *,
    oci_mediatypes: bool,
    image_manifest: bool,
    extras: Sequence[Descriptor] = (),
) -> tuple[ImageManifest | ImageIndex, Descriptor]:
    """The top-level document for ``plan`` (and ``extras``, listed after its layers: the
    cache-mounts index and mount layers) and the config's descriptor. Deterministic."""
    config_desc = config_descriptor(plan.config_raw)
    layers = [*plan.layers, *extras]
    if image_manifest:
        if not oci_mediatypes:
            raise ValueError("image-manifest cache form needs OCI media types")
        return build_manifest(config_desc, layers, mt.OCI_MANIFEST), config_desc
    media_type = mt.OCI_INDEX if oci_mediatypes else mt.DOCKER_MANIFEST_LIST
    return build_index([*layers, config_desc], media_type), config_desc


def plan_cache_document(
    options: CacheOptions,
    records: Sequence[SolvedRecord],
    *,
    blobs: ExportBlobStore,
    image_diff_ids: Sequence[Digest] | Sequence[Sequence[Digest]] | None,
    prior: CacheSource | None,
    clock: Callable[[], str],
) -> tuple[ExportPlan, tuple[ImageManifest | ImageIndex, Descriptor] | None]:
    """The export plan for ``options`` and its top-level document with the config descriptor,
    or ``None`` for the document when there are no layers to export (BuildKit: "skipping
    cache export for empty result"). Shared by the registry and local backends."""
    plan = plan_export(
        records,
        mode=options.mode,
        image_diff_ids=image_diff_ids,
        blobs=blobs,
        compression=options.compression,
        compression_level=options.compression_level,
        force_compression=options.force_compression,
        oci_mediatypes=options.oci_mediatypes,
        prior=prior if prior is not None and prior.manifest is not None else None,
        clock=clock,
    )
    if not plan.layers:
        return plan, None
    return plan, build_cache_document(
        plan, oci_mediatypes=options.oci_mediatypes, image_manifest=options.image_manifest
    )


def _add(descriptors: dict[Digest, Descriptor], desc: Descriptor) -> None:
    # BuildKit may list one blob twice (two parents); the descriptors are equal in practice.
    descriptors.setdefault(desc.digest, desc)


def _add_entry(
    descriptors: dict[Digest, Descriptor], extras: list[Descriptor], desc: Descriptor
) -> None:
    if is_mount_entry(desc):
        extras.append(desc)
    else:
        _add(descriptors, desc)


def read_cache_document(
    doc: ImageManifest | ImageIndex,
    read_blob: Callable[[Descriptor, int], bytes],
    *,
    what: str,
) -> ParsedCache:
    """Find and parse the cache config in ``doc`` (either form, or inline cache in an image).

    ``read_blob(desc, limit)`` returns a small blob's verified bytes (configs, child
    manifests) and fails when it is larger than ``limit``. Layer blobs are never read.
    """
    if doc.size > MAX_MANIFEST_SIZE:
        raise CacheFormatError(
            f"{what}: cache manifest is too large ({doc.size} > {MAX_MANIFEST_SIZE} bytes)"
        )
    descriptors: dict[Digest, Descriptor] = {}
    extras: list[Descriptor] = []
    config_desc: Descriptor | None = None
    if isinstance(doc, ImageManifest):
        if doc.config.media_type == mt.BUILDKIT_CACHE_CONFIG:
            config_desc = doc.config
            for layer in doc.layers:
                _add_entry(descriptors, extras, layer)
            form = "image-manifest"
        else:
            return _inline(doc, [doc], read_blob, what)
    else:
        for entry in doc.manifests:
            if entry.media_type == mt.BUILDKIT_CACHE_CONFIG:
                config_desc = entry
            else:
                _add_entry(descriptors, extras, entry)
        form = "index"
        if config_desc is None:
            children = [e for e in doc.manifests if mt.is_manifest(e.media_type)]
            if not children:
                raise CacheFormatError(
                    f"{what}: index has neither a {mt.BUILDKIT_CACHE_CONFIG} entry nor image manifests",
                    hint="the ref does not hold a build cache or an image with inline cache",
                )
            manifests = []
            for child in children:
                raw = read_blob(child, MAX_MANIFEST_SIZE)
                try:
                    parsed = parse_manifest(
                        raw, child.media_type, where=f"{what} child {child.digest}"
                    )
                except OCIError as exc:
                    raise CacheFormatError(exc.message) from exc
                if isinstance(parsed, ImageManifest):
                    manifests.append(parsed)
            return _inline(doc, manifests, read_blob, what)
    raw_config = read_blob(config_desc, MAX_CACHE_CONFIG_SIZE)
    config = parse_cache_config(raw_config, what=f"{what} cache config {config_desc.digest}")
    return ParsedCache(config, descriptors, form, config_desc, doc.descriptor(), tuple(extras))


def _inline(
    top: ImageManifest | ImageIndex,
    manifests: list[ImageManifest],
    read_blob: Callable[[Descriptor, int], bytes],
    what: str,
) -> ParsedCache:
    from mason.cache.inline import inline_config_from_image  # an image's inline cache only

    configs: list[CacheConfig] = []
    descriptors: dict[Digest, Descriptor] = {}
    for manifest in manifests:
        if not manifest.layers:
            continue
        raw = read_blob(manifest.config, _MAX_IMAGE_CONFIG)
        try:
            image_config = parse_image_config(
                raw, where=f"{what} image config {manifest.config.digest}"
            )
        except OCIError as exc:
            raise CacheFormatError(exc.message) from exc
        found = inline_config_from_image(image_config, manifest)
        if found is None:
            continue
        config, descs = found
        configs.append(config)
        for desc in descs:
            _add(descriptors, desc)
    if not configs:
        raise CacheFormatError(
            f"{what}: no cache found: the ref is an image without inline cache (moby.buildkit.cache.v0)",
            hint="build it with --cache-to type=inline, or point --cache-from at a cache ref",
        )
    return ParsedCache(_merge(configs), descriptors, "inline", None, top.descriptor())


def _merge(configs: list[CacheConfig]) -> CacheConfig:
    """Concatenate configs (one per platform image), shifting indexes."""
    if len(configs) == 1:
        return configs[0]
    layers: list[CacheLayer] = []
    records: list[CacheRecord] = []
    steps: dict[str, str] = {}
    explain: dict[str, Mapping[str, Any]] = {}
    for config in configs:
        lo, ro = len(layers), len(records)
        layers.extend(
            CacheLayer(x.blob, x.parent + lo if x.parent != -1 else -1) for x in config.layers
        )
        for rec in config.records:
            records.append(
                replace(
                    rec,
                    results=tuple(CacheResult(r.layer + lo, r.created_at) for r in rec.results),
                    chains=tuple(
                        ChainedResult(tuple(i + lo for i in c.layers), c.created_at)
                        for c in rec.chains
                    ),
                    inputs=tuple(
                        tuple(CacheInput(link.link + ro, link.selector) for link in inp)
                        for inp in rec.inputs
                    ),
                )
            )
        steps.update(config.steps)
        explain.update(config.explain)
    return CacheConfig(tuple(layers), tuple(records), steps, explain=explain)
