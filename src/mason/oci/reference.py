"""Image references: ``[registry[:port]/]repository[:tag][@digest]``.

The grammar is distribution's (docker/distribution ``reference``): Docker Hub is
the default registry, one-part names there live under ``library/``, and the
first path component is a registry only when it looks like a host (has a dot or
a port, or is ``localhost``).
"""

from __future__ import annotations

import re

from mason.digest import Digest, DigestError, parse_digest
from mason.oci.errors import InvalidReferenceError
from mason.structs import Struct, replace

__all__ = [
    "DEFAULT_TAG",
    "DOCKER_HUB",
    "DOCKER_HUB_API",
    "Reference",
]

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$"
)
_MAX_NAME = 255


def _error(text: str, why: str, hint: str | None = None) -> InvalidReferenceError:
    return InvalidReferenceError(
        f"invalid image reference {text!r}: {why}",
        hint=hint or "a reference looks like [registry[:port]/]name[:tag][@sha256:digest]",
    )


class Reference(Struct, frozen=True):
    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str, *, default_tag: bool = True) -> Reference:
        """Parse ``text``; with ``default_tag`` a reference with neither tag nor digest gets ``latest``."""
        if not text or text != text.strip():
            raise _error(text, "empty or surrounded by whitespace")
        if "://" in text:
            raise _error(
                text, "a reference has no URL scheme", "drop the scheme, e.g. registry:5000/app:tag"
            )
        rest = text
        digest: Digest | None = None
        if "@" in rest:
            rest, digest_text = rest.split("@", 1)
            try:
                digest = parse_digest(digest_text)
            except DigestError as exc:
                raise _error(text, exc.message, exc.hint) from exc
        tag: str | None = None
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:  # a colon after the last slash separates the tag (else it is a port)
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG.match(tag):
                raise _error(
                    text,
                    f"invalid tag {tag!r}",
                    "a tag is up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
                )
        if not rest:
            raise _error(text, "missing repository name")
        first, sep, remainder = rest.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
            registry, path = first, remainder
            if not _HOST.match(registry):
                raise _error(text, f"invalid registry host {registry!r}")
        else:
            registry, path = DOCKER_HUB, rest
        if registry in _HUB_ALIASES:
            registry = DOCKER_HUB
        if registry == DOCKER_HUB and "/" not in path:
            path = "library/" + path
        components = path.split("/")
        for component in components:
            if not component:
                raise _error(text, "empty path component in repository name")
            if not _COMPONENT.match(component):
                if component.lower() != component and _COMPONENT.match(component.lower()):
                    raise _error(text, "repository name must be lowercase")
                raise _error(
                    text,
                    f"invalid repository path component {component!r}",
                    "path components are lowercase letters and digits separated by '.', '_', '__' or '-'",
                )
        if len(registry) + 1 + len(path) > _MAX_NAME:
            raise _error(text, f"repository name longer than {_MAX_NAME} characters")
        if tag is None and digest is None and default_tag:
            tag = DEFAULT_TAG
        return cls(registry, path, tag, digest)

    def __str__(self) -> str:
        return self._with_identifiers(self.name)

    def _with_identifiers(self, name: str) -> str:
        return (
            name
            + (f":{self.tag}" if self.tag is not None else "")
            + (f"@{self.digest}" if self.digest else "")
        )

    @property
    def familiar(self) -> str:
        """Docker's short spelling: ``alpine:3`` for ``docker.io/library/alpine:3``."""
        if self.registry == DOCKER_HUB:
            return self._with_identifiers(self.repository.removeprefix("library/"))
        return self._with_identifiers(self.name)

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def with_tag(self, tag: str) -> Reference:
        if not _TAG.match(tag):
            raise _error(f"{self.name}:{tag}", f"invalid tag {tag!r}")
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: Digest | str) -> Reference:
        try:
            parsed = parse_digest(digest)
        except DigestError as exc:
            raise _error(f"{self.name}@{digest}", exc.message) from exc
        return replace(self, digest=parsed)

    @property
    def repository_ref(self) -> Reference:
        """The same repository with neither tag nor digest."""
        return replace(self, tag=None, digest=None)

    @property
    def identifier(self) -> str:
        """What goes after ``/manifests/`` in the API: the digest when known, else the tag."""
        if self.digest is not None:
            return self.digest
        return self.tag if self.tag is not None else DEFAULT_TAG

    @property
    def api_host(self) -> str:
        """Host (and port) the distribution API is served from."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry
