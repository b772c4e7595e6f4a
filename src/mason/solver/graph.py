"""The graph the solver runs: vertices, the op protocol, and what an op sees while it runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from mason.digest import Digest
from mason.errors import MasonError
from mason.structs import Struct, force_setattr

from .keys import CacheKey, CacheMap

__all__ = ["CancelToken", "Cancelled", "ExecContext", "Op", "Vertex"]

R = TypeVar("R")


class Cancelled(MasonError):
    """The solve was cancelled (another vertex failed, or the user interrupted it).

    Ops raise it through ``CancelToken.raise_if_cancelled()``; the solver never
    reports it as the cause of a failed build.
    """


class CancelToken:
    """Set once when the solve is cancelled; ops poll it or register a callback.

    A callback added after cancellation runs at once. Callbacks run on the
    thread that cancels, so they must be quick (signal a process, close a
    socket) and must not raise.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled or ``timeout`` passes; True when cancelled."""
        return self._event.wait(timeout)

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled")

    def add_callback(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()


class ExecContext:
    """What ``Op.execute`` gets besides its inputs: its name, key, cancel token, log sink."""

    def __init__(
        self,
        name: str,
        key: CacheKey,
        cancel: CancelToken,
        log: Callable[[str], None],
    ) -> None:
        self.name = name
        self.key = key
        self.cancel = cancel
        self._log = log

    def log(self, line: str) -> None:
        """Report one line of output (a RUN's stdout/stderr) to the progress callback."""
        self._log(line)


class Op(Protocol[R]):
    """One operation. Implemented by the builder (source, exec, file ops).

    ``cache_map`` must be cheap apart from what it defers to
    ``CacheMap.content``; it may do I/O (resolve a tag to a digest) and runs on
    a worker thread. ``execute`` receives its inputs' results, in input order,
    exactly as the store returned them or as the inputs' ``execute`` returned
    them: a cache hit is a handle the op may ask to materialise; the solver
    itself never does. It should watch ``ctx.cancel`` during long work.
    """

    def cache_map(self, input_keys: Sequence[Digest]) -> CacheMap: ...

    def execute(self, ctx: ExecContext, inputs: Sequence[R]) -> R: ...


class Vertex(Struct, Generic[R], frozen=True, eq=False):
    """A node of the build graph: an op applied to the results of ``inputs``.

    Vertices compare by identity; two vertices whose keys come out equal are
    merged by the solver and run once. ``name`` is what progress shows
    (``[build 2/6] RUN make``). ``ignore_cache`` (``--no-cache``) makes the
    solver run this vertex and every vertex depending on it without looking
    at any cache; their results are still recorded in the local store.
    """

    op: Op[R]
    inputs: tuple[Vertex[R], ...] = ()
    name: str = ""
    ignore_cache: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.inputs, tuple):
            force_setattr(self, "inputs", tuple(self.inputs))
        for i in self.inputs:
            if not isinstance(i, Vertex):
                raise TypeError(f"vertex {self.name!r}: input {i!r} is not a Vertex")

    def __repr__(self) -> str:
        return f"Vertex({self.name!r}, inputs={len(self.inputs)})"
