"""The ``local`` cache backend: an OCI image-layout directory.

Export (``dest=DIR[,tag=T]``) writes the same documents as the registry backend into
``blobs/``, then points ``index.json``'s entry named ``T`` (default ``latest``) at the
cache manifest, replacing an older entry of that name. Blobs already present are not
rewritten; old blobs are kept (BuildKit's behaviour; ``reset=true`` removes blobs no
``index.json`` entry reaches).

Import (``src=DIR[,tag=T|digest=D]``) reads ``index.json`` (BuildKit's layouts without
``oci-layout`` and without a ``mediaType`` are fine), the manifest and the config; layer
blobs are opened on demand and verified as they stream.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import BinaryIO

from mason.cache.backends import CacheBackend, ExportRequest
from mason.cache.document import MAX_MANIFEST_SIZE, plan_cache_document, read_cache_document
from mason.cache.format import CacheFormatError, rfc3339_nano
from mason.cache.model import (
    CacheExportError,
    CacheSource,
    ExportBlobStore,
    ExportResult,
    SolvedRecord,
)
from mason.cache.options import (
    COMMON_EXPORT_ATTRS,
    CacheOptions,
    CacheOptionsError,
    export_settings,
    option_bool,
    parse_tag,
)
from mason.digest import Digest, DigestError, parse_digest, sha256_bytes
from mason.errors import MasonError
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.layout import OCILayout
from mason.oci.manifest import ImageManifest, parse_manifest
from mason.oci.reference import Reference
from mason.structs import replace

__all__ = ["BACKEND", "export_local_cache", "load_local_cache"]


class _LayoutBlobs:
    def __init__(self, layout: OCILayout) -> None:
        self._layout = layout

    def open_blob(self, desc: Descriptor) -> AbstractContextManager[BinaryIO]:
        return self._layout.open_blob(desc)  # type: ignore[return-value]

    def peek_blob(self, desc: Descriptor, n: int) -> bytes | None:
        try:
            with open(self._layout.blob_path(desc.digest), "rb") as f:
                return f.read(n)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None


def _read_small(layout: OCILayout, desc: Descriptor, limit: int) -> bytes:
    if desc.size > limit:
        raise CacheFormatError(
            f"{desc.media_type} {desc.digest} in {layout.path} is too large ({desc.size} > {limit} bytes)"
        )
    return layout.read_blob(desc)


def _open_source(layout: OCILayout, name: str, *, tag: str, digest: str | None) -> CacheSource:
    entry = layout.resolve(digest or tag)
    raw = _read_small(layout, entry, MAX_MANIFEST_SIZE)
    doc = parse_manifest(
        raw, entry.media_type or None, where=f"{layout.path} manifest {entry.digest}"
    )
    parsed = read_cache_document(
        doc, lambda d, limit: _read_small(layout, d, limit), what=f"local cache {layout.path}"
    )
    return CacheSource(
        name,
        parsed.config,
        parsed.descriptors,
        _LayoutBlobs(layout),
        manifest=parsed.manifest,
        form=parsed.form,
        config_descriptor=parsed.config_descriptor,
        origin=layout.path,
    )


def load_local_cache(options: CacheOptions) -> CacheSource:
    """Import a local cache; a missing directory, tag or blob gives an empty source with a
    warning (BuildKit: ``local cache import at DIR skipped``)."""
    path = options.path or ""
    name = options.display_name
    if not os.path.lexists(path):
        # nothing exported there yet: the normal first build, not a failed import
        return CacheSource.empty(
            name, origin=os.path.abspath(path), missing=f"no cache at {path} yet"
        )
    try:
        layout = OCILayout.open(path)
        return _open_source(layout, name, tag=options.tag, digest=options.digest)
    except Exception as exc:
        text = (
            str(exc).replace("\n", " | ")
            if isinstance(exc, MasonError)
            else f"{type(exc).__name__}: {exc}"
        )
        return CacheSource.empty(
            name, f"local cache import at {path} skipped: {text}", origin=os.path.abspath(path)
        )


def export_local_cache(
    options: CacheOptions,
    records: Sequence[SolvedRecord],
    *,
    blobs: ExportBlobStore,
    image_diff_ids: Sequence[Digest] | Sequence[Sequence[Digest]] | None,
    prior: CacheSource | None = None,
    clock: Callable[[], str] = rfc3339_nano,
) -> ExportResult:
    """Write the cache into ``options.path`` (created when missing). Raises on failure."""
    if not options.path:
        raise CacheExportError("local cache exporter requires dest")
    layout = OCILayout.create(options.path)
    destination = f"local {layout.path}:{options.tag}"
    if prior is None or prior.origin != layout.path:
        try:
            prior = _open_source(layout, destination, tag=options.tag, digest=None)
        except MasonError:
            prior = None
    plan, built = plan_cache_document(
        options, records, blobs=blobs, image_diff_ids=image_diff_ids, prior=prior, clock=clock
    )
    if built is None:
        return ExportResult(
            destination, records=len(plan.config.records), skipped_reason="no layers to export"
        )
    document, config_desc = built
    uploaded: list[Digest] = []
    existing: list[Digest] = []
    written = 0
    for desc in plan.blobs:
        if layout.has_blob(desc.digest):
            existing.append(desc.digest)
            continue
        with blobs.open_blob(desc) as stream:
            layout.put_blob_stream(stream, desc.media_type, desc.digest, desc.size)
        uploaded.append(desc.digest)
        written += desc.size
    for raw, media_type in (
        (plan.config_raw, config_desc.media_type),
        (document.raw, document.media_type),
    ):
        if layout.has_blob(sha256_bytes(raw)):
            existing.append(sha256_bytes(raw))
        else:
            layout.put_blob_stream(io.BytesIO(raw), media_type)
            uploaded.append(sha256_bytes(raw))
            written += len(raw)
    manifest_desc = document.descriptor()
    unchanged = (
        prior is not None
        and prior.manifest is not None
        and prior.manifest.digest == manifest_desc.digest
    )
    if not unchanged:
        layout.add_manifest(manifest_desc, ref_name=options.tag)
    if options.reset:
        _reset(layout)
    return ExportResult(
        destination,
        manifest_desc,
        tuple(uploaded),
        (),
        tuple(existing),
        unchanged=unchanged,
        records=len(plan.config.records),
        records_with_results=plan.records_with_results,
        bytes_uploaded=written,
    )


def _reset(layout: OCILayout) -> None:
    """Remove blobs that no ``index.json`` entry reaches (``reset=true``)."""
    reachable: set[str] = set()
    for entry in layout.read_index().manifests:
        stack = [entry]
        while stack:
            desc = stack.pop()
            if desc.digest in reachable or not layout.has_blob(desc.digest):
                continue
            reachable.add(desc.digest)
            if desc.size > MAX_MANIFEST_SIZE or not (
                mt.is_manifest(desc.media_type)
                or mt.is_index(desc.media_type)
                or not desc.media_type
            ):
                continue  # a layer or config: a leaf
            try:
                doc = parse_manifest(layout.read_blob(desc), desc.media_type or None)
            except MasonError:
                continue  # a layer or config: a leaf
            if isinstance(doc, ImageManifest):
                stack.append(doc.config)
                stack.extend(doc.layers)
            else:
                stack.extend(doc.manifests)
    for digest in list(layout.iter_blobs()):
        if digest not in reachable:
            with contextlib.suppress(OSError):  # best effort, as BuildKit's reset
                os.unlink(layout.blob_path(digest))


# -- the backend (mason.cache.backends) ------------------------------------------------


def _parse_to(attrs: Mapping[str, str], text: str, images: Sequence[Reference]) -> CacheOptions:
    dest = attrs.get("dest", "").strip()
    if not dest:
        raise CacheOptionsError(f"invalid --cache-to {text!r}: local cache exporter requires dest")
    reset = option_bool("reset", attrs["reset"], text) if "reset" in attrs else False
    base = CacheOptions(
        "local",
        "to",
        text,
        dict(attrs),
        path=dest,
        tag=parse_tag(attrs.get("tag", "latest"), text),
        reset=reset,
    )
    return replace(base, **export_settings(attrs, text))


def _parse_from(attrs: Mapping[str, str], text: str) -> list[CacheOptions]:
    src = attrs.get("src", "").strip()
    if not src:
        raise CacheOptionsError(f"invalid --cache-from {text!r}: local cache importer requires src")
    digest = attrs.get("digest", "").strip() or None
    if digest is not None:
        try:
            digest = parse_digest(digest)
        except DigestError as exc:
            raise CacheOptionsError(f"invalid --cache-from {text!r}: {exc.message}") from exc
    return [
        CacheOptions(
            "local",
            "from",
            text,
            dict(attrs),
            path=src,
            tag=parse_tag(attrs.get("tag", "latest"), text),
            digest=digest,
        )
    ]


def _export(options: CacheOptions, req: ExportRequest) -> ExportResult:
    return export_local_cache(
        options,
        req.records,
        blobs=req.blobs,
        image_diff_ids=req.image_diff_ids,
        prior=req.prior,
        clock=req.clock,
    )


BACKEND = CacheBackend(
    "local",
    display_name=lambda o: f"local {o.path}" + (f"@{o.digest}" if o.digest else f":{o.tag}"),
    destination=lambda o: f"local {os.path.abspath(o.path or '')}:{o.tag}",
    export_attrs=frozenset({"dest", "tag", "reset"}) | COMMON_EXPORT_ATTRS,
    parse_to=_parse_to,
    progress_name="client directory",  # BuildKit's
    export=_export,
    import_attrs=frozenset({"src", "tag", "digest"}),
    ignored_import_attrs=COMMON_EXPORT_ATTRS | {"dest", "reset"},
    parse_from=_parse_from,
    load=lambda options, _client: load_local_cache(options),
)
