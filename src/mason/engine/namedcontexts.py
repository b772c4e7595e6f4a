"""``--build-context NAME=VALUE`` and ``--no-cache-filter STAGE`` (buildx v0.36's flags).

A named context replaces, for the Dockerfile frontend 1.26, a stage of that name or an
image named in ``FROM``, ``COPY --from`` or ``RUN --mount=from=``. Names are compared as
buildx and BuildKit's dockerui compare them: the reference's familiar spelling without
``:latest`` (``docker.io/library/alpine:latest`` and ``alpine`` are one name).

Three kinds, as buildx sends them to BuildKit's dockerui (``namedcontext.go``):

* ``docker-image://REF``: an image from a registry;
* a local directory: a source of files like the main context, with the ``.dockerignore``
  at its own root (never ``Dockerfile.dockerignore``: dockerui reads only
  ``.dockerignore`` of a named context); as a ``FROM`` base it is a one-layer root file
  system with an empty image config;
* ``oci-layout://DIR[:TAG][@sha256:DIGEST]``: an image read from a local OCI layout, no
  registry. Parsed as buildx's ``parseOCILayoutPath`` (the last ``@`` followed by a digest,
  then the last ``:`` followed by a tag; ``latest`` by default); without a digest the tag is
  looked up in ``index.json`` (``io.containerd.image.name``, then
  ``org.opencontainers.image.ref.name``), else its only entry (buildx's ``resolveDigest``).

``target:`` is buildx bake's only and is refused as buildx build refuses it. Every path read
from a directory or a layout is resolved inside it (``mason.fsroot``)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from mason.digest import Digest, DigestError, VerifyingReader, digest_of, hasher_for, parse_digest
from mason.errors import BuildError, DiagnosticError, UsageError
from mason.fsroot import FsRoot
from mason.oci.reference import Reference
from mason.structs import Struct

if TYPE_CHECKING:
    from mason.oci.descriptor import Descriptor
    from mason.oci.manifest import ImageIndex
    from mason.oci.platform import Platform

DOCKER_IMAGE = "docker-image://"
OCI_LAYOUT = "oci-layout://"
_DIGEST = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_REF_NAME = "org.opencontainers.image.ref.name"
_IMAGE_NAME = "io.containerd.image.name"
#: index.json and manifests are small documents: a bigger one is not read into memory
_MAX_DOCUMENT = 4 << 20


class NamedContext(Struct, frozen=True):
    """One ``--build-context``: ``kind`` is ``image``, ``dir`` or ``oci-layout``. ``value`` is
    the image reference, the directory, or the layout's directory; ``digest`` (oci-layout)
    the index or manifest it names."""

    name: str
    kind: str
    value: str
    digest: str = ""


def context_name(name: str) -> str:
    """The key a name is looked up by: ``alpine`` for ``docker.io/library/alpine:latest``."""
    ref = Reference.parse(name, default_tag=False)
    return ref.familiar.removesuffix(":latest")


def _usage(text: str, why: str) -> UsageError:
    return UsageError(f"--build-context {text!r}: {why}", reference="invalid-build-context")


def parse_build_context(text: str) -> NamedContext:
    """``NAME=VALUE`` as buildx reads it; a bad form, name, scheme, a missing directory or an
    oci-layout tag that index.json does not have is a UsageError (exit 2) naming the value."""
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
        return _oci_layout_context(text, key, value)
    if value.startswith("target:"):
        raise _usage(text, "target: contexts are for buildx bake only")
    if "://" in value:
        raise _usage(
            text,
            f"unsupported scheme {value.split('://')[0]!r} "
            "(docker-image://, oci-layout:// or a local directory)",
        )
    if not Path(value).is_dir():
        raise _usage(text, f"{value} is not a directory")
    return NamedContext(key, "dir", os.path.abspath(value))


def parse_oci_layout_path(text: str) -> tuple[str, str, str]:
    """buildx's ``parseOCILayoutPath``: (directory, digest or "", tag, ``latest`` by default)."""
    path, digest, tag = text, "", ""
    at = path.rfind("@")
    if at >= 0 and _DIGEST.match(path[at + 1 :]):
        path, digest = path[:at], path[at + 1 :]
    colon = path.rfind(":")
    if colon >= 0 and _TAG.match(path[colon + 1 :]):
        path, tag = path[:colon], path[colon + 1 :]
    return path, digest, tag or "latest"


def _oci_layout_context(text: str, key: str, value: str) -> NamedContext:
    path, digest, tag = parse_oci_layout_path(value.removeprefix(OCI_LAYOUT))
    if not path or not Path(path).is_dir():
        raise _usage(text, f"OCI layout {path or '(empty)'} is not a directory")
    if digest:
        try:
            parse_digest(digest)
        except DigestError as exc:
            raise _usage(text, exc.message) from None
    else:
        digest = _resolve_tag(text, Path(path), tag)
    return NamedContext(key, "oci-layout", os.path.abspath(path), digest)


def _resolve_tag(text: str, layout: Path, tag: str) -> str:
    """buildx's ``resolveDigest``: the entry named ``tag``, else the only entry."""
    try:
        index = json.loads(_read_in(layout, "index.json"))
        entries = [e for e in index.get("manifests") or [] if isinstance(e, dict)]
    except (OSError, ValueError, AttributeError, BuildError) as exc:
        why = exc.message if isinstance(exc, BuildError) else str(exc)
        raise _usage(text, f"cannot read {layout}/index.json: {why}") from None
    for key in (_IMAGE_NAME, _REF_NAME):
        found = [e for e in entries if (e.get("annotations") or {}).get(key) == tag]
        if found:
            return _entry_digest(text, found[0])
    if len(entries) == 1:
        return _entry_digest(text, entries[0])
    names = sorted({str((e.get("annotations") or {}).get(_REF_NAME)) for e in entries} - {"None"})
    raise UsageError(
        f'oci-layout reference "{text.partition("=")[2]}" could not be resolved: '
        f"failed to resolve digest (no entry named {tag!r} in {layout}/index.json)",
        reference="invalid-build-context",
        hint=f"names in index.json: {', '.join(names)}" if names else "add @sha256:DIGEST",
    )


def _entry_digest(text: str, entry: Mapping[str, Any]) -> str:
    try:
        return parse_digest(str(entry.get("digest")))
    except DigestError as exc:
        raise _usage(text, f"invalid digest in index.json: {exc.message}") from None


def _read_in(root: Path, rel: str, limit: int = _MAX_DOCUMENT) -> bytes:
    """A regular file of ``root`` resolved inside it; BuildError when missing or too big."""
    try:
        with FsRoot(root) as fs:
            fd = fs.open(rel, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, DiagnosticError) as exc:
        why = exc.message if isinstance(exc, DiagnosticError) else (exc.strerror or str(exc))
        raise BuildError(f"{root}/{rel}: {why}", reference="oci-layout") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise BuildError(f"{root}/{rel} is not a regular file", reference="oci-layout")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise BuildError(f"{root}/{rel} is larger than {limit} bytes", reference="oci-layout")
    return data


def _blob_rel(digest: str) -> str:
    algorithm, _, hexpart = parse_digest(digest).partition(":")
    return f"blobs/{algorithm}/{hexpart}"


def read_layout_blob(layout: Path, digest: str) -> bytes:
    """A document blob of the layout, resolved inside it and checked against ``digest``."""
    data = _read_in(layout, _blob_rel(digest))
    h = hasher_for(Digest(digest))
    h.update(data)
    if digest_of(h) != digest:
        raise BuildError(
            f"blob {digest} in OCI layout {layout} does not match its digest",
            reference="oci-layout",
        )
    return data


def layout_blob_opener(
    layout: Path, digest: Digest, size: int
) -> Callable[[], contextlib.AbstractContextManager[BinaryIO]]:
    """Opens a layer blob of the layout (inside it), verified as it streams."""

    @contextlib.contextmanager
    def _open() -> Iterator[BinaryIO]:
        with FsRoot(layout) as fs:
            fd = fs.open(_blob_rel(digest), os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            yield VerifyingReader(f, digest, size, what=f"blob {digest} in {layout}")  # type: ignore[misc]

    return _open


class LayoutImage(Struct, frozen=True):
    """The image an oci-layout context names for one platform: its manifest's digest, its
    config, and its layers (descriptor, diff ID)."""

    manifest_digest: str
    config: Mapping[str, Any]
    layers: tuple[tuple[Any, Digest], ...]


def layout_image(nc: NamedContext, platform: Any) -> LayoutImage:
    """Read the image ``nc.digest`` names from the layout: an index is narrowed to
    ``platform`` (the build's, as BuildKit's OCI layout resolver does), then the manifest,
    its config and layer descriptors. BuildError on a missing blob, a bad document, no
    image for the platform."""
    from mason.oci.manifest import ImageIndex, parse_manifest

    layout, digest = Path(nc.value), nc.digest
    where = f"oci-layout context {nc.name} ({layout})"
    try:
        doc = parse_manifest(read_layout_blob(layout, digest), where=where)
        if isinstance(doc, ImageIndex):
            digest = platform_entry(doc, platform, f"{where}: {digest}").digest
            doc = parse_manifest(read_layout_blob(layout, digest), where=where)
        if isinstance(doc, ImageIndex):
            raise BuildError(f"{where}: nested image index", reference="oci-layout")
        config = json.loads(read_layout_blob(layout, doc.config.digest))
    except DiagnosticError as exc:
        if isinstance(exc, BuildError) and exc.message.startswith(where):
            raise
        raise BuildError(f"{where}: {exc.message}", reference="oci-layout") from None
    except ValueError as exc:
        raise BuildError(f"{where}: bad image config: {exc}", reference="oci-layout") from None
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(doc.layers):
        raise BuildError(
            f"{where}: config lists {len(diff_ids)} diff IDs for {len(doc.layers)} layers",
            reference="invalid-image",
        )
    layers = tuple((d, parse_digest(str(i))) for d, i in zip(doc.layers, diff_ids, strict=True))
    return LayoutImage(digest, config, layers)


def platform_entry(index: ImageIndex, platform: Platform, what: str) -> Descriptor:
    """The entry of ``index`` for ``platform``; a BuildError naming ``what``
    and the index's platforms when it has none (a registry's index or a layout's alike)."""
    entry = index.for_platform(platform)
    if entry is None:
        have = ", ".join(str(d.platform) for d in index.manifests if d.platform) or "none"
        raise BuildError(
            f"{what} has no image for platform {platform}",
            reference="platform-not-found",
            context=[f"platforms in the index: {have}"],
        )
    return entry


def overrides(contexts: Iterable[NamedContext]) -> dict[str, NamedContext]:
    """name -> named context (the last of one name wins, as buildx's map)."""
    return {c.name: c for c in contexts}


def lookup(named: Mapping[str, NamedContext], name: str | None) -> NamedContext | None:
    """The named context that puts itself in place of ``name`` (a stage name or image ref)."""
    if not named or not name:
        return None
    try:
        return named.get(context_name(name))
    except DiagnosticError:  # not a reference (e.g. a stage index): nothing overrides it
        return None


def parse_no_cache_filter(values: Iterable[str]) -> tuple[str, ...]:
    """``--no-cache-filter`` values, each comma-separated as buildx splits them."""
    return tuple(s.strip().lower() for v in values for s in v.split(",") if s.strip())
