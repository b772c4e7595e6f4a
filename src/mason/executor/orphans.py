"""Containers outliving the mason process that started them: ownership and reaping.

Every container mason starts has a bundle directory holding ``owner.lock``,
flock'ed (exclusively) by the mason process that runs it from before
``runc run`` until after ``runc delete``. The kernel drops the lock when that
process dies, so "the lock can be taken" means "the owner is gone", with no
pid reuse to worry about. The runc state dir is machine-wide (several mason
processes, on different roots, may share it), so the reaper decides per
container and never touches one whose owner still holds its lock.

Normally the guard (``_guard.py``) already removed an orphan's container
when its mason died; the reaper covers the guard having been killed too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "BUNDLE_PREFIX",
    "CONTAINER_PREFIX",
    "OWNER_LOCK",
    "hold_owner_lock",
    "owner_alive",
    "reap_orphans",
]

CONTAINER_PREFIX = "mason-"
BUNDLE_PREFIX = "mason-bundle-"
OWNER_LOCK = "owner.lock"
_RUNC_TIMEOUT = 30.0


@contextlib.contextmanager
def hold_owner_lock(bundle: Path) -> Iterator[None]:
    """Mark ``bundle``'s container as owned by this process for the block's duration."""
    fd = os.open(bundle / OWNER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())  # for people reading the bundle; the lock decides
        yield
    finally:
        os.close(fd)


def owner_alive(bundle: Path, container_id: str, proc: Path = Path("/proc")) -> bool:
    """Whether the mason process that started the container in ``bundle`` still runs.

    A bundle that no longer exists has no owner (a live owner removes its bundle only after
    deleting the container). A bundle without a lock file predates owner locks: its owner is
    alive while some process still has the container id on its command line (``runc run``).
    """
    try:
        fd = os.open(bundle / OWNER_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return bundle.is_dir() and _id_on_a_command_line(container_id, proc)
    except NotADirectoryError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)
    return False


def _holds_containers(state_dir: Path) -> bool:
    """runc keeps a directory per container in its state dir: none (the usual case) means
    nothing to reap, known without running ``runc list``."""
    try:
        with os.scandir(state_dir) as entries:
            return any(entry.is_dir(follow_symlinks=False) for entry in entries)
    except OSError:
        return False


def reap_orphans(*, runc: str = "runc", state_dir: Path = Path("/run/mason/runc")) -> list[str]:
    """Kill and delete the mason containers in ``state_dir`` whose owner is gone; their ids.

    Cheap when there is nothing to do (no container directory in the state dir: no runc call). Best effort: a container
    runc cannot list, kill or delete is left for the next start, never raised about, since a
    build must not fail over another build's leftovers.
    """
    if not _holds_containers(state_dir) or shutil.which(runc) is None:
        return []
    listing = _runc(runc, state_dir, "list", "--format", "json")
    if listing is None or listing.returncode != 0:
        return []
    try:
        entries = json.loads(listing.stdout or b"null") or []
    except ValueError:
        return []
    reaped = []
    for entry in entries:
        container_id = str(entry.get("id", ""))
        if not container_id.startswith(CONTAINER_PREFIX):
            continue
        bundle = Path(str(entry.get("bundle") or "/nonexistent"))
        if owner_alive(bundle, container_id):
            continue
        _runc(runc, state_dir, "kill", container_id, "KILL")
        # delete --force waits for the container's processes to be gone.
        deleted = _runc(runc, state_dir, "delete", "--force", container_id)
        if deleted is not None and deleted.returncode == 0:
            reaped.append(container_id)
            if bundle.name.startswith(BUNDLE_PREFIX):
                shutil.rmtree(bundle, ignore_errors=True)
    return reaped


def _runc(runc: str, state_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes] | None:
    try:
        return subprocess.run(
            [runc, "--root", str(state_dir), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_RUNC_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def _id_on_a_command_line(container_id: str, proc: Path) -> bool:
    needle = container_id.encode()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in args:
            return True
    return False
