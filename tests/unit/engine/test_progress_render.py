"""Plain progress output follows BuildKit's line shape."""

from __future__ import annotations

import io
import json
import re

from tests.support.testdata import TESTDATA

from mason.cli.progress_render import PlainRenderer, RawJsonRenderer, make_renderer
from mason.progress import Event

PROGRESS = TESTDATA / "progress"

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
    text = _render(
        [
            Event("a", "[build 1/2] FROM base", "started"),
            Event("a", "[build 1/2] FROM base", "done", elapsed=0.1),
            Event("b", "[build 2/2] RUN echo hi", "started"),
            Event("b", "[build 2/2] RUN echo hi", "log", "hi\nthere", extra={"stream": "stdout"}),
            Event("b", "[build 2/2] RUN echo hi", "done", elapsed=1.25),
            Event("c", "[stage-1 2/2] COPY x /", "cached"),
        ]
    )
    assert text == (
        "#1 [build 1/2] FROM base\n#1 DONE 0.1s\n\n"
        "#2 [build 2/2] RUN echo hi\n#2 0.250 hi\n#2 0.250 there\n#2 DONE 1.2s\n\n"
        "#3 [stage-1 2/2] COPY x /\n#3 CACHED\n\n"
    )


def test_interleaved_vertices_repeat_the_header() -> None:
    """When output switches back to a vertex, its header is printed again, as BuildKit does;
    a failed vertex gets BuildKit's summary block with its last output lines at the end."""
    text = _render(
        [
            Event("a", "A", "started"),
            Event("b", "B", "started"),
            Event("a", "A", "log", "x", extra={"stream": "stdout"}),
            Event("b", "B", "done", elapsed=0.5),
            Event("a", "A", "error", "exit code 1"),
        ]
    )
    assert text.splitlines() == [
        "#1 A",
        "",
        "#2 B",
        "",
        "#1 A",
        "#1 0.500 x",
        "",
        "#2 B",
        "#2 DONE 0.5s",
        "",
        "#1 A",
        "#1 ERROR: exit code 1",
        "",
        "------",
        " > A:",
        "0.500 x",
        "------",
    ]


def test_error_summary_keeps_only_the_last_ten_output_lines() -> None:
    """The summary shows the tail of the failed step's output, without ``#N`` (it is no block)."""
    lines = "\n".join(f"line {i}" for i in range(25))
    text = _render(
        [
            Event("r", "[2/2] RUN make", "log", lines, extra={"stream": "stdout"}),
            Event(
                "r",
                "[2/2] RUN make",
                "error",
                "process did not complete successfully: exit code: 2",
            ),
        ]
    )
    summary = text.split("------\n", 1)[1].splitlines()
    assert summary[0] == " > [2/2] RUN make:"
    assert [ln.split(" ", 1)[1] for ln in summary[1:-1]] == [f"line {i}" for i in range(15, 25)]
    assert summary[-1] == "------"


def test_cancelled_vertices_say_canceled_without_a_summary() -> None:
    text = _render(
        [Event("c", "[1/2] RUN sleep 9", "error", "cancelled", extra={"cancelled": "true"})]
    )
    assert text == "#1 [1/2] RUN sleep 9\n#1 CANCELED\n\n"


def test_multi_line_texts_never_leave_a_line_without_its_prefix() -> None:
    """A status, warning or error text with newlines (a registry error body, a heredoc name)
    becomes several ``#N`` lines, so no line can pass for another vertex or a status."""
    text = _render(
        [
            Event(
                "w", "RUN <<EOF\necho hi\nEOF", "warning", "import failed\nregistry says: DENIED"
            ),
            Event("w", "RUN <<EOF\necho hi\nEOF", "log", "first\n#9 DONE 1.0s"),
            Event("w", "RUN <<EOF\necho hi\nEOF", "error", "boom\ndetail"),
        ]
    )
    body = text.split("------")[0].splitlines()
    assert body[0] == "#1 RUN <<EOF echo hi EOF"
    assert body[1:7] == [
        "#1 WARNING: import failed",
        "#1 registry says: DENIED",
        "#1 first",
        "#1 #9 DONE 1.0s",
        "#1 ERROR: boom",
        "#1 detail",
    ]
    assert all(ln.startswith("#1 ") for ln in body if ln)


def test_long_output_lines_are_written_whole() -> None:
    """Plain output never truncates: a log reader gets the full line, with one prefix."""
    long = "x" * 20000
    text = _render([Event("l", "RUN gen", "log", long + "\r\nnext", extra={"stream": "stderr"})])
    assert text.splitlines()[1:3] == [f"#1 0.000 {long}", "#1 0.000 next"]


def test_events_after_the_end_of_a_vertex_do_not_reopen_it() -> None:
    """A late duplicate status (a merged vertex reported twice) prints nothing."""
    text = _render(
        [Event("a", "A", "cached"), Event("a", "A", "done", elapsed=1.0), Event("a", "A", "cached")]
    )
    assert text == "#1 A\n#1 CACHED\n\n"


def test_cache_source_line_is_an_ordinary_status_line() -> None:
    """mason's extra ``cache hit from ...`` line parses as a status line of the vertex, not
    as a step header, a CACHED/DONE/ERROR status or an output line."""
    text = _render(
        [
            Event("h", "[build 2/6] RUN x", "log", "cache hit from registry r:5000/c:latest"),
            Event("h", "[build 2/6] RUN x", "cached"),
        ]
    )
    line = text.splitlines()[1]
    assert line == "#1 cache hit from registry r:5000/c:latest"
    rest = line.split(" ", 1)[1]
    assert not re.match(r"(\[|CACHED|DONE|ERROR|WARNING|CANCELED|\d+\.\d+ )", rest)


def test_buildkit_reference_output_lines_have_the_same_shape() -> None:
    """Every line of BuildKit's captured output fits the grammar our renderer writes."""
    for name in ("buildkit-cold.txt", "buildkit-warm.txt"):
        for line in (PROGRESS / name).read_text().splitlines():
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
