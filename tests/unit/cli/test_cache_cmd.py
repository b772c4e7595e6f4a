"""``mason cache inspect`` turns the import's one-line warning back into message, context, hint."""

from __future__ import annotations

from mason.cli.cache_cmd import _unreadable
from mason.errors import BuildError


def test_registry_warning_becomes_error_with_context_and_hint() -> None:
    warning = (
        "cache import from r.example/c:x failed, continuing without it: get manifest r.example/c:x: "
        "not found (HTTP 404) |   request: GET https://r.example/v2/c/manifests/x -> HTTP 404 | "
        "  registry says: MANIFEST_UNKNOWN: manifest unknown | hint: push a cache first"
    )
    err = _unreadable("r.example/c:x", warning)
    assert isinstance(err, BuildError) and err.exit_code == 1
    assert (
        err.message
        == "cannot inspect cache r.example/c:x: get manifest r.example/c:x: not found (HTTP 404)"
    )
    assert err.context == (
        "request: GET https://r.example/v2/c/manifests/x -> HTTP 404",
        "registry says: MANIFEST_UNKNOWN: manifest unknown",
    )
    assert err.hint == "push a cache first"


def test_local_warning_without_hint() -> None:
    err = _unreadable("/c", "local cache import at /c skipped: /c is not an OCI image layout")
    assert isinstance(err, BuildError)
    assert err.message == "cannot inspect cache /c: /c is not an OCI image layout"
    assert err.context == () and err.hint is None
