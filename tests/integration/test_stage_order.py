"""``COPY --from`` and ``RUN --mount=from=`` a stage defined later, through the CLI (issue 11):
BuildKit v0.32.2 dispatches stages in file order and refuses a source that is not dispatched
yet, with the Dockerfile line; a stage a ``--build-context`` replaces is ready at once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.support.cachebuild import Builder
from tests.support.cli import mason_build

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (overlayfs, runc)")

LATER = (
    "ARG BASE\n"
    "FROM $BASE AS first\n"
    "RUN --mount=from=later,target=/l cat /l/v > /seen\n"
    "FROM $BASE AS later\n"
    "RUN echo later > /v\n"
    "FROM first\n"
)


def _context(path: Path, dockerfile: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Dockerfile").write_text(dockerfile)
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "RUN --mount=from=later,target=/l cat /l/v > /seen",
            'cannot mount from stage "later" to "/l", stage needs to be defined before current command',
        ),
        (
            "COPY --from=later /v /seen",
            'cannot copy from stage "later", it needs to be defined before current stage "first"',
        ),
    ],
)
def test_a_later_stage_is_refused_with_its_line(
    busybox_image: str, tmp_path: Path, line: str, message: str
) -> None:
    text = LATER.replace("RUN --mount=from=later,target=/l cat /l/v > /seen", line)
    ctx = _context(tmp_path / "ctx", text)
    out = tmp_path / "out"
    proc = mason_build(
        tmp_path / "root",
        "--build-arg",
        f"BASE={busybox_image}",
        "-o",
        f"type=local,dest={out}",
        str(ctx),
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Dockerfile:3" in proc.stderr, proc.stderr
    assert not out.exists()


def test_a_later_stage_replaced_by_a_named_context_is_ready(build: Builder, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "v").write_text("from the named context\n")
    out = tmp_path / "out"
    build(
        _context(tmp_path / "ctx", LATER),
        "--build-context",
        f"later={src}",
        "-o",
        f"type=local,dest={out}",
    ).check()
    assert (out / "seen").read_text() == "from the named context\n"
