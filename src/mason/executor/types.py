"""The data an executor consumes and returns: ExecSpec, mounts, ExitStatus, errors."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

from mason.errors import DiagnosticError
from mason.structs import Struct, field, force_setattr

__all__ = [
    "BindMount",
    "CacheMount",
    "ExecCancelledError",
    "ExecSpec",
    "ExecTimeoutError",
    "Executor",
    "ExecutorError",
    "ExitStatus",
    "Mount",
    "NetworkMode",
    "OutputCallback",
    "SecretMount",
    "TmpfsMount",
    "Ulimit",
    "UserResolutionError",
]

NetworkMode = Literal["default", "host", "none"]
OutputCallback = Callable[[bytes], None]


class ExecutorError(DiagnosticError):
    """The sandbox could not be set up, started or cleaned up."""

    reference = "executor-error"


class UserResolutionError(ExecutorError):
    """A USER name or group name is not in the rootfs' /etc/passwd or /etc/group."""

    reference = "unknown-user"


class ExecCancelledError(ExecutorError):
    """The run was cancelled; the sandbox was killed and removed."""

    reference = "exec-cancelled"


class ExecTimeoutError(ExecutorError):
    """The run exceeded its timeout; the sandbox was killed and removed."""

    reference = "exec-timeout"


class BindMount(Struct, frozen=True):
    """Bind ``source`` (a host path) at ``target`` inside the sandbox."""

    source: Path
    target: str
    readonly: bool = False


class TmpfsMount(Struct, frozen=True):
    """A fresh tmpfs at ``target``; ``size`` in bytes (None: the kernel default)."""

    target: str
    size: int | None = None


class CacheMount(Struct, frozen=True):
    """A persistent host directory (``RUN --mount=type=cache``), bound read-write.

    The builder owns the directory's life cycle and its ``sharing`` locks;
    the executor only binds it.
    """

    source: Path
    target: str
    readonly: bool = False


class SecretMount(Struct, frozen=True):
    """A secret file bound read-only at ``target``.

    ``source`` must live outside the rootfs; nothing of it (not even the empty
    mountpoint file) is left in the rootfs after the run.
    """

    source: Path
    target: str


Mount = BindMount | TmpfsMount | CacheMount | SecretMount


class ExecSpec(Struct, frozen=True):
    """One process to run in a sandbox on an already prepared, writable rootfs.

    ``user`` is a Dockerfile USER value ("", "name", "uid", "name:group",
    "uid:gid"), resolved against the rootfs' /etc/passwd and /etc/group.
    ``cwd`` is created (owned by the user) when missing. ``env`` entries are
    "K=V"; HOME is added from /etc/passwd when absent. stdin is always empty.
    """

    rootfs: Path
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: str = ""
    hostname: str = "mason"
    network: NetworkMode = "default"
    mounts: tuple[Mount, ...] = ()
    #: ``--add-host``: (name, address) lines added to /etc/hosts
    extra_hosts: tuple[tuple[str, str], ...] = ()
    #: ``--shm-size`` in bytes (None: 64 MiB, as Docker)
    shm_size: int | None = None
    #: ``--ulimit``: limits beyond (or replacing) the default RLIMIT_NOFILE
    ulimits: tuple[Ulimit, ...] = ()
    #: ``RUN --security=insecure`` (BuildKit's WithInsecureSpec): every capability, no masked or
    #: read-only paths, writable /sys and cgroupfs, every device allowed by the device cgroup
    insecure: bool = False

    def __post_init__(self) -> None:
        # Accept lists from callers but store tuples so the spec stays hashable.
        force_setattr(self, "args", tuple(self.args))
        force_setattr(self, "env", tuple(self.env))
        force_setattr(self, "mounts", tuple(self.mounts))
        if not self.args:
            raise ExecutorError("an exec spec needs at least one argument")
        if self.network not in ("default", "host", "none"):
            raise ExecutorError(f"unknown network mode {self.network!r}")
        if not self.cwd.startswith("/"):
            raise ExecutorError(f"working directory must be absolute: {self.cwd!r}")
        for entry in self.env:
            if "=" not in entry:
                raise ExecutorError(f"environment entry without '=': {entry!r}")
        for mount in self.mounts:
            if not mount.target.startswith("/"):
                raise ExecutorError(f"mount target must be absolute: {mount.target!r}")


class Ulimit(Struct, frozen=True):
    """One resource limit of the process (``--ulimit nofile=1024:2048``): ``name`` as setrlimit
    knows it without ``RLIMIT_`` (lower case), -1 for unlimited."""

    name: str
    soft: int
    hard: int


class ExitStatus(Struct, frozen=True):
    """How a sandboxed process ended.

    ``code`` is shell style: 128+N when the process died of signal N, and then
    ``signal`` is N. ``error`` is the runtime's own message when the process
    could not be started at all. ``last_lines`` are the final output lines,
    for error messages.
    """

    code: int
    signal: int | None = None
    last_lines: tuple[str, ...] = field(default=())
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.code == 0 and self.error is None

    def describe(self) -> str:
        if self.error is not None:
            return f"could not start: {self.error}"
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        return f"exit code {self.code}"


class Executor(Protocol):
    """Runs one ExecSpec to completion, streaming merged stdout/stderr."""

    def run(
        self,
        spec: ExecSpec,
        on_output: OutputCallback,
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> ExitStatus: ...
