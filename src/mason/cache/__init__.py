"""mason's remote build cache: BuildKit's ``cacheconfig.v0`` model and the ``registry``,
``local`` and ``inline`` backends.

Builder-facing API: ``load_cache_source``, ``export_cache`` and the backend table here; the
model (``CacheSource``, ``CacheHit``, ``SolvedRecord``...) from ``mason.cache.model``, the
options (``parse_cache_to``/``parse_cache_from``, ``CacheOptions``) from ``mason.cache.options``,
the inline cache (``INLINE_CACHE_KEY``, ``inline_cache_value``) from ``mason.cache.inline``:

Options
    ``parse_cache_to(text, image_refs=()) -> list[CacheOptions]`` and
    ``parse_cache_from(text) -> list[CacheOptions]`` parse buildx's CSV syntax
    (``UsageError`` subclasses with clear messages). ``CacheOptions.display_name``
    is how progress names a source (``registry 127.0.0.1:5000/app-cache:latest``).

Import
    ``load_cache_source(options, client=None, progress=None) -> CacheSource``. ``client`` is a
    ``mason.registry.client.RegistryClient`` (anything matching
    ``mason.cache.registry.CacheRegistry``) and is needed for ``type=registry``.
    Reads only the manifest and the config. Never raises for a missing / forbidden /
    corrupt cache: the source is then empty and ``source.warning`` is one line to print.
    ``source.lookup(key) -> CacheHit | None`` is a dict lookup by the solver's full key;
    ``first_hit(sources, key)`` tries several ``--cache-from`` in order.
    ``CacheHit.layers`` are Descriptors, base first, each with ``containerd.io/uncompressed``
    (the diff ID; ``hit.diff_ids``) and, for registry sources,
    ``containerd.io/distribution.source.<host>=<repo>`` so an image push to that registry can
    mount instead of download. ``hit.open_blob(desc)`` opens a verified stream lazily;
    ``hit.source`` names the source for the progress line; ``hit.step`` the Dockerfile step
    that wrote it (mason-written caches).

Export
    The builder describes every settled step as a ``SolvedRecord(key, inputs, layers, step,
    created_at, selectors)`` and provides its content store as an ``ExportBlobStore``
    (``cache_blob(layer, compression, level, force) -> Descriptor`` compresses once and keeps
    the result; ``open_blob(desc) -> BinaryIO``). Then
    ``export_cache(options, records, blobs=, image_diff_ids=, client=, prior=, progress=) -> ExportResult``
    writes a registry or local cache. ``image_diff_ids`` are the exported image's layers
    (min mode keeps results whose chain is a prefix of them). ``prior`` is the
    ``CacheSource`` imported from the same ref, if any (known blobs, stable ``createdAt``).
    With ``ignore-error=true`` a failure comes back as ``ExportResult.warning``; otherwise it
    raises. Each blob is stored by ``mason.registry.push.push_blob(client, ref, desc, opener)``
    (HEAD, cross-repo mount from the repositories the descriptor's
    ``containerd.io/distribution.source.<host>`` annotation names, else upload in the session a
    declined mount opened); the image push uses the same step. The builder's ``cache_blob``
    descriptors name every repository known to hold the blob (pulled from, or stored to by
    an image push or an earlier export), and the builder records where each export stored
    its blobs (``ExportResult.uploaded/mounted/existing``) for the exports after it. ``type=inline`` is not exported here: the image exporter calls
    ``inline_cache_value(records, image_diff_ids)`` and stores the string in the image config
    under ``INLINE_CACHE_KEY``; ``--cache-from type=registry,ref=IMAGE`` reads it back.

Other helpers: ``mason.cache.options.insecure_hosts(opts)`` (hosts for the client's
``insecure_hosts`` from ``registry.insecure=true``), ``check_cache_exports(opts)`` (duplicate
``--cache-to``), ``mason.cache.inspect.describe_cache(source)`` (``mason cache inspect``).

Key scheme: see ``mason.cache.model``. Format details: ``mason.cache.format``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mason.cache.backends import ExportRequest
    from mason.cache.model import (
        CacheRegistry,
        CacheSource,
        ExportBlobStore,
        ExportResult,
        SolvedRecord,
    )
    from mason.cache.options import CacheOptions
    from mason.digest import Digest
    from mason.oci.descriptor import Descriptor
    from mason.progress import ProgressSink

__all__ = ["export_cache", "load_cache_source"]


def load_cache_source(
    options: CacheOptions,
    client: CacheRegistry | None = None,
    *,
    progress: ProgressSink | None = None,
) -> CacheSource:
    """Import one ``--cache-from`` entry; see the module docstring. Never raises for I/O or
    format problems (the returned source carries ``warning``). With ``progress`` it reports a
    vertex ``importing cache manifest from <source>`` (done, or warning with the reason)."""
    from mason.progress import Event

    vertex, name = (
        f"cache-import:{options.display_name}",
        f"importing cache manifest from {options.display_name}",
    )
    if progress is not None:
        progress.emit(Event(vertex, name, "started"))
    source = _load(options, client)
    if progress is not None:
        if source.warning:
            progress.emit(Event(vertex, name, "warning", text=source.warning))
        elif source.missing:
            progress.emit(Event(vertex, name, "done", text=source.missing))
        else:
            progress.emit(
                Event(
                    vertex,
                    name,
                    "done",
                    text=f"{len(source.config.records)} records ({source.form} form)",
                )
            )
    return source


def _load(options: CacheOptions, client: CacheRegistry | None) -> CacheSource:
    from mason.cache.backends import backend_of
    from mason.cache.model import CacheSource

    load = backend_of(options).load
    if load is None:
        return CacheSource.empty(
            options.display_name, f"cache type {options.type} cannot be imported"
        )
    return load(options, client)


def export_cache(
    options: CacheOptions,
    records: Sequence[SolvedRecord],
    *,
    blobs: ExportBlobStore,
    image_diff_ids: Sequence[Digest] | Sequence[Sequence[Digest]] | None,
    client: CacheRegistry | None = None,
    prior: CacheSource | None = None,
    clock: Callable[[], str] | None = None,
    progress: ProgressSink | None = None,
    max_workers: int = 4,
    cache_mounts: Mapping[str, Descriptor] | None = None,
    written: Callable[[], None] | None = None,
) -> ExportResult:
    """Export one ``--cache-to`` entry whose backend has an exporter (registry, local).
    ``cache_mounts``: the build's ``RUN --mount=type=cache`` contents (id -> layer), which a
    registry export with ``cache-mounts=true`` stores too. ``written``: called once the
    cache is written, before a registry export reads it back (``ExportRequest.written``).

    Failures raise (``MasonError``) unless ``options.ignore_error``: then the result carries
    ``warning`` and nothing was (necessarily) written.
    """
    from mason.cache.backends import ExportRequest
    from mason.cache.format import rfc3339_nano
    from mason.cache.model import CacheExportError, ExportResult
    from mason.errors import MasonError
    from mason.progress import Event

    tick = clock or rfc3339_nano
    vertex, name = (
        f"cache-export:{options.display_name}",
        f"exporting cache to {options.display_name}",
    )
    if progress is not None:
        progress.emit(Event(vertex, name, "started"))
    request = ExportRequest(
        records,
        blobs,
        image_diff_ids,
        client,
        prior,
        tick,
        max_workers,
        dict(cache_mounts or {}),
        written,
    )
    try:
        result = _export(options, request)
    except (MasonError, OSError) as exc:
        text = str(exc).replace(chr(10), " | ")
        if not options.ignore_error:
            if progress is not None:
                progress.emit(Event(vertex, name, "error", text=text))
            if isinstance(exc, OSError):
                raise CacheExportError(
                    f"cache export to {options.display_name} failed: {exc}"
                ) from exc
            raise
        warning = f"cache export to {options.display_name} failed (ignore-error=true): {text}"
        if progress is not None:
            progress.emit(Event(vertex, name, "warning", text=warning))
        return ExportResult(options.display_name, warning=warning)
    if progress is not None:
        summary = result.skipped_reason or (
            "unchanged"
            if result.unchanged
            else f"{len(result.uploaded)} uploaded, {len(result.mounted)} mounted, {len(result.existing)} present"
        )
        progress.emit(Event(vertex, name, "done", text=summary))
    return result


def _export(options: CacheOptions, request: ExportRequest) -> ExportResult:
    from mason.cache.backends import backend_of
    from mason.cache.model import CacheExportError

    export = backend_of(options).export
    if export is None:
        raise CacheExportError(
            f"--cache-to type={options.type} is written by the image exporter, not export_cache",
            hint="call inline_cache_value() while building the image config",
        )
    return export(options, request)
