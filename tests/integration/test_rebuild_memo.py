"""An unchanged rebuild on the same root (mason.engine.rebuilds), through the CLI on the real
registry: answered from its memo with the same output and result, and never when anything it
depends on changed -- a context file, the base image's tag, the pushed name, the command line,
a prune of the root."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tests.support.cachebuild import Build
from tests.support.cli import expect_ok, mason, mason_build
from tests.support.registry_server import RegistryServer, count_requests

from mason.engine.rebuilds import MEMO_DIR

_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY a.txt /a.txt
RUN cat /a.txt > /b.txt
"""


class _Setup:
    def __init__(self, tmp_path: Path, registry: RegistryServer, base: str, app: str) -> None:
        self.root = tmp_path / "root"
        self.ctx = tmp_path / "ctx"
        self.ctx.mkdir()
        (self.ctx / "Dockerfile").write_text(_DOCKERFILE)
        (self.ctx / "a.txt").write_text("one\n")
        self.registry = registry
        self.base = base
        self.app = app
        self.meta = tmp_path / "metadata.json"

    def build(self, *extra: str) -> tuple[str, dict[str, object], int]:
        """(plain progress, --metadata-file, manifest PUTs the build made)."""
        puts = self._puts()
        proc = expect_ok(
            mason_build(
                self.root,
                "--build-arg",
                f"BASE={self.base}",
                "-t",
                self.app,
                "--push",
                "--metadata-file",
                str(self.meta),
                *extra,
                str(self.ctx),
            )
        )
        return proc.stderr, json.loads(self.meta.read_text()), self._puts() - puts

    def _puts(self) -> int:
        return count_requests(self.registry, "PUT", r"/manifests/")

    def settle(self) -> None:
        """Past the racy margin of what was just written (mason.engine.racy)."""
        time.sleep(0.1)


def _copy(root: Path, src: str, dst: str) -> None:
    expect_ok(mason(root, "imagetools", "copy", f"docker://{src}", f"docker://{dst}"))


@pytest.fixture
def setup(tmp_path: Path, registry: RegistryServer, busybox_image: str, reg: str) -> _Setup:
    """A context on a base of its own (a copy of busybox), settled."""
    s = _Setup(tmp_path, registry, f"{reg}/base:latest", f"{reg}/app:1")
    _copy(s.root, busybox_image, s.base)
    s.settle()
    return s


def test_unchanged_rebuild_is_answered_from_its_memo(setup: _Setup) -> None:
    s = setup
    cold, cold_meta, _ = s.build()
    assert Build(0, cold).ran and not (s.root / MEMO_DIR).exists()  # steps ran: no memo
    s.settle()
    before = _state(s.root)
    warm, warm_meta, _ = s.build()  # every step cached: the memo is written
    assert warm_meta == cold_meta and _state(s.root) != before  # the build used the root
    assert not Build(0, warm).ran and len(list((s.root / MEMO_DIR).iterdir())) == 1
    before = _state(s.root)
    again, again_meta, again_puts = s.build()
    assert again == warm and again_meta == warm_meta
    assert again_puts == 0 and _state(s.root) == before  # answered without the engine


def _state(root: Path) -> dict[str, tuple[int, int]]:
    """Every file of the root but the memos: its mtime and size."""
    return {
        str(p): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file() and MEMO_DIR not in p.parts
    }


def test_a_rebuild_runs_when_what_it_depends_on_changed(
    setup: _Setup, busybox_image: str, reg: str
) -> None:
    s = setup
    s.build()
    s.settle()
    _, first, _ = s.build()

    # a context file: same size, only its bytes (and so its ctime) differ
    (s.ctx / "a.txt").write_text("two\n")
    s.settle()
    out, changed, puts = s.build()
    assert changed["containerimage.digest"] != first["containerimage.digest"] and puts >= 1
    assert any("RUN cat" in step for step in Build(0, out).ran)

    # the pushed name now holds something else: the build pushes its image again
    s.build()  # records the memo of the new content
    _copy(s.root, busybox_image, s.app)
    _, back, puts = s.build()
    assert puts >= 1 and back == changed

    # the base image's tag moved: the build resolves it again and runs its steps
    _copy(s.root, f"{reg}/app:1", s.base)
    _, moved, puts = s.build()
    assert moved["containerimage.digest"] != changed["containerimage.digest"] and puts >= 1

    # another command line is another memo
    s.build()
    _, _, puts = s.build("--label", "x=y")
    assert puts >= 1

    # a prune forgets every memo
    expect_ok(mason(s.root, "prune", "--all"))
    assert not (s.root / MEMO_DIR).exists()
    out, _, _ = s.build()
    assert Build(0, out).ran
