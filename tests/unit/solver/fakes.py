"""Test doubles for the solver: ops with call counters, lazy handles, recording progress."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from mason.digest import Digest
from mason.solver import CacheKey, CacheMap, ExecContext, NullProgress, Vertex

__all__ = ["CountingSource", "FakeOp", "Handle", "RecordingProgress", "vertex"]


class Handle:
    """A result handle like the builder's: lazy until someone materialises it."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.materialised = 0
        self._lock = threading.Lock()

    def materialise(self) -> str:
        with self._lock:
            self.materialised += 1
        return self.value

    def __repr__(self) -> str:
        return f"Handle({self.value!r})"


class FakeOp:
    """An op whose definition is given, and that counts what the solver asks of it.

    ``execute`` materialises its inputs (as a RUN on top of them would) and
    returns a handle whose value names the op and its inputs' values.
    """

    def __init__(
        self,
        name: str,
        *,
        definition: dict[str, Any] | None = None,
        content: str | None = None,
        run: Callable[[ExecContext, Sequence[Handle]], None] | None = None,
        on_cache_map: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.definition = (
            definition if definition is not None else {"type": "test.op.v0", "name": name}
        )
        self.content = content
        self.run = run
        self.on_cache_map = on_cache_map
        self.calls = 0
        self.cache_map_calls = 0
        self.content_calls = 0
        self.events: list[str] | None = None
        self._lock = threading.Lock()

    def cache_map(self, input_keys: Sequence[Digest]) -> CacheMap:
        with self._lock:
            self.cache_map_calls += 1
        if self.events is not None:
            self.events.append(f"cache_map {self.name}")
        if self.on_cache_map is not None:
            self.on_cache_map()
        if self.content is None:
            return CacheMap(self.definition)
        content = self.content

        def compute() -> str:
            with self._lock:
                self.content_calls += 1
            if self.events is not None:
                self.events.append(f"content {self.name}")
            return content

        return CacheMap(self.definition, compute)

    def execute(self, ctx: ExecContext, inputs: Sequence[Handle]) -> Handle:
        with self._lock:
            self.calls += 1
        if self.run is not None:
            self.run(ctx, inputs)
        ctx.log(f"running {self.name}")
        values = [i.materialise() for i in inputs]
        return Handle(f"{self.name}({','.join(values)})")


def vertex(
    name: str,
    *inputs: Vertex[Handle],
    op: FakeOp | None = None,
    ignore_cache: bool = False,
    **kw: Any,
) -> Vertex[Handle]:
    """A vertex over a new ``FakeOp(name, **kw)`` (or the given op)."""
    return Vertex(op if op is not None else FakeOp(name, **kw), inputs, name, ignore_cache)


class RecordingProgress(NullProgress):
    """Keeps (event, vertex name, detail) tuples; thread-safe."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self._lock = threading.Lock()

    def _add(self, kind: str, name: str, detail: Any = None) -> None:
        with self._lock:
            self.events.append((kind, name, detail))

    def vertex_started(self, vertex: Vertex[Any], key: CacheKey) -> None:
        self._add("started", vertex.name, key.digest)

    def vertex_cached(self, vertex: Vertex[Any], key: CacheKey, source: str) -> None:
        self._add("cached", vertex.name, source)

    def vertex_log(self, vertex: Vertex[Any], line: str) -> None:
        self._add("log", vertex.name, line)

    def vertex_done(self, vertex: Vertex[Any], key: CacheKey, elapsed: float) -> None:
        self._add("done", vertex.name, elapsed)

    def vertex_error(
        self, vertex: Vertex[Any], key: CacheKey | None, error: BaseException, elapsed: float | None
    ) -> None:
        self._add("error", vertex.name, error)

    def source_error(self, source: str, error: Exception) -> None:
        self._add("source_error", source, error)

    def of(self, kind: str) -> list[tuple[str, Any]]:
        with self._lock:
            return [(name, detail) for k, name, detail in self.events if k == kind]

    def names(self, kind: str) -> list[str]:
        return [name for name, _ in self.of(kind)]


class CountingSource:
    """An imported cache: a dict of key digest -> handle, counting lookups."""

    def __init__(self, results: dict[Digest, Handle] | None = None, *, fail: bool = False) -> None:
        self.results = dict(results or {})
        self.lookups: list[Digest] = []
        self.fail = fail

    def lookup(self, key: CacheKey) -> Handle | None:
        self.lookups.append(key.digest)
        if self.fail:
            raise OSError("cache ref unreachable")
        return self.results.get(key.digest)
