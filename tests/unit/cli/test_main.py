"""``mason.cli.main``: how errors reach the user (exit status, one clear line, no traceback
unless MASON_DEBUG=1, no credentials) with a fake subcommand in place of the real ones."""

from __future__ import annotations

import argparse
import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from mason.cli import main as cli_main
from mason.errors import BuildError, UsageError


def _with_handler(
    monkeypatch: pytest.MonkeyPatch, handler: Callable[[argparse.Namespace], int]
) -> None:
    def parser(argv: object = None) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(prog="mason")
        sub = p.add_subparsers(dest="command")
        sub.add_parser("fake").set_defaults(handler=handler)
        return p

    monkeypatch.setattr(cli_main, "_parser", parser)


def _raise(exc: BaseException) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        print("progress line", end="")  # unterminated, as a live progress line is
        raise exc

    return handler


def test_bug_is_one_line_with_hint_and_exit_70(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MASON_DEBUG", raising=False)
    _with_handler(monkeypatch, _raise(KeyError("layer")))
    assert cli_main.main(["fake"]) == cli_main.EXIT_INTERNAL_ERROR == 70
    out, err = capsys.readouterr()
    assert out == "progress line"  # flushed, and the error is not mixed into stdout
    assert err.splitlines()[0] == "mason: internal error: KeyError: 'layer'"
    assert "MASON_DEBUG=1" in err and "Traceback" not in err


def test_mason_debug_prints_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MASON_DEBUG", "1")
    _with_handler(monkeypatch, _raise(ValueError("bad state")))
    assert cli_main.main(["fake"]) == 70
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in handler" in err
    assert "mason: internal error: ValueError: bad state" in err


def test_internal_error_hides_url_credentials(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MASON_DEBUG", raising=False)
    _with_handler(
        monkeypatch, _raise(RuntimeError("GET https://bob:hunter2@reg.example/v2/ failed"))
    )
    assert cli_main.main(["fake"]) == 70
    err = capsys.readouterr().err
    assert "hunter2" not in err and "https://reg.example/v2/" in err


def test_mason_errors_keep_their_exit_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _with_handler(
        monkeypatch, _raise(UsageError("bad --flag", context=["at: here"], hint="do that"))
    )
    assert cli_main.main(["fake"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: bad --flag\n") and "at: here" in err and "hint: do that" in err
    _with_handler(monkeypatch, _raise(BuildError("RUN failed")))
    assert cli_main.main(["fake"]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_interrupt_is_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _with_handler(monkeypatch, _raise(KeyboardInterrupt()))
    assert cli_main.main(["fake"]) == cli_main.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_full_disk_is_an_environment_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _with_handler(
        monkeypatch,
        _raise(OSError(errno.ENOSPC, "No space left on device", "/var/lib/mason/tmp/x")),
    )
    assert cli_main.main(["fake"]) == 1
    err = capsys.readouterr().err
    assert (
        "ERROR: no space left on device: /var/lib/mason/tmp/x" in err
        and "internal error" not in err
    )
    _with_handler(monkeypatch, _raise(OSError(errno.EBADF, "Bad file descriptor")))
    assert cli_main.main(["fake"]) == 70  # any other OSError escaping the layers is a bug


def test_broken_pipe_is_quiet(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dup2_calls: list[tuple[int, int]] = []
    monkeypatch.setattr(cli_main.os, "dup2", lambda a, b: dup2_calls.append((a, b)))
    with open(tmp_path / "stdout", "w") as stdout:
        monkeypatch.setattr(cli_main.sys, "stdout", stdout)
        _with_handler(monkeypatch, _raise(BrokenPipeError(errno.EPIPE, "Broken pipe")))
        assert cli_main.main(["fake"]) == 1
        assert [target for _, target in dup2_calls] == [
            stdout.fileno()
        ]  # stdout now goes to /dev/null
    assert capsys.readouterr().err == ""


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main([]) == 2
    assert "exit status: 0 success, 1 build failure, 2 usage" in capsys.readouterr().out


def test_bug_inside_a_build_step_is_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import mason.engine.builder
    from mason.solver import SolveError, Vertex

    def build(*args: object, **kwargs: object) -> None:
        try:
            raise AttributeError("'ContentStore' object has no attribute 'commit_file'")
        except AttributeError as exc:
            raise SolveError(Vertex("op", (), name="[2/2] RUN make"), exc) from exc

    monkeypatch.setattr(mason.engine.builder, "build", build)
    monkeypatch.setenv("MASON_ROOT", str(tmp_path / "root"))
    monkeypatch.delenv("MASON_DEBUG", raising=False)
    assert cli_main.main(["build", "--progress=quiet", str(tmp_path)]) == 70
    err = capsys.readouterr().err
    assert (
        "mason: internal error: AttributeError: 'ContentStore' object has no attribute 'commit_file'"
        in err
    )
    assert "in build step [2/2] RUN make" in err and "Traceback" not in err
    monkeypatch.setenv("MASON_DEBUG", "1")
    assert cli_main.main(["build", "--progress=quiet", str(tmp_path)]) == 70
    assert "Traceback" in capsys.readouterr().err


def test_failed_build_step_keeps_exit_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import mason.engine.builder
    from mason.solver import SolveError, Vertex

    def build(*args: object, **kwargs: object) -> None:
        raise SolveError(
            Vertex("op", (), name="[2/2] RUN make"),
            BuildError("exit code 2", context=["make: ***"]),
        )

    monkeypatch.setattr(mason.engine.builder, "build", build)
    monkeypatch.setenv("MASON_ROOT", str(tmp_path / "root"))
    assert cli_main.main(["build", "--progress=quiet", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert (
        "ERROR: [2/2] RUN make: exit code 2" in err
        and "make: ***" in err
        and "internal error" not in err
    )


def test_two_cache_exports_to_one_place_are_refused_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """BuildKit's "duplicate cache exports": exit 2 with both --cache-to named, nothing built."""
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    monkeypatch.setenv("MASON_ROOT", str(tmp_path / "root"))
    dest = tmp_path / "cache"
    code = cli_main.main(
        [
            "build",
            "--cache-to",
            f"type=local,dest={dest}",
            "--cache-to",
            f"type=local,dest={dest}/,mode=max",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "duplicate cache exports" in err and f"dest={dest}/,mode=max" in err
    assert not (tmp_path / "root").exists() and not dest.exists()


def test_a_named_command_builds_only_its_own_parser() -> None:
    def commands(argv: list[str]) -> set[str]:
        help_text = cli_main._parser(argv).format_help()
        return {c for c in cli_main._COMMANDS if c in help_text.split("COMMAND", 1)[1]}

    assert cli_main._command_modules(["build", "--help"]) == ["mason.cli.build_cmd"]
    assert "imagetools" not in commands(["build", "."])
    everything = set(cli_main._COMMANDS)
    # mason --help, an option before the command, an unknown command: every command is listed
    assert commands([]) == commands(["--help"]) == commands(["nonsense"]) == everything
    assert commands(["-h", "build"]) == everything
