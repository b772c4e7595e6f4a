"""``--cache-to`` / ``--cache-from`` values in buildx's CSV attribute syntax.

``type=registry,ref=reg/app-cache,mode=max`` — fields are separated by commas, a
field (or just its value) may be double-quoted to hold commas (``"src=/a,b"`` or
``src="/a,b"``; ``""`` inside quotes is a literal quote), keys are lower-cased.
A value without ``=`` is shorthand for ``type=registry,ref=<value>``, and a
comma-separated list of such refs gives one entry per ref (as buildx does).

Validation is strict and up front, so a typo fails the command with exit 2
before anything is built (BuildKit silently ignores a bad ``mode``; mason does
not).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from mason.compression.kinds import COMPRESSION_NAMES, get_compression
from mason.errors import UsageError
from mason.oci.errors import InvalidReferenceError
from mason.oci.reference import Reference
from mason.structs import Struct, field

if TYPE_CHECKING:
    from mason.cache.backends import CacheBackend

__all__ = [
    "COMMON_EXPORT_ATTRS",
    "CacheOptions",
    "CacheOptionsError",
    "check_cache_exports",
    "export_settings",
    "insecure_hosts",
    "option_bool",
    "parse_bool",
    "parse_cache_from",
    "parse_cache_to",
    "parse_compression",
    "parse_ref",
    "parse_tag",
    "split_csv",
]

#: a name of ``mason.cache.backends``' table
CacheType = str
Mode = Literal["min", "max"]

#: the ``--cache-to`` attributes every exporter that writes a cache document takes
#: (``export_settings``)
COMMON_EXPORT_ATTRS = frozenset(
    {
        "mode",
        "compression",
        "compression-level",
        "force-compression",
        "oci-mediatypes",
        "image-manifest",
        "ignore-error",
    }
)


class CacheOptionsError(UsageError):
    reference = "cache-option-invalid"


class CacheOptions(Struct, frozen=True):
    """One parsed ``--cache-to`` or ``--cache-from`` entry (defaults as BuildKit's)."""

    type: CacheType
    direction: Literal["to", "from"]
    text: str
    attrs: Mapping[str, str] = field(default_factory=dict)
    ref: Reference | None = None
    mode: Mode = "min"
    compression: str = "gzip"
    compression_level: int | None = None
    force_compression: bool = False
    oci_mediatypes: bool = True
    image_manifest: bool = True
    ignore_error: bool = False
    insecure: bool = False
    path: str | None = None  # local: dest (to) or src (from)
    tag: str = "latest"
    digest: str | None = None
    reset: bool = False
    #: registry export: keep what the ref holds (None: when mason wrote it, ``cache.merge``)
    merge: bool | None = None
    #: registry export: drop records unused for this many seconds (``cache.retention``)
    keep_duration: float | None = None
    #: registry export: also the ``RUN --mount=type=cache`` contents (``cache.mounts``)
    cache_mounts: bool = False

    @property
    def display_name(self) -> str:
        """How progress output names this cache: ``registry 127.0.0.1:5000/app-cache:latest``."""
        from mason.cache.backends import backend_of

        return backend_of(self).display_name(self)


def split_csv(text: str) -> list[str]:
    """Split on commas outside double quotes; quotes are removed, ``""`` inside quotes is ``"``."""
    fields: list[str] = []
    current: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            if quoted and i + 1 < len(text) and text[i + 1] == '"':
                current.append('"')
                i += 2
                continue
            quoted = not quoted
        elif ch == "," and not quoted:
            fields.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    if quoted:
        raise CacheOptionsError(f"invalid cache option {text!r}: unterminated double quote")
    fields.append("".join(current))
    return fields


#: strconv.ParseBool's spellings (what BuildKit parses these attributes with), any case, and
#: yes/no, which ``--output`` always took; an empty value means true (BuildKit's force-compression)
_TRUE = frozenset({"", "1", "t", "true", "yes"})
_FALSE = frozenset({"0", "f", "false", "no"})


def parse_bool(key: str, value: str, fail: Callable[[str], UsageError]) -> bool:
    """A boolean attribute of ``--output``, ``--cache-to`` or ``--cache-from``: one parser, so
    the flags take the same spellings. ``fail(reason)`` makes the error to raise."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise fail(f"{key}={value!r} is not a boolean (true or false)")


def parse_compression(
    attrs: Mapping[str, str], fail: Callable[[str, str], UsageError]
) -> tuple[str, int | None]:
    """``compression=`` and ``compression-level=`` of ``--output`` or ``--cache-to`` (default
    gzip, the compression's default level), checked against ``mason.compression``'s table.
    ``fail(reason, hint)`` makes the error to raise."""
    name = attrs.get("compression", "gzip").strip().lower()
    if name not in COMPRESSION_NAMES:
        raise fail(
            f"compression={attrs['compression']!r} is not a known compression",
            f"compression is one of {', '.join(COMPRESSION_NAMES)}",
        )
    if "compression-level" not in attrs:
        return name, None
    raw = attrs["compression-level"].strip()
    try:
        level = int(raw)
    except ValueError:
        raise fail(f"compression-level={raw!r} is not an integer", "") from None
    levels = get_compression(name).level_range
    if levels is None:
        raise fail(f"compression-level makes no sense with compression={name}", "")
    low, high = levels
    if not low <= level <= high:
        raise fail(
            f"compression-level={level} is out of range for {name}",
            f"{name} levels are {low}-{high}",
        )
    return name, level


def option_bool(key: str, value: str, text: str) -> bool:
    """A boolean cache attribute (``parse_bool``), failing with a ``CacheOptionsError``."""
    return parse_bool(
        key, value, lambda why: CacheOptionsError(f"invalid cache option {text!r}: {why}")
    )


def parse_ref(value: str, text: str, what: str) -> Reference:
    try:
        return Reference.parse(value)
    except InvalidReferenceError as exc:
        raise CacheOptionsError(
            f"invalid cache option {text!r}: {what} {exc.message}", hint=exc.hint
        ) from exc


def _fields(text: str) -> list[dict[str, str]]:
    """One attrs dict per entry (a list of bare refs gives several)."""
    parts = split_csv(text)
    if all("=" not in p for p in parts):
        refs = [p.strip() for p in parts if p.strip()]
        if not refs:
            raise CacheOptionsError(
                "empty cache option", hint="use type=registry,ref=REF or just REF"
            )
        return [{"type": "registry", "ref": r} for r in refs]
    attrs: dict[str, str] = {}
    for part in parts:
        if "=" not in part:
            raise CacheOptionsError(
                f"invalid cache option {text!r}: field {part!r} is not key=value",
                hint="mix no bare refs with key=value fields; quote values that contain commas",
            )
        key, value = part.split("=", 1)
        key = key.strip().lower()
        if key in attrs:
            raise CacheOptionsError(f"invalid cache option {text!r}: {key} given twice")
        attrs[key] = value
    if "type" not in attrs:
        raise CacheOptionsError(
            f"invalid cache option {text!r}: type is required",
            hint="add type=registry, type=local or type=inline",
        )
    return [attrs]


def _backend_for(
    attrs: Mapping[str, str], direction: Literal["to", "from"], text: str
) -> CacheBackend:
    """The backend ``attrs`` names, once its attributes are checked against what it takes."""
    from mason.cache.backends import BACKEND_NAMES, backend

    kind = attrs["type"].strip().lower()
    found = backend(kind)
    allowed = (
        None if found is None else found.export_attrs if direction == "to" else found.import_attrs
    )
    if found is None or allowed is None:
        usable = [n for n in BACKEND_NAMES if _takes(n, direction)]
        extra = (
            " (gha, s3 and azblob are BuildKit backends mason does not have)"
            if kind in ("gha", "s3", "azblob")
            else ""
        )
        raise CacheOptionsError(
            f"invalid --cache-{direction} {text!r}: unknown cache type {kind!r}{extra}",
            hint=f"--cache-{direction} supports type={', '.join(sorted(usable))}",
        )
    skip = found.ignored_import_attrs if direction == "from" else frozenset()
    unknown = sorted(k for k in attrs if k != "type" and k not in allowed and k not in skip)
    if unknown:
        valid = ", ".join(sorted(allowed)) or "none"
        raise CacheOptionsError(
            f"invalid --cache-{direction} {text!r}: unknown attribute{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)} for type={kind}",
            hint=f"type={kind} accepts: {valid}",
        )
    return found


def _takes(name: str, direction: str) -> bool:
    from mason.cache.backends import backend

    found = backend(name)
    return (
        found is not None
        and (found.export_attrs if direction == "to" else found.import_attrs) is not None
    )


def export_settings(attrs: Mapping[str, str], text: str) -> dict[str, Any]:
    """The ``COMMON_EXPORT_ATTRS`` of a ``--cache-to``, as ``CacheOptions`` fields."""
    out: dict[str, Any] = {}
    mode = attrs.get("mode", "min").strip().lower()
    if mode not in ("min", "max"):
        raise CacheOptionsError(
            f"invalid --cache-to {text!r}: mode={attrs['mode']!r}", hint="mode is min or max"
        )
    out["mode"] = mode
    out["compression"], level = parse_compression(
        attrs,
        lambda why, hint: CacheOptionsError(
            f"invalid --cache-to {text!r}: {why}", hint=hint or None
        ),
    )
    if level is not None:
        out["compression_level"] = level
    if "force-compression" in attrs:
        out["force_compression"] = option_bool(
            "force-compression", attrs["force-compression"], text
        )
    oci = (
        option_bool("oci-mediatypes", attrs["oci-mediatypes"], text)
        if "oci-mediatypes" in attrs
        else True
    )
    out["oci_mediatypes"] = oci
    if "image-manifest" in attrs:
        image_manifest = option_bool("image-manifest", attrs["image-manifest"], text)
        if image_manifest and not oci:
            # BuildKit's exact message (cache/remotecache/export.go)
            raise CacheOptionsError(
                "invalid configuration for remote cache, OCI mediatypes are required for image-manifest cache format",
                hint="drop oci-mediatypes=false, or add image-manifest=false for a Docker manifest list",
            )
    else:
        image_manifest = oci  # BuildKit >= 0.22: default true, false when oci-mediatypes=false
    out["image_manifest"] = image_manifest
    if "ignore-error" in attrs:
        out["ignore_error"] = option_bool("ignore-error", attrs["ignore-error"], text)
    return out


def parse_tag(value: str, text: str) -> str:
    tag = value.strip()
    if not tag:
        raise CacheOptionsError(f"invalid cache option {text!r}: tag must not be empty")
    return tag


def parse_cache_to(text: str, *, image_refs: Iterable[Reference | str] = ()) -> list[CacheOptions]:
    """Parse one ``--cache-to`` value. ``image_refs`` are the build's ``-t`` names: a registry
    cache ref equal to one of them is refused (the cache would overwrite the image)."""
    images = [r if isinstance(r, Reference) else Reference.parse(r) for r in image_refs]
    entries = []
    for attrs in _fields(text):
        found = _backend_for(attrs, "to", text)
        assert found.parse_to is not None
        entries.append(found.parse_to(attrs, text, images))
    return entries


def parse_cache_from(text: str) -> list[CacheOptions]:
    """Parse one ``--cache-from`` value (``REF``, ``type=registry,ref=REF`` or ``type=local,src=DIR``)."""
    entries: list[CacheOptions] = []
    for attrs in _fields(text):
        found = _backend_for(attrs, "from", text)
        assert found.parse_from is not None
        entries.extend(found.parse_from(attrs, text))
    return entries


def insecure_hosts(options: Iterable[CacheOptions]) -> set[str]:
    """Registry hosts that ``registry.insecure=true`` allows plain HTTP / unverified TLS for
    (for the ``insecure_hosts`` of the build's registry client)."""
    return {o.ref.registry for o in options if o.insecure and o.ref is not None}


def check_cache_exports(options: Iterable[CacheOptions]) -> None:
    """Several ``--cache-to`` are allowed, but not two to the same place (BuildKit: "duplicate
    cache exports"): the same registry ref, the same local dir and tag, or two inline."""
    from mason.cache.backends import backend_of

    seen: dict[str, str] = {}
    for o in options:
        where = backend_of(o).destination(o)
        if where in seen:
            raise CacheOptionsError(
                f"duplicate cache exports: --cache-to {seen[where]!r} and --cache-to {o.text!r} both write {where}"
            )
        seen[where] = o.text
