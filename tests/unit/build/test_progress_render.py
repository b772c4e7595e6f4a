"""Plain progress output follows BuildKit's line shape."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from mason.cli.progress_render import PlainRenderer, RawJsonRenderer, make_renderer
from mason.progress import Event

TESTDATA = Path(__file__).resolve().parents[3].parent / "shared" / "testdata" / "progress"

_LINE = re.compile(r"^(#\d+ (CACHED|DONE \d+\.\ds|ERROR: .*|\d+\.\d{3} .*|.+))?$")


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _render(events: list[Event]) -> str:
    out = io.StringIO()
    clock = _Clock()
    r = PlainRenderer(out, clock=clock)
    for e in events:
        clock.t += 0.25
        r.emit(e)
    r.close()
    return out.getvalue()


def test_plain_blocks_match_buildkit_shape() -> None:
    """Headers, output lines with elapsed seconds, CACHED, DONE and blank lines between blocks."""
    text = _render([
        Event("a", "[build 1/2] FROM base", "started"),
        Event("a", "[build 1/2] FROM base", "done", elapsed=0.1),
        Event("b", "[build 2/2] RUN echo hi", "started"),
        Event("b", "[build 2/2] RUN echo hi", "log", "hi\nthere", extra={"stream": "stdout"}),
        Event("b", "[build 2/2] RUN echo hi", "done", elapsed=1.25),
        Event("c", "[stage-1 2/2] COPY x /", "cached"),
    ])
    assert text == (
        "#1 [build 1/2] FROM base\n#1 DONE 0.1s\n\n"
        "#2 [build 2/2] RUN echo hi\n#2 0.250 hi\n#2 0.250 there\n#2 DONE 1.2s\n\n"
        "#3 [stage-1 2/2] COPY x /\n#3 CACHED\n\n"
    )


def test_interleaved_vertices_repeat_the_header() -> None:
    """When output switches back to a vertex, its header is printed again, as BuildKit does."""
    text = _render([
        Event("a", "A", "started"),
        Event("b", "B", "started"),
        Event("a", "A", "log", "x", extra={"stream": "stdout"}),
        Event("a", "A", "error", "exit code 1"),
    ])
    assert text.splitlines() == ["#1 A", "", "#2 B", "", "#1 A", "#1 0.500 x", "#1 ERROR: exit code 1", ""]


def test_buildkit_reference_output_lines_have_the_same_shape() -> None:
    """Every line of BuildKit's captured output fits the grammar our renderer writes."""
    for name in ("buildkit-cold.txt", "buildkit-warm.txt"):
        for line in (TESTDATA / name).read_text().splitlines():
            if line.startswith(("------", " > ")):
                continue  # the error summary block, printed by the command, not the renderer
            assert _LINE.match(line), line


def test_rawjson_writes_one_object_per_event() -> None:
    """rawjson is machine-readable: one JSON object per line."""
    out = io.StringIO()
    r = RawJsonRenderer(out)
    r.emit(Event("v", "RUN x", "cached"))
    assert json.loads(out.getvalue())["status"] == "cached"


def test_auto_is_plain_when_not_a_tty() -> None:
    """auto chooses the plain renderer for pipes and files."""
    assert isinstance(make_renderer("auto", io.StringIO()), PlainRenderer)
