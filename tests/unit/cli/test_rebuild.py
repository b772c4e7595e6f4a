"""Which ``mason build`` command lines are memoised as unchanged rebuilds (mason.cli.rebuild),
what their key depends on, and the progress text a build keeps for its memo."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from mason.cli import rebuild
from mason.cli.main import _parser


def _args(*flags: str) -> argparse.Namespace:
    argv = ["build", "--progress=plain", *flags, "ctx"]
    return _parser(argv).parse_args(argv)


@pytest.fixture(autouse=True)
def _root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MASON_ROOT", str(tmp_path / "root"))


def _key(*flags: str) -> str | None:
    found = rebuild.prepare_rebuild(_args(*flags), "plain", local_context=True)
    return None if found is None else found.key


@pytest.mark.parametrize(
    "flags",
    [
        ("-t", "r.test/app"),  # no --push
        ("--push", "-t", "r.test/app", "-o", "type=oci,dest=x.tar"),
        ("--push", "-t", "r.test/app", "--cache-from", "r.test/cache"),
        ("--push", "-t", "r.test/app", "--cache-to", "type=registry,ref=r.test/cache"),
        ("--push", "-t", "r.test/app", "--no-cache"),
        ("--push", "-t", "r.test/app", "--secret", "id=s,src=f"),
        ("--push", "-t", "r.test/app", "--ssh", "default"),
        ("--push", "-t", "r.test/app", "--build-context", "x=dir"),
        ("--push", "-t", "r.test/app", "--explain-cache"),
        ("--push", "-t", "r.test/app", "-f", "-"),
    ],
)
def test_builds_that_are_not_memoised(flags: tuple[str, ...]) -> None:
    assert _key(*flags) is None


def test_the_key_follows_the_command_line_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = _key("--push", "-t", "r.test/app")
    assert first is not None and first == _key("--push", "-t", "r.test/app")
    assert _key("--push", "-t", "r.test/app", "--build-arg", "A=1") != first
    monkeypatch.setenv("OLDPWD", "/elsewhere")  # what a shell changes on its own
    assert _key("--push", "-t", "r.test/app") == first
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    assert _key("--push", "-t", "r.test/app") != first


def test_a_remote_context_or_a_terminal_is_not_memoised() -> None:
    args = _args("--push", "-t", "r.test/app")
    assert rebuild.prepare_rebuild(args, "plain", local_context=False) is None
    assert rebuild.prepare_rebuild(args, "tty", local_context=True) is None
    assert rebuild.prepare_rebuild(args, "rawjson", local_context=True) is None


def test_the_progress_text_is_kept_up_to_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rebuild, "_KEPT_TEXT", 10)
    out = io.StringIO()
    tee = rebuild.Tee(out)
    tee.write("#1 DONE\n")
    assert tee.text() == "#1 DONE\n"
    tee.write("more than ten\n")
    assert tee.text() is None  # a build that printed this much ran steps: no memo
    assert out.getvalue() == "#1 DONE\nmore than ten\n"  # everything was written through
