"""Build options: ``--output`` and ``--secret`` values in buildx's CSV syntax, and
the ``BuildOptions`` the CLI hands to ``mason.engine.build``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mason.cache.options import CacheOptions, parse_bool, parse_compression, split_csv
from mason.errors import UsageError
from mason.oci.atomic import unwritable_dest
from mason.oci.platform import Platform, host_platform
from mason.structs import Struct, field, replace

if TYPE_CHECKING:
    from mason.engine.annotations import Annotation
    from mason.engine.namedcontexts import NamedContext
    from mason.engine.sshagent import SshSpec
    from mason.executor import Ulimit

__all__ = [
    "BuildOptions",
    "OutputSpec",
    "SecretSpec",
    "outputs_for",
    "parse_output",
    "parse_secret",
    "predefined_args",
    "read_dockerfile",
]

OutputType = Literal["image", "oci", "docker", "local", "tar"]


class OutputSpec(Struct, frozen=True):
    """One ``--output``. ``names`` are image references (image/docker); ``dest`` a path or ``-``."""

    type: OutputType
    names: tuple[str, ...] = ()
    push: bool = False
    dest: str | None = None
    tar: bool = True
    compression: str = "gzip"
    compression_level: int | None = None
    force_compression: bool = False
    oci_mediatypes: bool = True
    attrs: Mapping[str, str] = field(default_factory=dict)
    #: ``rewrite-timestamp=true`` (image, oci, docker): file times in the layers this build made
    #: are clamped to SOURCE_DATE_EPOCH when the output is written, as BuildKit's image exporter
    #: does (``mason.engine.exporters.rewrite_timestamps``)
    rewrite_timestamp: bool = False
    #: ``registry.insecure=true``: plain HTTP or unverified TLS for the names' registries
    insecure: bool = False
    #: ``annotation[-TYPE][PLATFORM].KEY=V`` attributes, then ``--annotation``s (later ones win)
    annotations: tuple[Annotation, ...] = ()

    @property
    def layout_dir(self) -> bool:
        """An OCI layout directory, not a tar: ``tar=false``, a dest ending in ``/`` or an
        existing directory."""
        dest = self.dest or ""
        return self.type == "oci" and (not self.tar or dest.endswith("/") or os.path.isdir(dest))


class SecretSpec(Struct, frozen=True):
    id: str
    src: Path | None = None
    env_value: str | None = None  # a secret given as env=NAME, already read by the CLI


class BuildOptions(Struct, frozen=True):
    context: Path
    dockerfile: Path | None = None
    dockerfile_text: bytes | None = None
    tags: tuple[str, ...] = ()
    push: bool = False
    outputs: tuple[OutputSpec, ...] = ()
    cache_to: tuple[CacheOptions, ...] = ()
    cache_from: tuple[CacheOptions, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    secrets: tuple[SecretSpec, ...] = ()
    network: str = "default"
    #: ``--platform``: one image each, in this order (empty: the host's only)
    platforms: tuple[Platform, ...] = ()
    source_date_epoch: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    insecure_registries: tuple[str, ...] = ()
    docker_config_dir: str | None = None
    registry_auth_file: str | None = None
    max_parallel: int = 4
    #: ``auto`` (overlayfs when it works here, else copy), ``overlay`` or ``copy``.
    snapshotter: str = "auto"
    #: RUN sandbox: ``auto`` (runc when it works here, else chroot), ``runc`` or ``chroot``.
    runtime: str = "auto"
    #: ``--explain-cache``: a ``cache miss: <reason>`` line for every step that runs.
    explain_cache: bool = False
    #: ``--add-host``, ``--shm-size``, ``--ulimit`` (``mason.engine.runflags``): every RUN's sandbox
    add_hosts: tuple[tuple[str, str], ...] = ()
    shm_size: int | None = None
    ulimits: tuple[Ulimit, ...] = ()
    #: ``--allow``: the entitlements this build grants (``security.insecure`` lets a
    #: ``RUN --security=insecure`` run; ``network.host`` is accepted as buildx takes it)
    allow: tuple[str, ...] = ()
    #: ``--ssh``: the agents ``RUN --mount=type=ssh`` reaches (``mason.engine.sshagent``)
    ssh: tuple[SshSpec, ...] = ()
    #: ``--annotation``: added to every image, oci and docker output (``mason.engine.annotations``)
    annotations: tuple[Annotation, ...] = ()
    #: ``--build-context``: named contexts replacing stages or images (``mason.engine.namedcontexts``)
    build_contexts: tuple[NamedContext, ...] = ()
    #: ``--no-cache-filter``: stage names whose steps use no cache
    no_cache_filter: tuple[str, ...] = ()


#: the entitlements ``--allow`` takes (buildx's names)
ENTITLEMENTS = ("network.host", "security.insecure")


def _bool(key: str, value: str, text: str) -> bool:
    return parse_bool(
        key,
        value,
        lambda why: UsageError(f"invalid --output {text!r}: {why}", reference="invalid-output"),
    )


def parse_output(text: str) -> OutputSpec:
    """Parse one ``--output`` value (buildx syntax; ``-o DIR`` means local, ``-o -`` a tar to stdout)."""
    if "=" not in text and "," not in text:
        if text == "-":
            return OutputSpec(type="tar", dest="-")
        return OutputSpec(type="local", dest=text)
    attrs, names = _split_output(text)
    typ = attrs.pop("type", None)
    if typ is None:
        raise UsageError(
            f"invalid --output {text!r}: type= is required",
            reference="invalid-output",
            hint="e.g. type=image,name=REG/app,push=true or type=oci,dest=out.tar",
        )
    push = False
    if typ == "registry":
        typ, push = "image", True
    if typ not in ("image", "oci", "docker", "local", "tar"):
        raise UsageError(
            f"invalid --output {text!r}: unknown type {typ!r}",
            reference="invalid-output",
            hint="types: image, registry, oci, docker, local, tar",
        )
    annotations = _annotation_attrs(typ, attrs, text)
    _check_attributes(typ, attrs, names, text)
    if "push" in attrs:
        push = push or _bool("push", attrs.pop("push"), text)
    insecure = _bool("registry.insecure", attrs.pop("registry.insecure", "false"), text)
    compression, level = parse_compression(
        attrs,
        lambda why, hint: UsageError(
            f"invalid --output {text!r}: {why}", reference="invalid-output", hint=hint or None
        ),
    )
    attrs.pop("compression", None)
    attrs.pop("compression-level", None)
    force = _bool("force-compression", attrs.pop("force-compression", "false"), text)
    rewrite_timestamp = _bool("rewrite-timestamp", attrs.pop("rewrite-timestamp", "false"), text)
    # buildx: type=docker defaults to Docker media types, the others to OCI.
    oci_default = "false" if typ == "docker" else "true"
    oci = _bool("oci-mediatypes", attrs.pop("oci-mediatypes", oci_default), text)
    tar = _bool("tar", attrs.pop("tar", "true"), text)
    dest = attrs.pop("dest", None)
    _check_dest_and_names(typ, dest, names, push, text)
    spec = OutputSpec(
        type=typ,  # type: ignore[arg-type]
        names=tuple(names),
        push=push,
        dest=dest,
        tar=tar,
        compression=compression,
        compression_level=level,
        force_compression=force,
        oci_mediatypes=oci,
        attrs=attrs,
        rewrite_timestamp=rewrite_timestamp,
        insecure=insecure,
        annotations=annotations,
    )
    _check_file_dest(spec, text)
    return spec


def _annotation_attrs(typ: str, attrs: dict[str, str], text: str) -> tuple[Annotation, ...]:
    """The ``annotation*`` attributes of an image, oci or docker output, taken out of ``attrs``."""
    from mason.engine.annotations import parse_annotation_attr

    if typ not in ("image", "oci", "docker"):
        return ()
    found = []
    for key in [k for k in attrs if k.startswith("annotation")]:
        a = parse_annotation_attr(key, attrs[key], text)
        if a is not None:
            found.append(a)
            del attrs[key]
    return tuple(found)


def _split_output(text: str) -> tuple[dict[str, str], list[str]]:
    """buildx's CSV fields: ``name=`` values (comma lists) apart, every other key lower-cased."""
    attrs: dict[str, str] = {}
    names: list[str] = []
    for f in split_csv(text):
        key, sep, value = f.partition("=")
        if not sep:
            raise UsageError(
                f"invalid --output {text!r}: field {f!r} is not key=value",
                reference="invalid-output",
            )
        key = key.strip().lower()
        if key == "name":
            names.extend(n.strip() for n in value.split(",") if n.strip())
        else:
            attrs[key] = value
    return attrs, names


def _check_dest_and_names(
    typ: str, dest: str | None, names: list[str], push: bool, text: str
) -> None:
    """A file or directory output needs ``dest=``; a push needs a name."""
    if typ in ("oci", "docker", "local", "tar") and not dest:
        if typ == "docker" and names:
            raise UsageError(
                f"invalid --output {text!r}: mason has no daemon to load into; give dest=FILE",
                reference="invalid-output",
            )
        raise UsageError(
            f"invalid --output {text!r}: dest= is required for type={typ}",
            reference="invalid-output",
        )
    if typ == "image" and not names and push:
        raise UsageError(
            f"invalid --output {text!r}: push needs name=REF (or -t REF)",
            reference="invalid-output",
        )


#: the attributes each output type takes (as BuildKit's exporters name them)
_OUTPUT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "image": (
        "name",
        "push",
        "compression",
        "compression-level",
        "force-compression",
        "oci-mediatypes",
        "registry.insecure",
        "rewrite-timestamp",
    ),
    "oci": (
        "name",
        "dest",
        "tar",
        "compression",
        "compression-level",
        "force-compression",
        "oci-mediatypes",
        "rewrite-timestamp",
    ),
    "docker": (
        "name",
        "dest",
        "compression",
        "compression-level",
        "force-compression",
        "oci-mediatypes",
        "rewrite-timestamp",
    ),
    "local": ("dest",),
    "tar": ("dest",),
}
#: BuildKit's other exporter attributes: refused by name rather than silently ignored
_NOT_YET = (
    "buildinfo",
    "buildinfo-attrs",
    "dangling-name-prefix",
    "insecure",
    "name-canonical",
    "oci-artifact",
    "platform-split",
    "push-by-digest",
    "store",
    "unpack",
)


def _check_attributes(typ: str, attrs: Mapping[str, str], names: Sequence[str], text: str) -> None:
    """Attributes the type does not take are usage errors listing the valid ones (a typo such as
    ``compresion=zstd`` must not build with the default)."""
    valid = _OUTPUT_ATTRIBUTES[typ]
    keys = set(attrs) | ({"name"} if names else set())
    for key in sorted(keys - set(valid)):
        if key.split(".", 1)[0] in _NOT_YET or key in _NOT_YET:
            raise UsageError(
                f"invalid --output {text!r}: {key}= is not supported by mason yet",
                reference="invalid-output",
            )
        raise UsageError(
            f"invalid --output {text!r}: unknown attribute {key!r} for type={typ}",
            reference="invalid-output",
            hint="type=" + typ + " takes " + ", ".join(valid),
        )


def _check_file_dest(spec: OutputSpec, text: str) -> None:
    """Refuse, before anything is built, a file output whose dest mason must not replace
    (``/dev/null`` was once renamed over): see ``mason.oci.atomic.output_file``."""
    if spec.type not in ("oci", "docker", "tar") or spec.dest in (None, "-") or spec.layout_dir:
        return
    assert spec.dest is not None
    why = unwritable_dest(spec.dest)
    if why is not None:
        raise UsageError(
            f"invalid --output {text!r}: {spec.dest} is {why}",
            reference="invalid-output",
            hint="dest= must be a regular file (replaced), a FIFO or character device "
            "(written to), or - for stdout",
        )


def parse_secret(text: str, env: Mapping[str, str] | None = None) -> SecretSpec:
    """``id=ID,src=FILE`` (also ``source=``, ``type=file``) or ``id=ID,env=VAR``; a bare ``ID`` means
    ``id=ID,env=ID`` when that variable is set, as buildx does."""
    attrs: dict[str, str] = {}
    for f in split_csv(text):
        key, sep, value = f.partition("=")
        if not sep:
            attrs.setdefault("id", key)
            continue
        attrs[key.strip().lower()] = value
    sid = attrs.get("id")
    if not sid:
        raise UsageError(f"invalid --secret {text!r}: id= is required", reference="invalid-secret")
    src = attrs.get("src") or attrs.get("source")
    envname = attrs.get("env")
    if src:
        p = Path(src).expanduser()
        if not p.is_file():
            raise UsageError(
                f"invalid --secret {text!r}: {src} is not a readable file",
                reference="invalid-secret",
            )
        return SecretSpec(id=sid, src=p)
    if envname is None and env is not None and sid in env:
        envname = sid
    if envname is not None:
        if env is None or envname not in env:
            raise UsageError(
                f"invalid --secret {text!r}: environment variable {envname} is not set",
                reference="invalid-secret",
            )
        return SecretSpec(id=sid, env_value=env[envname])
    raise UsageError(
        f"invalid --secret {text!r}: give src=FILE or env=VAR", reference="invalid-secret"
    )


def outputs_for(
    tags: Sequence[str],
    push: bool,
    outputs: Sequence[OutputSpec],
    annotations: Sequence[Annotation] = (),
) -> tuple[OutputSpec, ...]:
    """Combine ``-t`` / ``--push`` with ``--output`` the way buildx does: ``--push`` adds an image
    output pushing the tags; an image output without names takes the tags; every image-like
    output takes the ``--annotation``s after its own attributes (they win, as in buildx)."""
    result: list[OutputSpec] = []
    for o in outputs:
        if o.type in ("image", "docker", "oci") and not o.names and tags:
            o = replace(o, names=tuple(tags), push=o.push or push)
        result.append(o)
    if push and not any(o.type == "image" and o.push for o in result):
        if not tags:
            raise UsageError("--push needs at least one -t REF", reference="invalid-output")
        result.append(OutputSpec(type="image", names=tuple(tags), push=True))
    if annotations:
        result = [
            replace(o, annotations=(*o.annotations, *annotations))
            if o.type in ("image", "docker", "oci")
            else o
            for o in result
        ]
    return tuple(result)


def read_dockerfile(opts: BuildOptions) -> tuple[bytes, str, Path | None]:
    """The Dockerfile's bytes, file name and path (None when given as text: ``-f -``, a URL)."""
    if opts.dockerfile_text is not None:
        return opts.dockerfile_text, "Dockerfile", None
    path = opts.dockerfile or (opts.context / "Dockerfile")
    if not path.is_absolute() and opts.dockerfile is not None and not path.exists():
        path = opts.context / path
    try:
        return path.read_bytes(), path.name, path
    except OSError as exc:
        raise UsageError(
            f"failed to read dockerfile {path}: {exc.strerror}",
            reference="dockerfile-missing",
            hint="give the Dockerfile with -f PATH",
        ) from exc


def predefined_args(platform: Platform) -> dict[str, str]:
    """BuildKit's automatic platform ARGs for a build targeting ``platform``."""
    host = host_platform()
    return {
        "TARGETPLATFORM": str(platform),
        "TARGETOS": platform.os,
        "TARGETARCH": platform.architecture,
        "TARGETVARIANT": platform.variant or "",
        "BUILDPLATFORM": str(host),
        "BUILDOS": host.os,
        "BUILDARCH": host.architecture,
        "BUILDVARIANT": host.variant or "",
    }
