"""Where cached results come from: the builder's local store and imported caches.

The solver treats results as opaque values of the builder's type ``R``: a
lookup returns a handle (for an imported cache, typically a lazy one that has
downloaded nothing) and the solver only passes it on.
"""

from __future__ import annotations

import threading
from typing import Generic, Protocol, TypeVar

from mason.digest import Digest
from mason.structs import Struct

from .keys import CacheKey

__all__ = ["LOCAL_SOURCE", "CacheLookup", "CacheSource", "CacheStore", "MemoryStore"]

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

#: The source name the solver reports for hits from the local store.
LOCAL_SOURCE = "local"


class CacheLookup(Protocol[R_co]):
    """A read-only cache: an imported registry, inline or local cache."""

    def lookup(self, key: CacheKey) -> R_co | None:
        """The result recorded under ``key.digest``, or None when there is none.

        Must not download or unpack anything: the value is a handle that is
        materialised later, if ever. ``key`` carries the input keys and op
        definition too, for stores that link records like BuildKit's.
        Called only from the thread that runs ``Solver.solve``.
        """
        ...


class CacheStore(Protocol[R]):
    """The local store: looked up first, and where every executed result is recorded."""

    def lookup(self, key: CacheKey) -> R | None: ...

    def record(self, key: CacheKey, result: R) -> None:
        """Remember ``result`` under ``key`` (idempotent). Called only from the solving thread."""
        ...


class CacheSource(Struct, Generic[R_co], frozen=True):
    """An imported cache and the name progress shows for its hits (e.g. its ``ref``)."""

    name: str
    store: CacheLookup[R_co]


class MemoryStore(Generic[R]):
    """A ``CacheStore`` in a dict (tests, and builds that keep nothing). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._results: dict[Digest, R] = {}

    def lookup(self, key: CacheKey) -> R | None:
        with self._lock:
            return self._results.get(key.digest)

    def record(self, key: CacheKey, result: R) -> None:
        with self._lock:
            self._results[key.digest] = result

    def __len__(self) -> int:
        with self._lock:
            return len(self._results)

    def __contains__(self, digest: object) -> bool:
        with self._lock:
            return digest in self._results
