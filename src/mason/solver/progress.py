"""How the solver reports what happens to each vertex, without knowing the UI.

The builder implements ``SolveProgress`` and maps the calls to
``mason.progress`` events, numbering vertices (#N) in order of first
appearance. Calls come from worker threads as well as the solving thread,
concurrently: implementations must be thread-safe and quick, and must not
raise.
"""

from __future__ import annotations

from typing import Any, Protocol

from .graph import Vertex
from .keys import CacheKey

__all__ = ["NullProgress", "SolveProgress"]


class SolveProgress(Protocol):
    """Callbacks for one solve. ``vertex`` is the first vertex of a merged group."""

    def vertex_started(self, vertex: Vertex[Any], key: CacheKey) -> None:
        """The op's ``execute`` is about to run (not called for cache hits)."""

    def vertex_cached(self, vertex: Vertex[Any], key: CacheKey, source: str) -> None:
        """``key`` was found in ``source`` (``"local"`` or an import's name); nothing ran."""

    def vertex_log(self, vertex: Vertex[Any], line: str) -> None:
        """One line of the op's output."""

    def vertex_done(self, vertex: Vertex[Any], key: CacheKey, elapsed: float) -> None:
        """``execute`` returned after ``elapsed`` seconds."""

    def vertex_error(
        self, vertex: Vertex[Any], key: CacheKey | None, error: BaseException, elapsed: float | None
    ) -> None:
        """Computing the key (``key`` None) or executing failed, or was cancelled
        (``error`` is ``Cancelled``)."""

    def source_error(self, source: str, error: Exception) -> None:
        """An imported cache failed a lookup; it is not asked again in this solve."""


class NullProgress:
    """Ignores everything; subclass it to implement only some callbacks."""

    def vertex_started(self, vertex: Vertex[Any], key: CacheKey) -> None:
        pass

    def vertex_cached(self, vertex: Vertex[Any], key: CacheKey, source: str) -> None:
        pass

    def vertex_log(self, vertex: Vertex[Any], line: str) -> None:
        pass

    def vertex_done(self, vertex: Vertex[Any], key: CacheKey, elapsed: float) -> None:
        pass

    def vertex_error(
        self, vertex: Vertex[Any], key: CacheKey | None, error: BaseException, elapsed: float | None
    ) -> None:
        pass

    def source_error(self, source: str, error: Exception) -> None:
        pass
