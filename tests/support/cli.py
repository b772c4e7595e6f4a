"""Run the ``mason`` command line as a subprocess, as a user would, on a given ``$MASON_ROOT``.

One place for what every integration test did with its own copy: the installed ``mason``
entry point beside this interpreter (``python -m mason.cli.main`` where there is none), the
state root in the environment, output captured, never raising for a failed command (the
tests assert the exit status and the messages).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, overload

__all__ = ["expect_ok", "mason", "mason_build", "mason_cmd", "mason_env"]

#: a whole build with a fresh state root and a base image pull fits well inside this
DEFAULT_TIMEOUT = 300


def mason_cmd() -> list[str]:
    """The argv prefix that runs mason from this interpreter's environment."""
    entry = Path(sys.executable).with_name("mason")
    return [str(entry)] if entry.exists() else [sys.executable, "-m", "mason.cli.main"]


def mason_env(root: Path | str, env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment with ``MASON_ROOT=root`` and ``env`` over it (``None`` unsets)."""
    out = {**os.environ, "MASON_ROOT": str(root)}
    for key, value in (env or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@overload
def mason(
    root: Path | str,
    *args: str,
    env: Mapping[str, str | None] | None = ...,
    timeout: float = ...,
    input: str | None = ...,
    cwd: Path | str | None = ...,
    text: Literal[True] = ...,
) -> subprocess.CompletedProcess[str]: ...


@overload
def mason(
    root: Path | str,
    *args: str,
    env: Mapping[str, str | None] | None = ...,
    timeout: float = ...,
    input: str | None = ...,
    cwd: Path | str | None = ...,
    text: Literal[False],
) -> subprocess.CompletedProcess[bytes]: ...


def mason(
    root: Path | str,
    *args: str,
    env: Mapping[str, str | None] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    input: str | None = None,
    cwd: Path | str | None = None,
    text: bool = True,
) -> subprocess.CompletedProcess[str] | subprocess.CompletedProcess[bytes]:
    """``mason ARGS...`` on state root ``root``; stdout and stderr captured (``str``, or ``bytes``
    with ``text=False``), the exit status left for the caller to check."""
    return subprocess.run(
        [*mason_cmd(), *args],
        capture_output=True,
        text=text,
        env=mason_env(root, env),
        input=input if text or input is None else input.encode(),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


@overload
def mason_build(
    root: Path | str,
    *args: str,
    env: Mapping[str, str | None] | None = ...,
    timeout: float = ...,
    input: str | None = ...,
    cwd: Path | str | None = ...,
    text: Literal[True] = ...,
) -> subprocess.CompletedProcess[str]: ...


@overload
def mason_build(
    root: Path | str,
    *args: str,
    env: Mapping[str, str | None] | None = ...,
    timeout: float = ...,
    input: str | None = ...,
    cwd: Path | str | None = ...,
    text: Literal[False],
) -> subprocess.CompletedProcess[bytes]: ...


def mason_build(
    root: Path | str,
    *args: str,
    env: Mapping[str, str | None] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    input: str | None = None,
    cwd: Path | str | None = None,
    text: bool = True,
) -> subprocess.CompletedProcess[str] | subprocess.CompletedProcess[bytes]:
    """``mason build --progress=plain ARGS...`` (plain progress: the lines tests read)."""
    if text:
        return mason(
            root, "build", "--progress=plain", *args, env=env, timeout=timeout, input=input, cwd=cwd
        )
    return mason(
        root,
        "build",
        "--progress=plain",
        *args,
        env=env,
        timeout=timeout,
        input=input,
        cwd=cwd,
        text=False,
    )


def expect_ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """``proc``, asserting it exited 0 (its output is the failure message)."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc
