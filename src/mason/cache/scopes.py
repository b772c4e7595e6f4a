"""Cache scopes of a registry cache: ``scope=NAME`` keeps one tag of the cache ref per scope
(a branch, say), so that a pull request's build reads the main branch's cache without ever
writing to it.

``--cache-to type=registry,ref=R,scope=feature-x`` writes ``R:feature-x`` only.
``--cache-from type=registry,ref=R,scope=feature-x`` reads ``R:feature-x``, then ``R:main``;
``scope=feature-x;release;main`` gives the fallbacks in order. A scope name becomes a tag:
characters a tag cannot hold (``feature/x``) become ``-``. BuildKit has no scopes for its
registry cache (only for ``type=gha``); it reads the same tags when given one ``--cache-from``
per tag.
"""

from __future__ import annotations

import re

from mason.cache.options import CacheOptionsError
from mason.oci.reference import Reference

__all__ = ["DEFAULT_FALLBACK", "scope_tag", "scoped_refs"]

#: the scope a ``--cache-from`` falls back to when its ``scope=`` names only one
DEFAULT_FALLBACK = "main"

_NOT_IN_TAG = re.compile(r"[^A-Za-z0-9_.-]+")


def scope_tag(name: str, text: str) -> str:
    """The tag a scope name is stored under (a tag is ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``)."""
    tag = _NOT_IN_TAG.sub("-", name.strip()).lstrip(".-")[:128]
    if not tag:
        raise CacheOptionsError(
            f"invalid cache option {text!r}: scope {name!r} has no character a tag can hold",
            hint="a scope is a branch or other name, e.g. scope=main or scope=feature/login",
        )
    return tag


def _split(value: str) -> list[str]:
    return [part for part in (p.strip() for p in value.split(";")) if part]


def scoped_refs(
    raw_ref: str, ref: Reference, scope: str, text: str, *, reading: bool
) -> list[Reference]:
    """The refs ``scope=`` names: for an export its one scope; for an import the scope and its
    fallbacks (``main`` when none is given), each once, in order."""
    if ref.digest is not None or _has_tag(raw_ref):
        raise CacheOptionsError(
            f"invalid cache option {text!r}: with scope= the ref names a repository, not a tag ({raw_ref})",
            hint="the scope is the tag: ref=REG/app-cache,scope=main reads REG/app-cache:main",
        )
    names = _split(scope)
    if not names:
        raise CacheOptionsError(f"invalid cache option {text!r}: scope is empty")
    if not reading and len(names) > 1:
        raise CacheOptionsError(
            f"invalid --cache-to {text!r}: a cache is written to one scope, not {len(names)}",
            hint="fallback scopes are for --cache-from",
        )
    if reading and len(names) == 1:
        names.append(DEFAULT_FALLBACK)
    tags = list(dict.fromkeys(scope_tag(n, text) for n in names))
    return [ref.with_tag(t) for t in tags]


def _has_tag(raw_ref: str) -> bool:
    last = raw_ref.rsplit("/", 1)[-1]
    return ":" in last.split("@", 1)[0]
