"""``parse_dockerfile``: bytes to a typed :class:`Dockerfile`."""

from __future__ import annotations

from mason.digest import Digest, sha256_bytes
from mason.dockerfile.errors import DockerfileError
from mason.dockerfile.instructions import ArgCommand, Stage, convert
from mason.dockerfile.parser import (
    Directive,
    Node,
    SyntaxDirective,
    Warning,
    detect_syntax,
    parse,
)
from mason.structs import Struct

__all__ = ["Dockerfile", "parse_dockerfile", "source_lines"]


class Dockerfile(Struct, frozen=True):
    """A parsed and converted Dockerfile. ``raw`` keeps the exact input bytes."""

    path: str
    raw: bytes
    escape: str
    syntax: SyntaxDirective | None
    directives: tuple[Directive, ...]
    warnings: tuple[Warning, ...]
    nodes: tuple[Node, ...]
    meta_args: tuple[ArgCommand, ...]
    stages: tuple[Stage, ...]

    @property
    def digest(self) -> Digest:
        return sha256_bytes(self.raw)


def source_lines(data: bytes) -> list[str]:
    text = data.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    return [ln.rstrip("\r") for ln in text.split("\n")]


#: the last successful parse (bytes, path, result): a build parses its Dockerfile twice, for
#: the registry reads started before the engine loads (``mason.cli.early_reads``) and for the
#: build; the result is immutable, so the second call takes the first one's
_last: tuple[bytes, str, Dockerfile] | None = None


def parse_dockerfile(data: bytes, path: str = "Dockerfile") -> Dockerfile:
    """Parse ``data`` (the Dockerfile's bytes) into stages and typed commands.

    Raises DockerfileError with ``file``, ``line``, ``column`` and the offending
    source line filled in."""
    global _last
    last = _last
    if last is not None and last[1] == path and last[0] == data:
        return last[2]
    parsed = _parse(data, path)
    _last = (data, path, parsed)
    return parsed


def _parse(data: bytes, path: str) -> Dockerfile:
    try:
        result = parse(data)
        if result.error is not None:
            raise result.error
        meta, stages = convert(result.nodes, file=path)
    except DockerfileError as exc:
        raise exc.located(file=path, source_lines=source_lines(data)) from None
    return Dockerfile(
        path=path,
        raw=data,
        escape=result.escape,
        syntax=detect_syntax(data),
        directives=result.directives,
        warnings=result.warnings,
        nodes=result.nodes,
        meta_args=meta,
        stages=stages,
    )
