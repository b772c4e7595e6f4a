"""mason's command line: `mason build`, `mason imagetools`, `mason cache`, `mason du`/`prune`,
`mason debug`. Heavy modules are imported lazily so `mason --help` stays fast.

Each subcommand lives in its own module under ``mason.cli`` exposing
``register(subparsers)``; the module is named in ``_COMMANDS``.

Exit status (``docs/architecture.md`` §1):

    0    success
    1    build failure: a RUN failed, a file or image is missing, a registry refused
    2    usage or Dockerfile error (bad flag value, syntax error, unknown stage)
    70   internal error: a bug in mason (EX_SOFTWARE from sysexits.h); the message names
         the exception, ``MASON_DEBUG=1`` prints its traceback
    130  interrupted (Ctrl-C)
    143  terminated (SIGTERM; 129 for SIGHUP): cancelled and cleaned up as after Ctrl-C

Every error goes to stderr after pending output on stdout and stderr is flushed, so it
never lands inside a progress line. Only this module decides how an error is printed;
layers below raise ``MasonError`` subclasses that say what failed and where.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import re
import signal
import sys
from collections.abc import Iterator, Sequence

import mason
from mason.cli import _dccache
from mason.cli._format import error_lines
from mason.errors import MasonError

# start-up (issue 14): typing is not imported for `mason build` (mypy takes TYPE_CHECKING as
# true whatever its value); traceback only for MASON_DEBUG
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["EXIT_INTERNAL_ERROR", "EXIT_INTERRUPTED", "main"]

#: Exit status of an unexpected exception (a bug): EX_SOFTWARE.
EXIT_INTERNAL_ERROR = 70
#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130

# OSErrors that are the machine's condition rather than mason's bug, wherever they surface
_TERMINATING = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C raises KeyboardInterrupt: every layer already
    cancels and cleans up on that (the solver's cancel token, the sandbox, mounts, active
    snapshots, temporary files), so a CI cancel or a closed terminal takes the same path."""

    def __init__(self, signum: int) -> None:
        self.signal = signal.Signals(signum)
        super().__init__(self.signal.name)


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def _terminate_like_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``Terminated`` for the duration; the old handlers come back after
    (``main`` also runs inside other programs, such as the tests)."""
    old: dict[signal.Signals, Any] = {}
    for sig in _TERMINATING:
        with contextlib.suppress(ValueError):  # not the main thread: signals stay as they are
            old[sig] = signal.signal(sig, _raise_terminated)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
}

_USERINFO = re.compile(r"://[^/@\s]+@")

# subcommand name -> module under mason.cli that defines register(subparsers)
_COMMANDS: dict[str, str] = {
    "build": "mason.cli.build_cmd",
    "imagetools": "mason.cli.imagetools_cmd",
    "cache": "mason.cli.cache_cmd",
    "du": "mason.cli.state_cmd",
    "prune": "mason.cli.state_cmd",
    "debug": "mason.cli.debug_cmd",
    "registry": "mason.cli.registry_cmd",
}

_EPILOG = (
    "exit status: 0 success, 1 build failure, 2 usage or Dockerfile error, "
    "70 internal error (set MASON_DEBUG=1 for the traceback), 130 interrupted, "
    "143 terminated (SIGTERM; 129: SIGHUP)"
)


def _columns() -> int:
    """``shutil.get_terminal_size().columns`` without importing shutil (and the bz2, lzma and
    zlib modules it loads), which argparse's help formatter would do on every --help."""
    with contextlib.suppress(ValueError):
        if int(os.environ.get("COLUMNS", "0")) > 0:
            return int(os.environ["COLUMNS"])
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class _Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str, **kwargs: Any) -> None:
        kwargs.setdefault("width", _columns() - 2)
        super().__init__(prog, **kwargs)


class _Parser(argparse.ArgumentParser):
    """Reports an unknown flag with the usage of the (sub)command it was given to
    (``mason build``'s, not ``mason COMMAND ...``), as docker buildx does; formats help
    with ``_Formatter`` (subcommands' parsers are of this class too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, extra = super().parse_known_args(args, namespace)
        if extra and " " in self.prog:  # a subcommand's parser: the flag is unknown to it
            self.error("unrecognized arguments: " + " ".join(extra))
        return ns, extra


def _command_modules(argv: Sequence[str] | None) -> list[str]:
    """The module of the command ``argv`` names, alone (start-up, issue 14: the other commands'
    modules and parsers are not built for it); every command's for ``mason --help``, a
    ``--help``/``--version`` before the command, or an unknown command (its error lists them)."""
    args = list(sys.argv[1:] if argv is None else argv)
    first = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    if first is not None and args[first] in _COMMANDS and not args[:first]:
        return [_COMMANDS[args[first]]]
    return list(dict.fromkeys(_COMMANDS.values()))


def _parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mason",
        description="Build container images from Dockerfiles, with build cache in OCI registries.",
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"mason {mason.__version__}")
    # prog given: argparse would make a help formatter (and import shutil) to compute it
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", prog="mason")
    for module_name in _command_modules(argv):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # subcommand not built yet
            raise
        module.register(sub)
    return parser


def _debug() -> bool:
    return os.environ.get("MASON_DEBUG", "") not in ("", "0")


def _flush() -> None:
    """Flush what is pending (progress on stderr, results on stdout) before an error is printed."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken: nothing more to show
            stream.flush()


def _report(lines: Sequence[str], exc: BaseException | None = None) -> None:
    _flush()
    if exc is not None and _debug():
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    for line in lines:
        print(line, file=sys.stderr)
    sys.stderr.flush()


def _internal_error(exc: BaseException) -> int:
    # a library's message may carry a URL with user:password@; never print it
    text = _USERINFO.sub("://", str(exc)).strip().splitlines()
    summary = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
    lines = [f"mason: internal error: {summary}: {text[0] if text else '(no message)'}"]
    lines.extend(f"  {note}" for note in getattr(exc, "__notes__", ()))  # e.g. the build step
    if not _debug():
        lines.append(
            "hint: this is a bug in mason; rerun with MASON_DEBUG=1 to print the traceback, "
            "and include it in a bug report"
        )
    _report(lines, exc)
    return EXIT_INTERNAL_ERROR


def _broken_pipe() -> int:
    # the reader went away (`mason imagetools inspect ... | head`): stop quietly, and point
    # stdout at /dev/null so the interpreter's final flush does not fail again
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    _dccache.install()  # before the commands' modules load: their regexes come compiled
    command = "mason"
    try:
        parser = _parser(argv)
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 2
        command = args.command
        with _terminate_like_interrupt():
            return int(args.handler(args) or 0)
    except MasonError as exc:
        _report(error_lines(exc), exc)
        return exc.exit_code
    except Terminated as exc:
        _report([f"{exc.signal.name}: {command} cancelled and cleaned up, as after Ctrl-C"])
        return 128 + exc.signal
    except KeyboardInterrupt:
        _report(["interrupted"])
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _broken_pipe()
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            return _internal_error(exc)
        where = f": {exc.filename}" if exc.filename else ""
        _report(
            [
                f"ERROR: {_ENVIRONMENT_ERRNOS[exc.errno]}{where}",
                "hint: free space or point MASON_ROOT / the output at another file system",
            ],
            exc,
        )
        return 1
    except Exception as exc:  # a bug: one clear line instead of a traceback in the progress output
        return _internal_error(exc)


def run() -> None:
    """The ``mason`` command (and ``python -m mason.cli.main``): ``main``, then the end of the
    process without the interpreter's teardown of every loaded module (5-10 ms of a 110 ms
    warm build, issue 14). What that teardown does that matters is done first, in its
    order: the threads that are not daemons joined, the exit handlers run (temporary
    directories, the regex cache), stdout and stderr flushed. Files are written and closed
    by the code that opens them; an open sqlite connection needs no close (WAL)."""
    import atexit
    import threading

    from mason import collector

    collector.hold()
    code = main()
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone: nothing more to say
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
