"""Picking the best sandbox this machine supports."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from mason.executor.chroot import ChrootExecutor
from mason.executor.runc import RuncExecutor
from mason.executor.types import ExecSpec, Executor, ExecutorError

__all__ = ["choose_executor", "probe_runc"]

_PROBE_BINARY = "/.mason-probe"


def probe_runc(executor: RuncExecutor) -> str | None:
    """None when runc can create a container here, else why not.

    The probe runs a container on an empty rootfs whose command does not
    exist: runc sets up namespaces, cgroups and mounts and fails only at the
    final exec. That failure means everything before it works.
    """
    if executor.work_dir is not None:
        executor.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mason-probe-", dir=executor.work_dir) as tmp:
        rootfs = Path(tmp) / "rootfs"
        rootfs.mkdir()
        try:
            status = executor.run(ExecSpec(rootfs=rootfs, args=(_PROBE_BINARY,)), lambda _: None)
        except ExecutorError as exc:
            return str(exc)
    if (
        status.error is not None
        and _PROBE_BINARY in status.error
        and "no such file" in status.error
    ):
        return None
    return status.error or "; ".join(status.last_lines) or status.describe()


def choose_executor(
    *,
    state_dir: Path = Path("/run/mason/runc"),
    work_dir: Path | None = None,
    runc: str = "runc",
    host_resolv_conf: Path = Path("/etc/resolv.conf"),
) -> Executor:
    """RuncExecutor when ``runc`` is on PATH and can run a container, else ChrootExecutor."""
    runc_path = shutil.which(runc)
    if runc_path is not None:
        executor = RuncExecutor(
            runc=runc_path,
            state_dir=state_dir,
            work_dir=work_dir,
            host_resolv_conf=host_resolv_conf,
        )
        if probe_runc(executor) is None:
            return executor
    if shutil.which("unshare") is None:
        raise ExecutorError(
            "no sandbox available: runc does not work here and unshare is not installed",
            hint="install runc (apt-get install runc) or util-linux",
        )
    return ChrootExecutor(work_dir=work_dir, host_resolv_conf=host_resolv_conf)
