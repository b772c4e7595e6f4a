"""Output streaming, tails and stopping, with plain local processes (no sandbox)."""

from __future__ import annotations

import subprocess
import threading

import pytest

from mason.executor.process import OutputTail, run_streaming


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()


def test_output_tail_keeps_last_lines() -> None:
    tail = OutputTail(max_lines=3, max_bytes=64)
    for i in range(100):
        tail.feed(f"line {i}\n".encode())
    tail.feed(b"partial \xff")
    assert tail.lines() == ("line 98", "line 99", "partial \ufffd")


def test_stdout_and_stderr_are_merged_and_streamed() -> None:
    chunks: list[bytes] = []
    result = run_streaming(
        ["sh", "-c", "echo out; echo err >&2; exit 4"],
        chunks.append,
        terminate=kill,
        cancel=None,
        timeout=None,
    )
    assert result.returncode == 4
    assert result.stopped is None
    assert b"".join(chunks).splitlines() == [b"out", b"err"]
    assert result.last_lines == ("out", "err")


def test_stdin_is_empty() -> None:
    chunks: list[bytes] = []
    result = run_streaming(["cat"], chunks.append, terminate=kill, cancel=None, timeout=None)
    assert result.returncode == 0
    assert chunks == []


def test_cancel_terminates() -> None:
    cancel = threading.Event()
    terminated: list[int] = []

    def terminate(proc: subprocess.Popen[bytes]) -> None:
        terminated.append(proc.pid)
        proc.kill()

    def on_output(data: bytes) -> None:
        if b"started" in data:
            cancel.set()

    result = run_streaming(
        ["sh", "-c", "echo started; exec sleep 600"],
        on_output,
        terminate=terminate,
        cancel=cancel,
        timeout=None,
    )
    assert result.stopped == "cancelled"
    assert len(terminated) == 1
    assert result.returncode != 0


def test_timeout_terminates() -> None:
    result = run_streaming(
        ["sleep", "600"], lambda _: None, terminate=kill, cancel=None, timeout=0.2
    )
    assert result.stopped == "timeout"


def test_exception_in_callback_terminates_and_propagates() -> None:
    procs: list[subprocess.Popen[bytes]] = []

    def terminate(proc: subprocess.Popen[bytes]) -> None:
        procs.append(proc)
        proc.kill()

    def on_output(data: bytes) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_streaming(
            ["sh", "-c", "echo hi; exec sleep 600"],
            on_output,
            terminate=terminate,
            cancel=None,
            timeout=None,
        )
    assert len(procs) == 1
    assert procs[0].returncode is not None
