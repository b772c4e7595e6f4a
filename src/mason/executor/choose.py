"""Picking the best sandbox this machine supports: up front (``choose_executor``, a probe
container first) or on the way (``AutoExecutor``: runc runs the first RUN itself, and the
probe runs only when runc could not start it)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from mason.executor.chroot import ChrootExecutor
from mason.executor.runc import RuncExecutor
from mason.executor.types import ExecSpec, Executor, ExecutorError, ExitStatus, OutputCallback

__all__ = ["AutoExecutor", "choose_executor", "probe_runc"]

_PROBE_BINARY = "/.mason-probe"


def probe_runc(executor: RuncExecutor) -> str | None:
    """None when runc can create a container here, else why not.

    The probe runs a container on an empty rootfs whose command does not
    exist: runc sets up namespaces, cgroups and mounts and fails only at the
    final exec. That failure means everything before it works.
    """
    if executor.work_dir is not None:
        executor.work_dir.mkdir(parents=True, exist_ok=True)
    import tempfile  # only when a run failed: the probe tells why

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
    on_the_way: bool = False,
) -> Executor:
    """RuncExecutor when ``runc`` is on PATH and can run a container, else ChrootExecutor.
    ``on_the_way``: an ``AutoExecutor`` instead of a probe container now (runc on PATH)."""
    runc_path = shutil.which(runc)
    if runc_path is not None:
        executor = RuncExecutor(
            runc=runc_path,
            state_dir=state_dir,
            work_dir=work_dir,
            host_resolv_conf=host_resolv_conf,
        )
        if on_the_way:
            return AutoExecutor(executor, lambda: _chroot(work_dir, host_resolv_conf))
        if probe_runc(executor) is None:
            return executor
    return _chroot(work_dir, host_resolv_conf)


def _chroot(work_dir: Path | None, host_resolv_conf: Path) -> Executor:
    if shutil.which("unshare") is None:
        raise ExecutorError(
            "no sandbox available: runc does not work here and unshare is not installed",
            hint="install runc (apt-get install runc) or util-linux",
        )
    return ChrootExecutor(work_dir=work_dir, host_resolv_conf=host_resolv_conf)


class AutoExecutor:
    """``--runtime auto`` without a probe container before the first RUN (start-up, issue 14:
    the probe was a whole container start per build). runc runs the first RUN itself; a
    process that started proves runc works here. Only when runc could not start it
    (``ExitStatus.error`` or an ``ExecutorError``) does ``probe_runc`` tell why: runc works
    (the RUN's own command could not start: that is its result, as with runc chosen up front)
    or not (the RUN, which never started, runs again in the chroot sandbox, as every later one
    does). The choice is made once, for every thread."""

    def __init__(self, runc: RuncExecutor, fallback: Callable[[], Executor]) -> None:
        self.runc = runc
        self._fallback = fallback
        self.chosen: Executor | None = None
        self._lock = threading.Lock()

    def run(
        self,
        spec: ExecSpec,
        on_output: OutputCallback,
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> ExitStatus:
        if self.chosen is not None:
            return self.chosen.run(spec, on_output, cancel=cancel, timeout=timeout)
        try:
            status = self.runc.run(spec, on_output, cancel=cancel, timeout=timeout)
        except ExecutorError:
            if self._choose() is self.runc:
                raise
            return self._rerun(spec, on_output, cancel, timeout)
        if status.error is None:
            with self._lock:
                self.chosen = self.chosen or self.runc
            return status
        if self._choose() is self.runc:
            return status
        return self._rerun(spec, on_output, cancel, timeout)

    def prestart(self, ahead: int = 1) -> None:
        """Start the next runs' guards ahead when the sandbox is (or may be) runc."""
        if self.chosen is None or self.chosen is self.runc:
            self.runc.prestart(ahead)

    def _choose(self) -> Executor:
        with self._lock:
            if self.chosen is None:
                self.chosen = self.runc if probe_runc(self.runc) is None else self._fallback()
            return self.chosen

    def _rerun(
        self,
        spec: ExecSpec,
        on_output: OutputCallback,
        cancel: threading.Event | None,
        timeout: float | None,
    ) -> ExitStatus:
        assert self.chosen is not None
        return self.chosen.run(spec, on_output, cancel=cancel, timeout=timeout)
