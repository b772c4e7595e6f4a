"""Shared by tests: moved from test_build_kill.py so that test modules never import each other."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests.support.cli import mason_build, mason_cmd, mason_env

RUNC_STATE = Path("/run/mason/runc")


_STARTED = re.compile(r"^#\d+ [\d.]+ started$")  # the RUN's own output, not the step's title


_GONE_WAIT = 20.0


def _start(ctx: Path, root: Path, nap: str, *extra: str) -> subprocess.Popen[str]:
    """A build in its own session, returned once its RUN printed "started"."""
    proc = subprocess.Popen(
        [*mason_cmd(), "build", "--progress=plain", "--build-arg", f"NAP={nap}", *extra, str(ctx)],
        env=mason_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        seen.append(line)
        if _STARTED.match(line.strip()) or time.monotonic() > deadline:
            break
    if not seen or not _STARTED.match(seen[-1].strip()):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        pytest.fail("the build never reached its RUN:\n" + "".join(seen))
    return proc


def _kill_group(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _finish(ctx: Path, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    out = root.parent / "out"
    return mason_build(
        root, "--build-arg", "NAP=0", *extra, "-o", f"type=local,dest={out}", str(ctx), timeout=180
    )


def _procs(token: str) -> list[str]:
    """Command lines of the live processes that mention ``token`` (the sandboxed sh and sleep)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and any(token.encode() in a for a in args):
            found.append(" ".join(a.decode(errors="replace") for a in args))
    return found


def _containers(root: Path) -> list[dict[str, str]]:
    """runc's containers whose bundle lives under ``root`` (mason puts bundles in $MASON_ROOT/tmp)."""
    if not RUNC_STATE.is_dir():
        return []
    listing = subprocess.run(
        ["runc", "--root", str(RUNC_STATE), "list", "--format", "json"],
        capture_output=True,
        check=True,
    )
    return [
        e
        for e in json.loads(listing.stdout or b"null") or []
        if str(e.get("bundle", "")).startswith(str(root))
    ]


def _wait_gone(token: str, root: Path) -> None:
    end = time.monotonic() + _GONE_WAIT
    while (_procs(token) or _containers(root)) and time.monotonic() < end:
        time.sleep(0.1)
    assert _procs(token) == []
    assert _containers(root) == []
