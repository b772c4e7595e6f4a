"""A ``socketserver`` server (``http.server``'s, a TLS-wrapped one, ...) run in a daemon thread
for the length of a ``with`` block: the small in-process HTTP servers unit tests start on
127.0.0.1."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["serving"]

S = TypeVar("S", bound=socketserver.BaseServer)


@contextmanager
def serving(server: S) -> Iterator[S]:
    """Serve ``server`` until the block ends, then stop it and close its socket."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
