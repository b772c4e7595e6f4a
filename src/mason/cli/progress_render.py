"""Progress renderers: turn ``mason.progress.Event``s into output.

- ``plain``: BuildKit's ``--progress=plain`` line shape: ``#N name`` when a vertex
  first appears (and again when output switches back to it), output lines
  ``#N 0.123 text`` (seconds since the vertex started), status lines ``#N text``,
  ``#N CACHED``, ``#N DONE 1.2s``, ``#N ERROR: ...``, a blank line between blocks.
- ``tty``: a live ``rich`` display of the running vertices.
- ``quiet``: nothing (the command prints the image digest at the end).
- ``rawjson``: one JSON object per event.

Event conventions (set by mason.engine): ``status="log"`` with ``extra["stream"]``
set is process output (timestamped); without it the text is a status line.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from typing import Any, TextIO

from mason.progress import Event
from mason.structs import asdict

__all__ = [
    "PlainRenderer",
    "QuietRenderer",
    "RawJsonRenderer",
    "Renderer",
    "RichRenderer",
    "make_renderer",
]


class Renderer:
    """A ProgressSink that also needs closing (to flush a live display)."""

    def emit(self, event: Event) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class QuietRenderer(Renderer):
    def emit(self, event: Event) -> None:
        pass


class RawJsonRenderer(Renderer):
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            # Event's fields are flat: a struct's asdict (not recursive) is the whole event
            self._stream.write(json.dumps(asdict(event), sort_keys=True) + "\n")
            self._stream.flush()


class PlainRenderer(Renderer):
    """BuildKit-shaped plain output. Thread-safe; vertices numbered by first appearance.

    Every line a vertex prints starts with ``#N `` (a multi-line text becomes several
    prefixed lines, so no line can pose as another vertex's). On ``close`` each failed
    vertex gets BuildKit's summary block: ``------``, `` > NAME:``, its last output lines
    (``0.123 text``, no ``#``: they belong to no block), ``------``.
    """

    #: Output lines kept per vertex for the error summary (BuildKit shows the last 10).
    TAIL = 10

    def __init__(self, stream: TextIO, *, clock: Any = time.monotonic) -> None:
        self._stream = stream
        self._clock = clock
        self._lock = threading.Lock()
        self._numbers: dict[str, int] = {}
        self._names: dict[str, str] = {}
        self._started: dict[str, float] = {}
        self._current: str | None = None
        self._finished: set[str] = set()
        self._tails: dict[str, deque[str]] = {}
        self._failed: list[str] = []

    def _write(self, line: str) -> None:
        self._stream.write(line + "\n")

    def _header(self, event: Event) -> int:
        n = self._numbers.get(event.vertex)
        if n is None:
            n = len(self._numbers) + 1
            self._numbers[event.vertex] = n
            self._names[event.vertex] = _one_line(event.name)
            self._started[event.vertex] = self._clock()
        if self._current != event.vertex:
            if self._current is not None:
                self._write("")
            self._write(f"#{n} {self._names[event.vertex]}")
            self._current = event.vertex
        return n

    def _lines(self, n: int, text: str, prefix: str = "") -> None:
        for i, line in enumerate(text.splitlines() or [""]):
            self._write(f"#{n} {prefix if i == 0 else ''}{line}")

    def emit(self, event: Event) -> None:
        with self._lock:
            if event.vertex in self._finished and event.status in (
                "started",
                "cached",
                "done",
                "error",
            ):
                return
            n = self._header(event)
            if event.status == "log":
                if event.extra.get("stream"):
                    elapsed = self._clock() - self._started[event.vertex]
                    tail = self._tails.setdefault(event.vertex, deque(maxlen=self.TAIL))
                    for line in event.text.splitlines() or [""]:
                        self._write(f"#{n} {elapsed:.3f} {line}")
                        tail.append(f"{elapsed:.3f} {line}")
                else:
                    self._lines(n, event.text)
            elif event.status == "cached":
                self._write(f"#{n} CACHED")
                self._finished.add(event.vertex)
            elif event.status == "done":
                elapsed = (
                    event.elapsed
                    if event.elapsed is not None
                    else self._clock() - self._started[event.vertex]
                )
                self._write(f"#{n} DONE {elapsed:.1f}s")
                self._finished.add(event.vertex)
            elif event.status == "error":
                self._finished.add(event.vertex)
                if event.extra.get("cancelled"):
                    self._write(f"#{n} CANCELED")
                else:
                    self._lines(n, event.text, "ERROR: ")
                    self._failed.append(event.vertex)
            elif event.status == "warning":
                self._lines(n, event.text, "WARNING: ")
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._current is not None:
                self._write("")
                self._current = None
            for vid in self._failed:
                self._write("------")
                self._write(f" > {self._names[vid]}:")
                for line in self._tails.get(vid, ()):
                    self._write(line)
                self._write("------")
            self._failed.clear()
            self._stream.flush()


def _one_line(text: str) -> str:
    """A vertex name on one line (a heredoc RUN's name holds newlines)."""
    return " ".join(text.splitlines()) if "\n" in text or "\r" in text else text


class RichRenderer(Renderer):
    """A live view on a TTY: one line per vertex with its state and time, the last
    output line of running steps. Falls back to plain lines after close."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = Console(file=stream)
        self._lock = threading.Lock()
        self._order: list[str] = []
        self._state: dict[str, dict[str, Any]] = {}
        self._start = time.monotonic()
        self._live = Live(
            console=self._console,
            refresh_per_second=8,
            transient=False,
            get_renderable=self._render,
        )
        self._live.start()

    def _render(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            table = Table.grid(padding=(0, 1), expand=True)
            table.add_column(justify="right", style="dim", no_wrap=True, min_width=3)
            table.add_column(
                no_wrap=True, overflow="ellipsis", ratio=1
            )  # one line per step, cut to fit
            table.add_column(justify="right", no_wrap=True, min_width=6)
            title = Text(
                f"[+] Building {time.monotonic() - self._start:.1f}s "
                f"({sum(1 for s in self._state.values() if s['status'] in ('done', 'cached'))}/{len(self._order)})",
                style="bold",
            )
            table.add_row("", title, "")
            now = time.monotonic()
            for i, vid in enumerate(self._order, 1):
                s = self._state[vid]
                status = s["status"]
                if status == "cached":
                    right, style = "CACHED", "blue"
                elif status == "done":
                    right, style = f"{s['elapsed']:.1f}s", "green"
                elif status == "error":
                    right, style = "ERROR", "red"
                else:
                    right, style = f"{now - s['t0']:.1f}s", "yellow"
                table.add_row(f"#{i}", Text(s["name"], style=style), right)
                if status in ("started", "log") and s.get("last"):
                    table.add_row("", Text(" => " + s["last"][-120:], style="dim"), "")
            return table

    def emit(self, event: Event) -> None:
        with self._lock:
            s = self._state.get(event.vertex)
            if s is None:
                s = {
                    "name": event.name,
                    "status": "started",
                    "t0": time.monotonic(),
                    "elapsed": 0.0,
                    "last": "",
                }
                self._state[event.vertex] = s
                self._order.append(event.vertex)
            if event.status == "log":
                s["last"] = event.text.splitlines()[-1] if event.text else ""
            elif event.status in ("cached", "done", "error"):
                s["status"] = event.status
                s["elapsed"] = (
                    event.elapsed if event.elapsed is not None else time.monotonic() - s["t0"]
                )
            elif event.status == "warning":
                self._console.print(f"[yellow]WARNING[/]: {event.text}")

    def close(self) -> None:
        self._live.stop()


def make_renderer(mode: str, stream: TextIO | None = None) -> Renderer:
    """``auto`` picks ``tty`` on a terminal and ``plain`` otherwise."""
    out = stream if stream is not None else sys.stderr
    if mode == "auto":
        mode = "tty" if out.isatty() else "plain"
    if mode == "tty":
        return RichRenderer(out)
    if mode == "quiet":
        return QuietRenderer()
    if mode == "rawjson":
        return RawJsonRenderer(out)
    return PlainRenderer(out)
