"""httpx, imported the way mason wants it: every module of mason.registry that speaks HTTP
imports it from here, so these hold whichever of them loads first (``mason.registry``'s
package no longer imports them all: ``mason.registry.early`` runs before httpx is loaded)."""

import sys

# httpx's package imports its command-line client (click, rich, pygments: about half of
# httpx's import time) whenever click is installed; mason never runs it. A None entry makes
# that optional import fail as if click were missing (httpx then defines a stub `main`).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
# httpx also imports zstandard (libzstd and the platform module it imports) for a zstd
# Content-Encoding it then offers and no registry needs; hidden while httpx loads, so only a
# zstd layer loads it (mason.compression.streams), and httpx offers gzip and deflate.
_HIDE_ZSTD = "zstandard" not in sys.modules and "httpx" not in sys.modules
if _HIDE_ZSTD:
    sys.modules["zstandard"] = None  # type: ignore[assignment]
try:
    import httpx as httpx
finally:
    if _HIDE_ZSTD and "zstandard" in sys.modules and sys.modules["zstandard"] is None:
        del sys.modules["zstandard"]

__all__ = ["httpx"]
