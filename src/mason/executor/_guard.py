"""Launcher guard: ties a sandbox launcher's life to the mason process that started it.

Run by path (``python -I -S _guard.py LIFELINE_FD CLEANUP_JSON -- ARGV...``),
stdlib only, so it starts in milliseconds. Started ahead of its run
(``_guard.py LIFELINE_FD --wait REQUEST_FD``), it first reads CLEANUP_JSON and
ARGV from REQUEST_FD (each ended by a NUL, up to EOF), so that its start-up
overlaps mason's work before the run; no complete request (mason closed the
pipe without one, or died) makes it exit 0 without starting anything. mason holds the only write end of
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

import ctypes
import os
import select
import sys

__all__: list[str] = []

# Only what the common path needs is imported up front (json, subprocess and signal
# would triple the guard's start-up time, which every RUN pays).
PR_SET_PDEATHSIG = 1
SIGKILL = 9
_CLEANUP_TIMEOUT = 30.0


def _exec_child(libc: ctypes.CDLL, guard_pid: int, argv: list[str]) -> None:
    """In the forked child: die with the guard, then exec the launcher."""
    try:
        if libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0:
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
        import resource
        import signal

        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def _read_request(fd: int) -> list[str]:
    """``[CLEANUP_JSON, *ARGV]`` as mason wrote them to ``fd``, each ended by a NUL; [] when
    it wrote nothing or not all of it (it died while writing)."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    data = b"".join(chunks)
    if not data.endswith(b"\0"):
        return []
    return [os.fsdecode(item) for item in data[:-1].split(b"\0")]


def main() -> None:
    lifeline = int(sys.argv[1])
    if len(sys.argv) == 4 and sys.argv[2] == "--wait":
        libc = ctypes.CDLL(None, use_errno=True)  # before the wait: off the run's path
        request = _read_request(int(sys.argv[3]))
        if len(request) < 2:
            os._exit(0)  # not used (or mason is gone before asking): nothing was started
        cleanup, argv = request[0], request[1:]
    elif len(sys.argv) > 4 and sys.argv[3] == "--":
        libc = ctypes.CDLL(None, use_errno=True)
        cleanup, argv = sys.argv[2], sys.argv[4:]
    else:
        raise SystemExit("usage: _guard.py LIFELINE_FD (CLEANUP_JSON -- ARGV... | --wait FD)")
    os.set_inheritable(lifeline, False)
    guard_pid = os.getpid()
    child = os.fork()
    if child == 0:
        _exec_child(libc, guard_pid, argv)
    try:
        watch, poll = [os.pidfd_open(child), lifeline], None
    except OSError:  # kernel before 5.3: poll for the child's exit instead
        watch, poll = [lifeline], 0.1
    while True:
        ready, _, _ = select.select(watch, [], [], poll)
        pid, status = os.waitpid(
            child, 0 if len(ready) == 1 and ready[0] != lifeline else os.WNOHANG
        )
        if pid == child:
            _exit_like(status)
        if lifeline in ready and not os.read(lifeline, 1):
            break
    # mason is gone: nobody will read the output or clean up after us.
    os.kill(child, SIGKILL)
    os.waitpid(child, 0)
    _cleanup(cleanup)
    os._exit(137)


def _cleanup(commands: str) -> None:
    import contextlib
    import json
    import subprocess

    cleanup: list[list[str]] = json.loads(commands)
    for command in cleanup:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=_CLEANUP_TIMEOUT,
                check=False,
            )


if __name__ == "__main__":
    main()
