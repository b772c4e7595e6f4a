"""Image annotations: ``--annotation`` (buildx) and ``annotation*.KEY=V`` output attributes
(BuildKit's ``exptypes.ParseAnnotationKey``).

Levels: ``manifest`` (the default) goes into the image manifest, ``manifest-descriptor``
onto the manifest's descriptor (in an OCI layout, its ``index.json`` entry), ``index`` and
``index-descriptor`` onto the image index of a multi-platform build (in an OCI layout, the
index's ``index.json`` entry). One platform makes no index: as BuildKit's single-platform
export, index annotations are then refused ("index annotations not supported for single
platform export"), before anything is built.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from mason.errors import UsageError
from mason.oci.platform import Platform, PlatformError
from mason.structs import Struct, field

__all__ = [
    "LEVELS",
    "Annotation",
    "ResolvedAnnotations",
    "parse_annotation_attr",
    "parse_annotation_flag",
    "resolve_annotations",
]

LEVELS = ("manifest", "manifest-descriptor", "index", "index-descriptor")

#: BuildKit's ``keyAnnotationRegexp`` (an exporter attribute)
_ATTR = re.compile(r"^annotation(?:-([a-z-]+))?(?:\[([A-Za-z0-9_/-]+)\])?\.(\S+)$")
#: buildx's type with an optional platform in brackets (``--annotation TYPE[PLAT]:K=V``)
_TYPE = re.compile(r"^([a-z-]+)(?:\[([A-Za-z0-9_/,-]+)\])?$")


class Annotation(Struct, frozen=True):
    """One annotation: its level, the platform it is limited to (None: all), key and value."""

    level: str
    platform: Platform | None
    key: str
    value: str


class ResolvedAnnotations(Struct, frozen=True):
    """What one platform's export writes: in the manifest, on its descriptor; with several
    platforms also in the image index and on the index's descriptor."""

    manifest: dict[str, str]
    descriptor: dict[str, str]
    index: dict[str, str] = field(default_factory=dict)
    index_descriptor: dict[str, str] = field(default_factory=dict)


def _platform(text: str, what: str) -> Platform:
    try:
        return Platform.parse(text)
    except PlatformError as exc:
        raise UsageError(f"invalid {what}: {exc}", reference="invalid-annotation") from None


def parse_annotation_flag(text: str) -> list[Annotation]:
    """``KEY=VALUE`` or ``TYPE[PLATFORMS],...:KEY=VALUE`` (buildx's ``ParseAnnotations``)."""
    what = f"--annotation {text!r}"
    k, eq, value = text.partition("=")
    if not eq or not k:
        raise UsageError(
            f"invalid {what}: expected key=value",
            reference="invalid-annotation",
            hint="KEY=VALUE, or TYPE:KEY=VALUE with TYPE one of " + ", ".join(LEVELS),
        )
    types, colon, key = k.partition(":")
    if not colon:
        return [Annotation("manifest", None, k, value)]
    if not key:
        raise UsageError(f"invalid {what}: the key is empty", reference="invalid-annotation")
    out: list[Annotation] = []
    for part in _split_types(types):
        m = _TYPE.match(part)
        if m is None or m.group(1) not in LEVELS:
            raise UsageError(
                f"invalid {what}: unknown annotation type {part!r}",
                reference="invalid-annotation",
                hint="types: "
                + ", ".join(LEVELS)
                + " (a platform in brackets: manifest[linux/amd64])",
            )
        plats = m.group(2).split(",") if m.group(2) else [None]
        for p in plats:
            out.append(Annotation(m.group(1), _platform(p, what) if p else None, key, value))
    return out


def _split_types(types: str) -> list[str]:
    """``manifest[linux/amd64,linux/arm64],index``: commas inside brackets stay."""
    parts, depth, cur = [], 0, ""
    for ch in types:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def parse_annotation_attr(attr: str, value: str, text: str) -> Annotation | None:
    """An output attribute ``annotation[-TYPE][PLATFORM].KEY``; None when ``attr`` is another."""
    m = _ATTR.match(attr)
    if m is None:
        if attr.startswith("annotation"):
            raise UsageError(
                f"invalid --output {text!r}: {attr!r} is not annotation[-TYPE][PLATFORM].KEY",
                reference="invalid-output",
            )
        return None
    level = m.group(1) or "manifest"
    if level not in LEVELS:
        raise UsageError(
            f"invalid --output {text!r}: unrecognized annotation type {level}",
            reference="invalid-output",
            hint="types: " + ", ".join(LEVELS),
        )
    plat = _platform(m.group(2), f"--output {text!r}") if m.group(2) else None
    return Annotation(level, plat, m.group(3), value)


def resolve_annotations(
    annotations: Iterable[Annotation],
    platform: Platform,
    *,
    oci: bool,
    where: str,
    built: Sequence[Platform] = (),
) -> ResolvedAnnotations:
    """The annotations of ``platform``'s export (later ones win), checked as BuildKit's
    ``ImageWriter.Commit``: a platform that is not built (``built``: every platform of the
    build, default ``platform`` alone), index levels of a one-platform export, or descriptor and
    index annotations with Docker media types are usage errors naming ``where``."""
    built = tuple(built) or (platform,)
    out = ResolvedAnnotations({}, {})
    levels = {
        "manifest": out.manifest,
        "manifest-descriptor": out.descriptor,
        "index": out.index,
        "index-descriptor": out.index_descriptor,
    }
    for a in annotations:
        if a.platform is not None and not any(_same(a.platform, p) for p in built):
            raise UsageError(
                f"{where}: invalid annotation: no platform {a.platform} found in source",
                reference="invalid-annotation",
                hint=f"this build makes {', '.join(str(p) for p in built)} only",
            )
        if a.level in ("index", "index-descriptor") and len(built) == 1:
            raise UsageError(
                f"{where}: index annotations not supported for single platform export "
                f"({a.level}:{a.key})",
                reference="invalid-annotation",
                hint="one platform makes no image index; use manifest or manifest-descriptor, "
                "or build several --platform",
            )
        if a.level != "manifest" and not oci:
            raise UsageError(
                f'{where}: cannot export annotations with "oci-mediatypes=false"',
                reference="invalid-annotation",
            )
        if a.platform is None or _same(a.platform, platform):
            levels[a.level][a.key] = a.value
    return out


def _same(a: Platform, b: Platform) -> bool:
    return (a.os, a.architecture, a.variant or "") == (b.os, b.architecture, b.variant or "")
