"""A SIGKILLed `mason build` takes its sandbox with it (real runc / unshare, real builds).

The RUN under test sleeps for a number of seconds unique to the test (``sleep <token>``), so
its sandboxed processes can be found by command line; the build runs in its own session and
the whole process group is SIGKILLed once the RUN's output appears, as a user's `kill -9 -PGID`.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.kill_helpers import (
    _GONE_WAIT,
    RUNC_STATE,
    _containers,
    _finish,
    _kill_group,
    _procs,
    _start,
    _wait_gone,
)
from tests.support.cli import mason_build

from mason.executor import reap_orphans

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="builds need root (overlayfs, runc, unshare)"
)


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (bash scripts/setup.sh installs it)")


def _token() -> str:
    # Seconds to sleep, unique per test run: finds exactly this build's sandboxed processes.
    return str(400000 + (os.getpid() * 7919 + time.monotonic_ns()) % 500000)


def _dockerfile(ctx: Path, image: str) -> None:
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(
        f"FROM {image}\nARG NAP\nRUN echo started && sleep $NAP && echo done > /done\n"
    )


def _ppids() -> dict[int, int]:
    """pid -> parent pid of every process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, IndexError, ValueError):
                continue
    return found


def _guard_of(build_pid: int) -> int:
    """The launcher guard of the build's running step: a child of the build's process (in its
    own session) with a launcher of its own (a guard started for a later RUN waits childless)."""
    ppids = _ppids()
    parents = set(ppids.values())
    for pid, ppid in ppids.items():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if ppid == build_pid and b"_guard.py" in cmdline and pid in parents:
            return pid
    raise AssertionError(f"no launcher guard with a launcher under pid {build_pid}")


@pytest.fixture
def token() -> Iterator[str]:
    tok = _token()
    yield tok
    # Never leave a sandbox behind, even when an assertion failed.
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if tok.encode() in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                pass


def test_runc_sandbox_dies_with_the_build_and_a_live_build_is_never_reaped(
    busybox_image: str, tmp_path: Path, token: str
) -> None:
    """SIGKILL of a build's process group removes its runc container and processes; a build that
    starts meanwhile (another root) leaves the live build's container alone; the rebuild runs the
    killed step to completion."""
    _need("runc")
    ctx, root = tmp_path / "ctx", tmp_path / "a" / "root"
    _dockerfile(ctx, busybox_image)
    live = _start(ctx, root, token, "--runtime=runc")
    try:
        assert len(_containers(root)) == 1 and _procs(token)
        other_ctx, other_root = tmp_path / "other-ctx", tmp_path / "b" / "root"
        other_ctx.mkdir()
        (other_ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo other\n")
        other = mason_build(other_root, "--runtime=runc", str(other_ctx), timeout=180)
        assert other.returncode == 0, other.stderr
        reap_orphans(state_dir=RUNC_STATE)  # as any other mason process starting now does
        [container] = _containers(root)
        assert container["status"] == "running"
        assert _procs(token)
        assert live.poll() is None
    finally:
        _kill_group(live)
    _wait_gone(token, root)
    done = _finish(ctx, root, "--runtime=runc")
    assert done.returncode == 0, done.stderr
    assert (root.parent / "out" / "done").read_text() == "done\n"


def test_runc_orphan_whose_guard_died_too_is_reaped_by_the_next_build(
    busybox_image: str, tmp_path: Path, token: str
) -> None:
    """With the guard SIGKILLed as well, the container outlives runc; the next mason start (a
    build that runs no RUN at all) removes it."""
    _need("runc")
    ctx, root = tmp_path / "ctx", tmp_path / "root"
    _dockerfile(ctx, busybox_image)
    live = _start(ctx, root, token, "--runtime=runc")
    os.kill(_guard_of(live.pid), signal.SIGKILL)
    _kill_group(live)
    # The container's init survives runc: exactly the orphan the reaper exists for.
    end = time.monotonic() + _GONE_WAIT
    while any(c["status"] != "running" for c in _containers(root)) and time.monotonic() < end:
        time.sleep(0.1)
    assert [c["status"] for c in _containers(root)] == ["running"]
    assert _procs(token)
    no_run = tmp_path / "no-run"
    no_run.mkdir()
    (no_run / "Dockerfile").write_text(f"FROM {busybox_image}\n")
    nothing = mason_build(root, str(no_run), timeout=180)
    assert nothing.returncode == 0, nothing.stderr
    _wait_gone(token, root)
    done = _finish(ctx, root, "--runtime=runc")
    assert done.returncode == 0, done.stderr
    assert (root.parent / "out" / "done").read_text() == "done\n"


def test_chroot_sandbox_dies_with_the_build(busybox_image: str, tmp_path: Path, token: str) -> None:
    """--runtime=chroot: SIGKILL of the build's process group kills unshare and the whole pid
    namespace (the sandboxed shell and sleep); the rebuild runs the step to completion."""
    _need("unshare")
    ctx, root = tmp_path / "ctx", tmp_path / "root"
    _dockerfile(ctx, busybox_image)
    live = _start(ctx, root, token, "--runtime=chroot")
    assert _procs(token)
    _kill_group(live)
    _wait_gone(token, root)
    done = _finish(ctx, root, "--runtime=chroot")
    assert done.returncode == 0, done.stderr
    assert (root.parent / "out" / "done").read_text() == "done\n"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_cancel_clean_up_say_so_and_exit_128_plus_n(
    busybox_image: str, tmp_path: Path, token: str, sig: signal.Signals
) -> None:
    """SIGTERM (a CI cancel, `timeout`) and SIGHUP (a closed terminal) are handled as Ctrl-C is:
    the build is cancelled, its sandbox, overlay mount, active snapshot and temporary files go,
    it says so, and it exits 128+N (143 for SIGTERM). Before, it died at once, silently, and left
    all of them to the next run (issue 13, defect 2)."""
    _need("runc")
    ctx, root = tmp_path / "ctx", tmp_path / "root"
    _dockerfile(ctx, busybox_image)
    live = _start(ctx, root, token, "--runtime=runc")
    try:
        os.kill(live.pid, sig)  # the build process alone, as `timeout` and CI runners send it
        rest, _ = live.communicate(timeout=60)
    finally:
        if live.poll() is None:
            _kill_group(live)
    assert live.returncode == 128 + sig, rest
    assert f"{sig.name}: build cancelled" in rest, rest
    _wait_gone(token, root)
    assert f" {root}" not in Path("/proc/self/mountinfo").read_text()
    assert list((root / "tmp").iterdir()) == []
    active = root / "snapshots" / ".active"
    assert not active.exists() or list(active.iterdir()) == []
