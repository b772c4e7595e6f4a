"""Running a sandbox launcher process and streaming its merged output."""

from __future__ import annotations

import os
import selectors
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mason.executor.types import ExecCancelledError, ExecTimeoutError, ExitStatus, OutputCallback

__all__ = ["OutputTail", "StreamResult", "exit_status", "run_streaming"]

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


@dataclass(frozen=True)
class StreamResult:
    returncode: int
    last_lines: tuple[str, ...]
    stopped: str | None  # "cancelled" or "timeout" when the run was cut short


def exit_status(result: StreamResult, what: str, timeout: float | None, error: str | None) -> ExitStatus:
    """The ``ExitStatus`` of a finished launcher run; raises for a cancelled or timed-out one.

    ``error`` is the launcher's own failure (the command could not start). A launcher killed
    by a signal, or exiting 128+N without an error, reports signal N (a shell's convention).
    """
    if result.stopped == "cancelled":
        raise ExecCancelledError(f"run of {what!r} was cancelled", context=result.last_lines)
    if result.stopped == "timeout":
        raise ExecTimeoutError(f"run of {what!r} exceeded its timeout of {timeout}s", context=result.last_lines)
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
) -> StreamResult:
    """Start ``argv`` with stdin empty and stdout+stderr on one pipe, stream it.

    On cancel, timeout, KeyboardInterrupt or an exception from ``on_output``,
    ``terminate(proc)`` kills the sandbox; the pipe is then drained (bounded)
    and the process reaped before this returns or re-raises.
    """
    tail = OutputTail()
    deadline = None if timeout is None else time.monotonic() + timeout
    read_fd, write_fd = os.pipe()
    try:
        # A new session keeps a terminal's Ctrl-C from reaching the launcher
        # directly; we handle KeyboardInterrupt ourselves and clean up.
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise
    os.close(write_fd)
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
