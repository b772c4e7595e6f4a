"""The table of cache backends (``--cache-to``/``--cache-from type=NAME``), as BuildKit has:
each name maps to a module whose ``BACKEND`` says which attributes it takes, how to parse
them, how to import a cache and how to export one.

A new backend (say ``type=s3``) is one module, ``mason/cache/s3.py`` with a ``BACKEND``, and
one line in ``_MODULES``. Nothing else in ``mason.cache`` (nor in ``build`` or ``cli``)
looks at a cache's type: they ask its backend here. ``scripts/test.sh`` fails on a
``type ==`` dispatch in ``mason.cache`` outside this module.

Backend modules load only when a cache of their type is used (the registry one pulls in the
registry client).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from mason.structs import Struct, field

if TYPE_CHECKING:
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
    from mason.oci.reference import Reference

__all__ = ["BACKEND_NAMES", "CacheBackend", "ExportRequest", "backend", "backend_of"]

#: type name -> the module that implements it (its ``BACKEND``)
_MODULES: dict[str, str] = {
    "registry": "mason.cache.registry",
    "local": "mason.cache.local",
    "inline": "mason.cache.inline",
}
BACKEND_NAMES: tuple[str, ...] = tuple(_MODULES)


class ExportRequest(Struct, frozen=True):
    """What every exporter gets besides its options."""

    records: Sequence[SolvedRecord]
    blobs: ExportBlobStore
    image_diff_ids: Sequence[Digest] | Sequence[Sequence[Digest]] | None
    client: CacheRegistry | None
    prior: CacheSource | None
    clock: Callable[[], str]
    max_workers: int
    #: the build's ``RUN --mount=type=cache`` contents, id -> layer (``cache-mounts=true``)
    cache_mounts: Mapping[str, Descriptor] = field(default_factory=dict)
    #: called once the cache is written, before an export reads it back (its settle wait)
    written: Callable[[], None] | None = None


class CacheBackend(Struct, frozen=True):
    """One cache backend. ``parse_to``/``parse_from`` get the attributes (already checked
    against ``export_attrs``/``import_attrs``) and the whole option text (for messages)."""

    name: str
    #: how progress and errors name a cache of this type (``registry REF``, ``local DIR:TAG``)
    display_name: Callable[[CacheOptions], str]
    #: what two ``--cache-to`` must not share (BuildKit: "duplicate cache exports")
    destination: Callable[[CacheOptions], str]
    #: ``--cache-to`` attributes besides ``type``; None: not an export target
    export_attrs: frozenset[str] | None = None
    parse_to: Callable[[Mapping[str, str], str, Sequence[Reference]], CacheOptions] | None = None
    #: BuildKit's vertex name ``exporting cache to <progress_name>``
    progress_name: str = ""
    #: writes the cache; None with ``export_attrs`` set: the records ride in the image config
    export: Callable[[CacheOptions, ExportRequest], ExportResult] | None = None
    #: ``--cache-from`` attributes besides ``type``; None: cannot be imported from
    import_attrs: frozenset[str] | None = None
    #: export-only attributes ``--cache-from`` accepts and ignores (buildx passes them through,
    #: and CI often reuses one string for both flags)
    ignored_import_attrs: frozenset[str] = frozenset()
    #: one import per source the attributes name (a registry ``scope=`` names its fallbacks too)
    parse_from: Callable[[Mapping[str, str], str], Sequence[CacheOptions]] | None = None
    #: never raises for a missing, forbidden or corrupt cache (the source carries a warning)
    load: Callable[[CacheOptions, CacheRegistry | None], CacheSource] | None = None

    @property
    def in_image(self) -> bool:
        """Whether an export of this type is written into the image config by the image exporter."""
        return self.export_attrs is not None and self.export is None


def backend(name: str) -> CacheBackend | None:
    """The backend called ``name``, or None when mason has none by that name."""
    module = _MODULES.get(name)
    if module is None:
        return None
    found: CacheBackend = importlib.import_module(module).BACKEND
    return found


def backend_of(options: CacheOptions) -> CacheBackend:
    """The backend of parsed options (whose type was checked when they were parsed)."""
    found = backend(options.type)
    if found is None:
        raise KeyError(f"no cache backend {options.type!r}")
    return found
