"""The launcher guard and the orphan reaper, with plain processes and a fake runc."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mason.executor.orphans import OWNER_LOCK, hold_owner_lock, owner_alive, reap_orphans
from mason.executor.process import guarded_argv, run_streaming


def _guarded(argv: list[str], cleanup: list[list[str]]) -> tuple[subprocess.Popen[bytes], int]:
    life_r, life_w = os.pipe()
    proc = subprocess.Popen(
        guarded_argv(sys.executable, life_r, cleanup, argv),
        pass_fds=(life_r,),
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    os.close(life_r)
    return proc, life_w


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_guard_passes_the_exit_code_and_the_signal_through() -> None:
    proc, life_w = _guarded(["sh", "-c", "echo hi; exit 3"], [])
    out, _ = proc.communicate(timeout=10)
    os.close(life_w)
    assert (proc.returncode, out) == (3, b"hi\n")
    proc, life_w = _guarded(["sh", "-c", "kill -TERM $$"], [])
    proc.wait(10)
    os.close(life_w)
    assert proc.returncode == -15


def test_guard_kills_the_launcher_and_runs_cleanup_when_the_lifeline_breaks(tmp_path: Path) -> None:
    marker = tmp_path / "cleaned"
    proc, life_w = _guarded(["sh", "-c", "echo $$; exec sleep 600"], [["touch", str(marker)]])
    assert proc.stdout is not None
    launcher = int(proc.stdout.readline())
    os.close(life_w)  # what the kernel does when mason dies
    assert proc.wait(10) == 137
    assert not _alive(launcher)
    assert marker.exists()


def test_launcher_dies_with_a_killed_guard() -> None:
    proc, life_w = _guarded(["sh", "-c", "echo $$; exec sleep 600"], [])
    assert proc.stdout is not None
    launcher = int(proc.stdout.readline())
    proc.kill()
    proc.wait(10)
    end = time.monotonic() + 10
    while _alive(launcher) and time.monotonic() < end:
        time.sleep(0.02)
    os.close(life_w)
    assert not _alive(launcher)


def test_run_streaming_reports_a_missing_launcher_as_oserror() -> None:
    with pytest.raises(FileNotFoundError):
        run_streaming(
            ["/nonexistent/launcher"],
            lambda _: None,
            terminate=lambda p: p.kill(),
            cancel=None,
            timeout=None,
        )


def test_owner_lock_marks_the_owner_alive_until_released(tmp_path: Path) -> None:
    bundle = tmp_path / "mason-bundle-x"
    bundle.mkdir()
    with hold_owner_lock(bundle):
        assert owner_alive(bundle, "mason-x")
    assert (bundle / OWNER_LOCK).exists()
    assert not owner_alive(bundle, "mason-x")
    assert not owner_alive(tmp_path / "gone", "mason-x")


def test_bundle_without_lock_is_alive_while_its_id_is_on_a_command_line(tmp_path: Path) -> None:
    bundle = tmp_path / "mason-bundle-old"
    bundle.mkdir()
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "cmdline").write_bytes(b"runc\0--root\0/run/mason/runc\0run\0mason-old\0")
    (proc / "self").mkdir()
    assert owner_alive(bundle, "mason-old", proc)
    assert not owner_alive(bundle, "mason-older", proc)


FAKE_RUNC = """#!/bin/sh
echo "$@" >> {log}
case " $* " in
  *" list "*) cat {listing} ;;
esac
"""


def test_reap_orphans_removes_only_containers_without_a_live_owner(tmp_path: Path) -> None:
    live, dead = tmp_path / "mason-bundle-live", tmp_path / "mason-bundle-dead"
    live.mkdir()
    dead.mkdir()
    (dead / OWNER_LOCK).touch()
    listing = tmp_path / "list.json"
    listing.write_text(
        json.dumps(
            [
                {"id": "mason-live", "bundle": str(live), "status": "running"},
                {"id": "mason-dead", "bundle": str(dead), "status": "running"},
                {"id": "mason-nobundle", "bundle": str(tmp_path / "gone"), "status": "stopped"},
                {"id": "someone-else", "bundle": str(tmp_path / "gone"), "status": "running"},
            ]
        )
    )
    log = tmp_path / "calls"
    runc = tmp_path / "runc"
    runc.write_text(FAKE_RUNC.format(log=log, listing=listing))
    runc.chmod(runc.stat().st_mode | stat.S_IXUSR)
    state = tmp_path / "state"
    state.mkdir()
    assert reap_orphans(runc=str(runc), state_dir=state) == []  # no container dir: runc not run
    assert not log.exists()
    for name in ("mason-live", "mason-dead", "mason-nobundle", "someone-else"):
        (state / name).mkdir()  # runc's state dir holds a directory per container
    with hold_owner_lock(live):
        reaped = reap_orphans(runc=str(runc), state_dir=state)
    assert reaped == ["mason-dead", "mason-nobundle"]
    calls = log.read_text().splitlines()
    assert f"--root {state} kill mason-dead KILL" in calls
    assert f"--root {state} delete --force mason-nobundle" in calls
    assert not any("mason-live" in c or "someone-else" in c for c in calls)
    assert live.exists() and not dead.exists()


def test_reap_orphans_without_a_state_dir_does_nothing(tmp_path: Path) -> None:
    assert reap_orphans(runc="/nonexistent/runc", state_dir=tmp_path / "none") == []


# -- a guard started ahead of its run (prestart_guard) -------------------------------------


def _read_line(fd: int) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 1)
        assert chunk, "the launcher printed nothing"
        line += chunk
    return line


def test_a_prestarted_guard_runs_the_next_launcher() -> None:
    from mason.executor import process

    process.prestart_guard()
    chunks: list[bytes] = []
    try:
        result = run_streaming(
            ["sh", "-c", "echo hi; exit 3"],
            chunks.append,
            terminate=lambda p: p.kill(),
            cancel=None,
            timeout=10,
        )
        assert process._spares.take(sys.executable) is None  # the run took it
    finally:
        process._spares.drop()  # a spare no run took: stopped, as at exit
    assert (result.returncode, b"".join(chunks)) == (3, b"hi\n")


def _echo(word: str) -> bytes:
    chunks: list[bytes] = []
    result = run_streaming(
        ["sh", "-c", f"echo {word}"],
        chunks.append,
        terminate=lambda p: p.kill(),
        cancel=None,
        timeout=10,
    )
    assert result.returncode == 0
    return b"".join(chunks)


def test_a_run_announced_two_ahead_has_the_next_runs_guard_started() -> None:
    from mason.executor import process

    try:
        process.prestart_guard(ahead=2)  # a run that another run follows
        assert len(process._spares._spares) == 2
        first = _echo("one")
        process.prestart_guard()  # the next run: its guard is there already
        assert len(process._spares._spares) == 1
        second = _echo("two")
        assert process._spares.take(sys.executable) is None  # both runs took one
    finally:
        process._spares.drop()
    assert (first, second) == (b"one\n", b"two\n")


def test_runs_announced_side_by_side_each_get_a_guard() -> None:
    from mason.executor import process

    try:
        process.prestart_guard()
        process.prestart_guard()  # another stage's run, at the same time
        assert len(process._spares._spares) == 2
        assert (_echo("a"), _echo("b")) == (b"a\n", b"b\n")
        assert process._spares._spares == []
    finally:
        process._spares.drop()


def test_a_waiting_guard_kills_its_launcher_and_cleans_up_when_the_lifeline_breaks(
    tmp_path: Path,
) -> None:
    from mason.executor.process import _Guard

    marker = tmp_path / "cleaned"
    guard = _Guard.start(sys.executable)
    assert guard.ask([["touch", str(marker)]], ["sh", "-c", "echo $$; exec sleep 600"])
    launcher = int(_read_line(guard.read_fd))
    os.close(guard.life_w)  # what the kernel does when mason dies
    assert guard.proc.wait(10) == 137
    os.close(guard.read_fd)
    assert not _alive(launcher)
    assert marker.exists()


def test_an_unused_or_half_asked_guard_exits_without_starting_anything(tmp_path: Path) -> None:
    from mason.executor.process import _Guard

    guard = _Guard.start(sys.executable)
    guard.stop()  # mason exits (or dies) before a run took it
    assert guard.proc.returncode == 0

    marker = tmp_path / "started"
    guard = _Guard.start(sys.executable)
    assert guard.request_w is not None
    os.write(guard.request_w, b"[]\0touch\0" + os.fsencode(marker))  # died while writing
    guard.stop()
    assert guard.proc.returncode == 0 and not marker.exists()
