"""Running a sandbox launcher process and streaming its merged output."""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import selectors
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mason.executor.types import ExecCancelledError, ExecTimeoutError, ExitStatus, OutputCallback
from mason.structs import Struct

__all__ = [
    "OutputTail",
    "StreamResult",
    "exit_status",
    "guarded_argv",
    "prestart_guard",
    "run_streaming",
]

GUARD = Path(__file__).with_name("_guard.py")

_POLL_SECONDS = 0.1
_DRAIN_SECONDS = 10.0


class OutputTail:
    """Keeps the last lines of a byte stream for error messages."""

    def __init__(self, max_lines: int = 20, max_bytes: int = 16384) -> None:
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > 2 * self.max_bytes:
            del self._buf[: len(self._buf) - self.max_bytes]

    def lines(self) -> tuple[str, ...]:
        text = bytes(self._buf[-self.max_bytes :]).decode("utf-8", errors="replace")
        return tuple(text.splitlines()[-self.max_lines :])


class StreamResult(Struct, frozen=True):
    returncode: int
    last_lines: tuple[str, ...]
    stopped: str | None  # "cancelled" or "timeout" when the run was cut short


def exit_status(
    result: StreamResult, what: str, timeout: float | None, error: str | None
) -> ExitStatus:
    """The ``ExitStatus`` of a finished launcher run; raises for a cancelled or timed-out one.

    ``error`` is the launcher's own failure (the command could not start). A launcher killed
    by a signal, or exiting 128+N without an error, reports signal N (a shell's convention).
    """
    if result.stopped == "cancelled":
        raise ExecCancelledError(f"run of {what!r} was cancelled", context=result.last_lines)
    if result.stopped == "timeout":
        raise ExecTimeoutError(
            f"run of {what!r} exceeded its timeout of {timeout}s", context=result.last_lines
        )
    code = result.returncode
    signal = None
    if code < 0:
        signal, code = -code, 128 - code
    elif 128 < code <= 128 + 64 and error is None:
        signal = code - 128
    return ExitStatus(code=code, signal=signal, last_lines=result.last_lines, error=error)


def run_streaming(
    argv: Sequence[str],
    on_output: OutputCallback,
    *,
    terminate: Callable[[subprocess.Popen[bytes]], None],
    cancel: threading.Event | None,
    timeout: float | None,
    pass_fds: Sequence[int] = (),
    on_orphan: Sequence[Sequence[str]] = (),
    python: str = sys.executable,
) -> StreamResult:
    """Start ``argv`` with stdin empty and stdout+stderr on one pipe, stream it.

    The launcher runs under the guard (``_guard.py``, see ``guarded_argv``):
    if this process dies, however, the guard kills the launcher and runs the
    ``on_orphan`` commands. ``proc`` given to ``terminate`` is the guard;
    killing it kills the launcher too. Raises ``FileNotFoundError`` when
    ``argv[0]`` cannot be found.

    On cancel, timeout, KeyboardInterrupt or an exception from ``on_output``,
    ``terminate(proc)`` kills the sandbox; the pipe is then drained (bounded)
    and the process reaped before this returns or re-raises.
    """
    tail = OutputTail()
    deadline = None if timeout is None else time.monotonic() + timeout
    _check_executable(argv[0])
    guard = _spares.take(python) if not pass_fds else None
    if guard is None or not guard.ask(on_orphan, argv):
        guard = _Guard.start(python, pass_fds, on_orphan, argv)
    try:
        return _stream(guard.proc, guard.read_fd, on_output, tail, terminate, cancel, deadline)
    finally:
        os.close(guard.life_w)


def prestart_guard(python: str = sys.executable, *, ahead: int = 1) -> None:
    """Have ``ahead`` guards for the next runs (without ``pass_fds``) started now: their
    interpreters' start-up (~10-20 ms) then overlaps the caller's work before the run (issue
    14), and with ``ahead=2`` a run that more runs follow overlaps the next one's. Each waits
    for its launcher's command line; unused, it exits when this process does (its exit hook
    stops it)."""
    _spares.prestart(python, ahead)


class _Guard:
    """A started guard: its process, the read end of the launcher's merged output, and the
    lifeline's write end (close-on-exec: it closes exactly when this process dies)."""

    def __init__(
        self, proc: subprocess.Popen[bytes], read_fd: int, life_w: int, request_w: int | None
    ) -> None:
        self.proc = proc
        self.read_fd = read_fd
        self.life_w = life_w
        self.request_w = request_w

    @staticmethod
    def start(
        python: str,
        pass_fds: Sequence[int] = (),
        on_orphan: Sequence[Sequence[str]] = (),
        argv: Sequence[str] | None = None,
    ) -> _Guard:
        """A guard running ``argv``; without ``argv``, one waiting for its request (``ask``)."""
        read_fd, write_fd = os.pipe()
        # Only the guard gets the read ends of the lifeline and of the request.
        life_r, life_w = os.pipe()
        request_r, request_w = os.pipe() if argv is None else (None, None)
        if argv is None:
            command = [python, "-I", "-S", str(GUARD), str(life_r), "--wait", str(request_r)]
        else:
            command = guarded_argv(python, life_r, on_orphan, argv)
        theirs = [fd for fd in (write_fd, life_r, request_r) if fd is not None]
        try:
            # A new session keeps a terminal's Ctrl-C from reaching the launcher
            # directly; we handle KeyboardInterrupt ourselves and clean up.
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                start_new_session=True,
                pass_fds=(*pass_fds, *theirs[1:]),
            )
        except BaseException:
            for fd in (read_fd, life_w, request_w, *theirs):
                if fd is not None:
                    os.close(fd)
            raise
        for fd in theirs:
            os.close(fd)
        return _Guard(proc, read_fd, life_w, request_w)

    def ask(self, on_orphan: Sequence[Sequence[str]], argv: Sequence[str]) -> bool:
        """Hand a waiting guard its launcher; False (and the guard reaped) when it is gone."""
        request_w, self.request_w = self.request_w, None
        assert request_w is not None
        cleanup = json.dumps([list(c) for c in on_orphan])
        request = b"".join(os.fsencode(item) + b"\0" for item in (cleanup, *argv))
        try:
            while request:
                request = request[os.write(request_w, request) :]
        except OSError:  # it died meanwhile (killed from outside): the caller starts another
            os.close(request_w)
            self.stop()
            return False
        os.close(request_w)
        return True

    def stop(self) -> None:
        """An unused guard: it exits without starting anything; reaped here."""
        for fd in (self.request_w, self.life_w, self.read_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.request_w = None
        self.proc.wait()


class _Spares:
    """The prestarted guards, taken in the order they were started. Each ``prestart`` is a
    run announcing itself: there are guards for every announced run not started yet (runs
    of parallel stages each get theirs), and ``ahead - 1`` more for the runs after it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spares: list[tuple[str, _Guard]] = []
        self._announced = 0
        self._exit_hook = False

    def prestart(self, python: str, ahead: int = 1) -> None:
        with self._lock:
            self._announced += 1
            wanted = self._announced + ahead - 1
            while sum(1 for p, _ in self._spares if p == python) < wanted:
                self._spares.append((python, _Guard.start(python)))
            if not self._exit_hook:
                atexit.register(self.drop)
                self._exit_hook = True

    def take(self, python: str) -> _Guard | None:
        with self._lock:
            self._announced = max(0, self._announced - 1)
            for i, (p, guard) in enumerate(self._spares):
                if p == python:
                    del self._spares[i]
                    return guard
            return None

    def drop(self) -> None:
        with self._lock:
            spares, self._spares = self._spares, []
            self._announced = 0
        for _, guard in spares:
            guard.stop()


_spares = _Spares()


def guarded_argv(
    python: str, lifeline_fd: int, on_orphan: Sequence[Sequence[str]], argv: Sequence[str]
) -> list[str]:
    """``argv`` run under the guard: it dies (and ``on_orphan`` runs) when ``lifeline_fd``'s
    write end closes, i.e. when the process holding it dies."""
    cleanup = json.dumps([list(c) for c in on_orphan])
    return [python, "-I", "-S", str(GUARD), str(lifeline_fd), cleanup, "--", *argv]


def _check_executable(program: str) -> None:
    # The guard would only report a missing launcher as exit 127; callers want an OSError.
    found = program if "/" in program else shutil.which(program)
    if found is None or not os.access(found, os.X_OK):
        raise FileNotFoundError(errno.ENOENT, "no such executable", program)


def _stream(
    proc: subprocess.Popen[bytes],
    read_fd: int,
    on_output: OutputCallback,
    tail: OutputTail,
    terminate: Callable[[subprocess.Popen[bytes]], None],
    cancel: threading.Event | None,
    deadline: float | None,
) -> StreamResult:
    stopped: str | None = None
    sel = selectors.DefaultSelector()
    sel.register(read_fd, selectors.EVENT_READ)
    try:
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    stopped = "cancelled"
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    stopped = "timeout"
                    break
                if not sel.select(_POLL_SECONDS):
                    continue
                data = os.read(read_fd, 65536)
                if not data:
                    break
                tail.feed(data)
                on_output(data)
        except BaseException:
            _stop(proc, terminate, read_fd, sel, tail)
            raise
        if stopped is not None:
            _stop(proc, terminate, read_fd, sel, tail)
        returncode = proc.wait()
    finally:
        sel.close()
        os.close(read_fd)
    return StreamResult(returncode=returncode, last_lines=tail.lines(), stopped=stopped)


def _stop(
    proc: subprocess.Popen[bytes],
    terminate: Callable[[subprocess.Popen[bytes]], None],
    read_fd: int,
    sel: selectors.BaseSelector,
    tail: OutputTail,
) -> None:
    try:
        terminate(proc)
    finally:
        # Drain what is left so the sandbox never blocks on a full pipe, but
        # don't wait forever for a process that escaped the kill.
        end = time.monotonic() + _DRAIN_SECONDS
        while time.monotonic() < end:
            if not sel.select(_POLL_SECONDS):
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(read_fd, 65536)
            except OSError:
                break
            if not data:
                break
            tail.feed(data)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
