"""``--build-context NAME=VALUE`` and ``--no-cache-filter STAGE`` (buildx v0.36's flags).

A named context replaces, for the Dockerfile frontend 1.26, a stage of that name or an
image named in ``FROM``, ``COPY --from`` or ``RUN --mount=from=``. Names are compared as
buildx and BuildKit's dockerui compare them: the reference's familiar spelling without
``:latest`` (``docker.io/library/alpine:latest`` and ``alpine`` are one name).

mason takes ``docker-image://REF`` values; a local directory and ``oci-layout://`` are
parsed and checked as buildx does, then refused before the build starts (not built yet);
``target:`` is buildx bake's only and is refused as buildx build refuses it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mason.errors import DiagnosticError, UsageError
from mason.oci.reference import Reference

DOCKER_IMAGE = "docker-image://"
OCI_LAYOUT = "oci-layout://"


@dataclass(frozen=True)
class NamedContext:
    """One ``--build-context``: ``kind`` is ``image``, ``dir`` or ``oci-layout``."""

    name: str
    kind: str
    value: str


def context_name(name: str) -> str:
    """The key a name is looked up by: ``alpine`` for ``docker.io/library/alpine:latest``."""
    ref = Reference.parse(name, default_tag=False)
    return ref.familiar.removesuffix(":latest")


def parse_build_context(text: str) -> NamedContext:
    """``NAME=VALUE`` as buildx reads it; a bad form, name, scheme or a missing directory is
    a UsageError (exit 2) naming the flag value."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise UsageError(
            f"invalid --build-context {text!r}: expected NAME=VALUE",
            reference="invalid-build-context",
        )
    try:
        key = context_name(name)
    except DiagnosticError as exc:
        raise UsageError(
            f"invalid --build-context name {name!r}: {exc.message}",
            reference="invalid-build-context",
        ) from None
    if value.startswith(DOCKER_IMAGE):
        ref = value.removeprefix(DOCKER_IMAGE)
        try:
            Reference.parse(ref)
        except DiagnosticError as exc:
            raise UsageError(
                f"invalid --build-context {text!r}: {exc.message}",
                reference="invalid-build-context",
            ) from None
        return NamedContext(key, "image", ref)
    if value.startswith(OCI_LAYOUT):
        return NamedContext(key, "oci-layout", value.removeprefix(OCI_LAYOUT))
    if value.startswith("target:"):
        raise UsageError(
            f"--build-context {text!r}: target: contexts are for buildx bake only",
            reference="invalid-build-context",
        )
    if "://" in value:
        raise UsageError(
            f"--build-context {text!r}: unsupported scheme {value.split('://')[0]!r} "
            "(docker-image://, oci-layout:// or a local directory)",
            reference="invalid-build-context",
        )
    if not Path(value).is_dir():
        raise UsageError(
            f"--build-context {text!r}: {value} is not a directory",
            reference="invalid-build-context",
        )
    return NamedContext(key, "dir", value)


def check_buildable(contexts: Iterable[NamedContext]) -> None:
    """Refuse, before the build starts, the kinds mason parses but does not build yet."""
    for c in contexts:
        if c.kind != "image":
            what = "a local directory" if c.kind == "dir" else "an oci-layout://"
            raise UsageError(
                f"--build-context {c.name}: {what} named context is not supported by mason yet "
                "(docker-image:// is)",
                reference="unsupported-build-context",
            )


def image_overrides(contexts: Iterable[NamedContext]) -> dict[str, str]:
    """name -> image reference (the last of one name wins, as buildx's map)."""
    return {c.name: c.value for c in contexts if c.kind == "image"}


def lookup(overrides: Mapping[str, str], name: str) -> str | None:
    """The image a named context puts in place of ``name`` (a stage name or image ref)."""
    if not overrides or not name:
        return None
    try:
        return overrides.get(context_name(name))
    except DiagnosticError:  # not a reference (e.g. a stage index): nothing overrides it
        return None


def parse_no_cache_filter(values: Iterable[str]) -> tuple[str, ...]:
    """``--no-cache-filter`` values, each comma-separated as buildx splits them."""
    return tuple(s.strip().lower() for v in values for s in v.split(",") if s.strip())
