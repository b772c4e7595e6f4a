"""ChrootExecutor: the fallback sandbox for machines without runc.

`unshare` (util-linux) makes mount, pid, uts and ipc namespaces (and a
network namespace for network "none"), then a small stdlib-only init
(_chroot_init.py) sets up the mounts, chroots and execs. Weaker than runc:
no cgroups and no seccomp (so every mount is nodev), the same ExecSpec semantics.
The init pivots into the rootfs and detaches the host's tree (a chroot alone can
be left by a process with CAP_SYS_CHROOT) and applies Docker's masked and
read-only /proc paths.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from mason.executor.prepare import PreparedRun, prepare_run
from mason.executor.process import exit_status, run_streaming
from mason.executor.rootfs import secure_join
from mason.executor.runc import nofile_limit
from mason.executor.runtime_spec import (
    DEFAULT_CAPABILITIES,
    MASKED_PATHS,
    READONLY_PATHS,
    SYSTEM_MOUNT_TARGETS,
)
from mason.executor.types import (
    BindMount,
    CacheMount,
    ExecSpec,
    ExecutorError,
    ExitStatus,
    OutputCallback,
    SecretMount,
    TmpfsMount,
)

__all__ = ["ChrootExecutor"]

_INIT = Path(__file__).with_name("_chroot_init.py")


class ChrootExecutor:
    """Runs ExecSpecs with ``unshare`` + ``chroot``; needs root."""

    def __init__(
        self,
        *,
        unshare: str = "unshare",
        python: str = sys.executable,
        work_dir: Path | None = None,
        host_resolv_conf: Path = Path("/etc/resolv.conf"),
    ) -> None:
        self.unshare = unshare
        self.python = python
        self.work_dir = work_dir
        self.host_resolv_conf = host_resolv_conf

    def run(
        self,
        spec: ExecSpec,
        on_output: OutputCallback,
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> ExitStatus:
        if self.work_dir is not None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        import tempfile  # the fallback sandbox: rarely

        scratch = Path(tempfile.mkdtemp(prefix="mason-chroot-", dir=self.work_dir))
        status_r, status_w = os.pipe()
        try:
            prepared = prepare_run(spec, scratch, self.host_resolv_conf)
            try:
                plan = _sandbox_plan(spec, prepared, status_w)
                plan_file = scratch / "plan.json"
                plan_file.write_text(json.dumps(plan), encoding="utf-8")
                argv = [self.unshare, "--mount", "--pid", "--uts", "--ipc", "--fork",
                        "--kill-child=SIGKILL", "--propagation", "private"]  # fmt: skip
                if spec.network == "none":
                    argv.append("--net")
                argv += [self.python, "-I", "-S", str(_INIT), str(plan_file)]

                def terminate(proc: subprocess.Popen[bytes]) -> None:
                    # ``proc`` is the launcher guard: its death SIGKILLs unshare
                    # (PR_SET_PDEATHSIG), whose death SIGKILLs the namespace's
                    # init, which takes the rest of the pid namespace with it.
                    # The same chain runs when mason itself dies.
                    proc.kill()

                try:
                    result = run_streaming(
                        argv,
                        on_output,
                        terminate=terminate,
                        cancel=cancel,
                        timeout=timeout,
                        pass_fds=(status_w,),
                    )
                except OSError as exc:
                    raise ExecutorError(f"could not start {self.unshare}: {exc}") from exc
            finally:
                prepared.stubs.remove()
            os.close(status_w)
            status_w = -1
            error = _read_all(status_r).decode("utf-8", errors="replace") or None
            return exit_status(result, spec.args[0], timeout, error)
        finally:
            if status_w >= 0:
                os.close(status_w)
            os.close(status_r)
            shutil.rmtree(scratch, ignore_errors=True)


def _sandbox_plan(spec: ExecSpec, prepared: PreparedRun, status_fd: int) -> dict[str, Any]:
    """What the init (``_chroot_init.py``) sets up: every mount point resolved inside the rootfs
    (``secure_join``, so no mount can land outside), the process, its limits and capabilities."""
    rootfs = spec.rootfs.resolve()
    mounts: list[dict[str, Any]] = [
        {"type": "bind", "source": str(prepared.hosts_file), "target": "/etc/hosts", "readonly": False},
        {"type": "bind", "source": str(prepared.resolv_file), "target": "/etc/resolv.conf", "readonly": False},
    ]  # fmt: skip
    for mount in sorted(spec.mounts, key=lambda m: len(Path(m.target).parts)):
        mounts.append(_mount_plan(mount))
    for entry in mounts:
        entry["path"] = str(secure_join(rootfs, entry["target"]))
    return {
        "rootfs": str(rootfs),
        "system_paths": {t: str(secure_join(rootfs, t)) for t in SYSTEM_MOUNT_TARGETS},
        "mounts": mounts,
        "hostname": spec.hostname,
        "network": spec.network,
        "cwd": spec.cwd,
        "args": list(spec.args),
        "env": list(prepared.env),
        "uid": prepared.user.uid,
        "gid": prepared.user.gid,
        "additional_gids": list(prepared.user.additional_gids),
        "capabilities": list(DEFAULT_CAPABILITIES),
        # RUN --security=insecure: every capability kept, nothing masked, /sys writable
        "insecure": spec.insecure,
        "readonly_paths": [] if spec.insecure else list(READONLY_PATHS),
        "masked_paths": [] if spec.insecure else list(MASKED_PATHS),
        "nofile": nofile_limit(),
        "ulimits": [[u.name, u.soft, u.hard] for u in spec.ulimits],
        "shm_size": spec.shm_size,
        "status_fd": status_fd,
    }


def _mount_plan(mount: BindMount | TmpfsMount | CacheMount | SecretMount) -> dict[str, Any]:
    if isinstance(mount, TmpfsMount):
        return {"type": "tmpfs", "target": mount.target, "size": mount.size}
    if isinstance(mount, SecretMount):
        return {
            "type": "secret",
            "source": str(mount.source),
            "target": mount.target,
            "readonly": True,
        }
    return {
        "type": "bind",
        "source": str(mount.source),
        "target": mount.target,
        "readonly": mount.readonly,
    }


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)
