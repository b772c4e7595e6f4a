"""Registry errors: every one names the operation, method, redacted URL, status and the
registry's own ``errors[]`` JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from mason.errors import DiagnosticError

__all__ = [
    "RegistryAuthError",
    "RegistryError",
    "RegistryNotFoundError",
    "format_registry_errors",
    "parse_registry_errors",
    "redact_url",
]

# query parameters that carry credentials (pre-signed storage URLs, token endpoints)
_SECRET_PARAM_HINTS = ("token", "sig", "credential", "key", "policy", "secret", "password", "auth")


def redact_url(url: str) -> str:
    """``url`` without user info and with credential-like query values replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    if parts.hostname and ":" in parts.hostname:  # IPv6 literal
        netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port is not None else "")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        redacted = [
            (k, "REDACTED" if any(h in k.lower() for h in _SECRET_PARAM_HINTS) else v)
            for k, v in pairs
        ]
        query = urlencode(redacted, safe=":/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def parse_registry_errors(body: bytes) -> tuple[dict[str, Any], ...]:
    """The ``errors`` array of a distribution-spec error body, or ``()``."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ()
    if isinstance(doc, Mapping):
        errors = doc.get("errors")
        if isinstance(errors, list):
            return tuple(e for e in errors if isinstance(e, dict))
        # some token servers answer {"details": "..."} or {"error": "..."}
        for key in ("details", "detail", "error", "message"):
            if isinstance(doc.get(key), str):
                return ({"code": "ERROR", "message": doc[key]},)
    return ()


_DETAIL_CAP = 4000


def format_registry_errors(errors: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for err in errors:
        code = err.get("code", "?")
        message = err.get("message", "")
        detail = err.get("detail")
        line = f"registry says: {code}: {message}"
        if detail not in (None, "", {}, []):
            # shown in full (within reason): "denied" details name the repository and action
            line += f" (detail: {json.dumps(detail, sort_keys=True)[:_DETAIL_CAP]})"
        lines.append(line)
    return lines


class RegistryError(DiagnosticError):
    """A registry request failed. ``.status`` is None when no response arrived."""

    reference = "registry-error"

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        method: str | None = None,
        url: str | None = None,
        status: int | None = None,
        errors: Sequence[Mapping[str, Any]] = (),
        body_excerpt: str | None = None,
        hint: str | None = None,
        reference: str | None = None,
    ) -> None:
        self.operation = operation
        self.method = method
        self.url = redact_url(url) if url else None
        self.status = status
        self.errors = tuple(dict(e) for e in errors)
        context: list[str] = []
        if method and self.url:
            context.append(
                f"request: {method} {self.url}" + (f" -> HTTP {status}" if status else "")
            )
        context.extend(format_registry_errors(self.errors))
        if not self.errors and body_excerpt:
            context.append(f"response body: {body_excerpt}")
        super().__init__(f"{operation}: {message}", reference=reference, context=context, hint=hint)


class RegistryAuthError(RegistryError):
    """Authentication or authorisation failed (401/403, or the token server refused)."""

    reference = "registry-auth-failed"


class RegistryNotFoundError(RegistryError):
    """The manifest, blob or repository does not exist (404)."""

    reference = "registry-not-found"
