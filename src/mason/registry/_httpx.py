"""httpx, imported the way mason wants it: every module of mason.registry that speaks HTTP
imports it from here, so these hold whichever of them loads first (``mason.registry``'s
package no longer imports them all: ``mason.registry.early`` runs before httpx is loaded)."""

import sys

# httpx's package imports its command-line client (click, rich, pygments: about half of
# httpx's import time) whenever click is installed; mason never runs it. A None entry makes
# that optional import fail as if click were missing (httpx then defines a stub `main`).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
# Hidden while httpx and httpcore load, as if not installed (both import them optionally):
# zstandard (libzstd and the platform module), for a zstd Content-Encoding no registry needs
# (only a zstd layer loads it: mason.compression.streams; httpx then offers gzip and deflate),
# and anyio, for async clients mason never makes. httpcore is imported here, not at the first
# request (httpx's transport imports it then), so that it loads without anyio too.
_HIDDEN = [
    name
    for name in ("zstandard", "anyio")
    if name not in sys.modules and "httpx" not in sys.modules
]
for _name in _HIDDEN:
    sys.modules[_name] = None  # type: ignore[assignment]
try:
    import httpcore  # noqa: F401
    import httpx as httpx
finally:
    for _name in _HIDDEN:
        if _name in sys.modules and sys.modules[_name] is None:
            del sys.modules[_name]

__all__ = ["httpx"]
