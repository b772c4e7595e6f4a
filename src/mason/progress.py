"""Progress events: what the builder reports, with no UI.

The builder emits ``Event``s to a ``ProgressSink``; the CLI renders them (plain
lines in BuildKit's ``--progress=plain`` shape, rich on a TTY, or nothing).
"""

from __future__ import annotations

import threading
from typing import Literal, Protocol

from mason.structs import Struct, field

__all__ = ["Event", "HeldSink", "NullSink", "ProgressSink", "RecordingSink", "VertexStatus"]

VertexStatus = Literal["started", "log", "cached", "done", "error", "warning"]


class Event(Struct, frozen=True):
    """One thing that happened to a vertex (a build step or an internal task).

    ``vertex`` identifies the step (a stable id, e.g. its cache key or a name);
    ``name`` is what plain output prints after ``#N`` (``[build 2/6] RUN ...``).
    """

    vertex: str
    name: str
    status: VertexStatus
    text: str = ""
    elapsed: float | None = None
    extra: dict[str, str] = field(default_factory=dict)


class ProgressSink(Protocol):
    def emit(self, event: Event) -> None: ...


class NullSink:
    def emit(self, event: Event) -> None:
        pass


class HeldSink:
    """Holds events back until ``release()``, which passes them on to ``sink`` in order, and
    every later event straight after: work run ahead in another thread reports in turn."""

    def __init__(self, sink: ProgressSink) -> None:
        self._sink = sink
        self._held: list[Event] | None = []
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            if self._held is not None:
                self._held.append(event)
                return
        self._sink.emit(event)

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held or [], None
            for event in held:  # under the lock: nothing emitted now overtakes them
                self._sink.emit(event)


class RecordingSink:
    """Keeps every event; thread-safe. Used by tests and by `--progress=rawjson`."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)
