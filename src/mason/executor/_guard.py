"""Launcher guard: ties a sandbox launcher's life to the mason process that started it.

Run by path (``python -I -S _guard.py LIFELINE_FD CLEANUP_JSON -- ARGV...``),
stdlib only, so it starts in milliseconds. mason holds the only write end of
the lifeline pipe; the kernel closes it whenever mason dies, however it dies
(SIGKILL included, and whichever of mason's threads started the run), and the
guard then sees EOF. The guard:

- starts ARGV (runc or unshare) with PR_SET_PDEATHSIG(SIGKILL), so the
  launcher dies with the guard (the guard is single threaded, so "parent
  thread exits" and "parent exits" are the same event here);
- when the lifeline breaks: SIGKILLs the launcher, waits for it, then runs the
  CLEANUP_JSON commands (e.g. ``runc kill ID KILL``, ``runc delete --force
  ID``: a container's init survives its ``runc run``), and exits 137;
- otherwise exits as the launcher did (same code, or the same signal).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import select
import signal
import subprocess
import sys

__all__: list[str] = []

PR_SET_PDEATHSIG = 1
_CLEANUP_TIMEOUT = 30.0


def _exec_child(guard_pid: int, argv: list[str]) -> None:
    """In the forked child: die with the guard, then exec the launcher."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        # The guard may have died before prctl took effect: then nobody would signal us.
        if os.getppid() != guard_pid:
            os._exit(137)
        os.execvp(argv[0], argv)
    except OSError as exc:
        os.write(2, f"mason guard: cannot start {argv[0]}: {exc}\n".encode())
        os._exit(127)


def _exit_like(status: int) -> None:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def main() -> None:
    lifeline = int(sys.argv[1])
    cleanup: list[list[str]] = json.loads(sys.argv[2])
    if sys.argv[3] != "--":
        raise SystemExit("usage: _guard.py LIFELINE_FD CLEANUP_JSON -- ARGV...")
    argv = sys.argv[4:]
    os.set_inheritable(lifeline, False)
    guard_pid = os.getpid()
    child = os.fork()
    if child == 0:
        _exec_child(guard_pid, argv)
    pidfd = os.pidfd_open(child)
    while True:
        ready, _, _ = select.select([pidfd, lifeline], [], [])
        if pidfd in ready:
            _, status = os.waitpid(child, 0)
            _exit_like(status)
        if lifeline in ready and not os.read(lifeline, 1):
            break
    # mason is gone: nobody will read the output or clean up after us.
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    for command in cleanup:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=_CLEANUP_TIMEOUT, check=False)
    os._exit(137)


if __name__ == "__main__":
    main()
