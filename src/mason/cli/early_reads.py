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
    unpacks = False
    with contextlib.suppress(Exception):  # the build reads the Dockerfile and says what is wrong
        images, unpacks = _base_images(opts)
    # with no cache to take steps from, a step that writes files unpacks its base: its layers
    # are read while the engine imports (those the root lacks, within the budget)
    budget = _LAYER_BUDGET if unpacks and not opts.cache_from else 0
    return _start(images, pings, budget)


#: the bytes of base-image layers a build reads early, at most (held in memory until used)
_LAYER_BUDGET = 16 * 1024 * 1024


def _start(reads: Iterable[_Read], pings: EarlyPings | None, budget: int = 0) -> EarlyPings | None:
    from mason.cache.blobcheck import MAGIC_BYTES
    from mason.oci import mediatypes as mt
    from mason.registry.early import start_pings
    from mason.registry.prefetch import Prefetch

    for ref, platform in reads:
        if pings is None and (pings := start_pings([])) is None:
            return None  # a proxy: the Transport goes through it, a bare socket would not
        if pings.prefetch is None:
            accept = ", ".join(mt.MANIFEST_MEDIA_TYPES)
            pings.prefetch = Prefetch(
                pings, accept, peek_bytes=MAGIC_BYTES, layer_budget=budget, have=_stored
            )
        pings.start(ref.api_host)
        pings.prefetch.start(ref.api_host, ref.repository, ref.identifier, platform)
    return pings


def _stored(digest: str) -> bool:
    """Whether the build's root holds blob ``digest`` (read in a prefetch thread)."""
    from mason.cli.state_cmd import resolve_root
    from mason.digest import Digest
    from mason.engine.stateroot import StateRoot

    return StateRoot(resolve_root()).store.has(Digest(digest))


def _base_images(opts: BuildOptions) -> tuple[list[_Read], bool]:
    """The image references the build's stages start from, with their platforms; and whether
    a stage writes files (RUN, COPY, ADD, WORKDIR: its base is unpacked when they run)."""
    if opts.build_contexts:  # a named context may stand in for an image
        return [], False
    from mason.dockerfile import parse_dockerfile
    from mason.dockerfile.stages import plan_build
    from mason.engine.options import predefined_args, read_dockerfile
    from mason.oci.platform import host_platform

    data, name, _ = read_dockerfile(opts)
    df = parse_dockerfile(data, name)
    reads: dict[_Read, None] = {}
    writes = False
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
            writes = writes or any(_writes_files(c) for c in ps.stage.commands)
    return list(reads), writes


def _writes_files(command: object) -> bool:
    from mason.dockerfile.instructions import (
        AddCommand,
        CopyCommand,
        RunCommand,
        WorkdirCommand,
    )

    if isinstance(command, CopyCommand | AddCommand):
        return not (command.link and not command.chmod)  # COPY --link needs no base
    return isinstance(command, RunCommand | WorkdirCommand)
