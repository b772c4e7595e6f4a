"""The registry reads a build makes first, started before the engine is imported (start-up,
issue 14): the ``--cache-from`` refs' documents, then the base images the Dockerfile names
(read with the real parser and stage planner, for each target platform, as the build plans
them). ``mason.registry.prefetch`` reads them from registries that ask for no credentials;
the build's registry client takes the answers. Anything unclear here (an unreadable or bad
Dockerfile, a ``--build-context`` that may stand in for an image) starts nothing: the build
reads and reports on its own path."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from mason.engine.options import BuildOptions
from mason.oci.reference import Reference
from mason.registry.early import EarlyPings

__all__ = ["start_reads"]

#: (the reference, the platform it is resolved for: "" for a cache)
_Read = tuple[Reference, str]


def start_reads(opts: BuildOptions, pings: EarlyPings | None) -> EarlyPings | None:
    """Start ``opts``' first registry reads beside ``pings`` (the command line's; made here
    when only the Dockerfile names a registry); the pings to hand to the build, or None
    (no registry at all, or a proxy in the environment)."""
    caches: list[_Read] = [(c.ref, "") for c in opts.cache_from if c.ref is not None]
    pings = _start(caches, pings)  # before the Dockerfile is parsed: they need nothing of it
    images: list[_Read] = []
    with contextlib.suppress(Exception):  # the build reads the Dockerfile and says what is wrong
        images = _base_images(opts)
    return _start(images, pings)


def _start(reads: Iterable[_Read], pings: EarlyPings | None) -> EarlyPings | None:
    from mason.cache.blobcheck import MAGIC_BYTES
    from mason.oci import mediatypes as mt
    from mason.registry.early import start_pings
    from mason.registry.prefetch import Prefetch

    for ref, platform in reads:
        if pings is None and (pings := start_pings([])) is None:
            return None  # a proxy: the Transport goes through it, a bare socket would not
        if pings.prefetch is None:
            accept = ", ".join(mt.MANIFEST_MEDIA_TYPES)
            pings.prefetch = Prefetch(pings, accept, peek_bytes=MAGIC_BYTES)
        pings.start(ref.api_host)
        pings.prefetch.start(ref.api_host, ref.repository, ref.identifier, platform)
    return pings


def _base_images(opts: BuildOptions) -> list[_Read]:
    """The image references the build's stages start from, with their platforms."""
    if opts.build_contexts:  # a named context may stand in for an image
        return []
    from mason.dockerfile import parse_dockerfile
    from mason.dockerfile.stages import plan_build
    from mason.engine.options import predefined_args, read_dockerfile
    from mason.oci.platform import host_platform

    data, name, _ = read_dockerfile(opts)
    df = parse_dockerfile(data, name)
    reads: dict[_Read, None] = {}
    for platform in opts.platforms or (host_platform(),):
        plan = plan_build(
            df,
            build_args=dict(opts.build_args),
            predefined=predefined_args(platform),
            target=opts.target,
        )
        for ps in plan.stages:
            if ps.base.image is not None and not ps.base.is_scratch:
                reads[(Reference.parse(ps.base.image), ps.platform or str(platform))] = None
    return list(reads)
