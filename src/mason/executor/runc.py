"""RuncExecutor: one OCI runtime bundle and one `runc run` per ExecSpec."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

from mason.executor.prepare import prepare_run
from mason.executor.process import exit_status, run_streaming
from mason.executor.runtime_spec import DEFAULT_NOFILE, build_runtime_config
from mason.executor.types import (
    ExecSpec,
    ExecutorError,
    ExitStatus,
    OutputCallback,
)

__all__ = ["RuncExecutor", "nofile_limit"]

_RUNC_TIMEOUT = 30.0


class RuncExecutor:
    """Runs ExecSpecs with runc (tested with runc 1.1).

    ``state_dir`` is runc's ``--root`` (container state; best on tmpfs);
    ``work_dir`` holds the per-run bundle directories (config.json, hosts,
    resolv.conf, runc's log); both are created when missing.
    """

    def __init__(
        self,
        *,
        runc: str = "runc",
        state_dir: Path = Path("/run/mason/runc"),
        work_dir: Path | None = None,
        host_resolv_conf: Path = Path("/etc/resolv.conf"),
        no_pivot: bool = False,
    ) -> None:
        self.runc = runc
        self.state_dir = state_dir
        self.work_dir = work_dir
        self.host_resolv_conf = host_resolv_conf
        self.no_pivot = no_pivot

    def _runc_argv(self, *args: str) -> list[str]:
        return [self.runc, "--root", str(self.state_dir), *args]

    def _call(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                self._runc_argv(*args),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_RUNC_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ExecutorError(f"runc {args[0]} failed: {exc}") from exc

    def list_containers(self) -> list[str]:
        """Ids of the containers in this executor's runc state dir."""
        result = self._call("list", "--format", "json")
        if result.returncode != 0:
            raise ExecutorError(
                "runc list failed", context=[result.stderr.decode(errors="replace").strip()]
            )
        entries = json.loads(result.stdout or b"null") or []
        return [str(e["id"]) for e in entries]

    def run(
        self,
        spec: ExecSpec,
        on_output: OutputCallback,
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> ExitStatus:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.work_dir is not None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        bundle = Path(tempfile.mkdtemp(prefix="mason-bundle-", dir=self.work_dir))
        container_id = f"mason-{uuid.uuid4().hex[:20]}"
        log_file = bundle / "runc.log"
        try:
            prepared = prepare_run(spec, bundle, self.host_resolv_conf)
            try:
                config = build_runtime_config(
                    spec,
                    prepared.user,
                    prepared.env,
                    hosts_file=prepared.hosts_file,
                    resolv_file=prepared.resolv_file,
                    nofile=nofile_limit(),
                )
                (bundle / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
                argv = self._runc_argv("--log", str(log_file), "--log-format", "json", "run")
                if self.no_pivot:
                    argv.append("--no-pivot")
                argv += ["--bundle", str(bundle), container_id]

                def terminate(proc: subprocess.Popen[bytes]) -> None:
                    # Kill the container's init (the pid namespace takes the
                    # rest with it); if runc is still creating it, kill runc.
                    killed = self._call("kill", container_id, "KILL").returncode == 0
                    if not killed:
                        proc.kill()
                    self._call("delete", "--force", container_id)

                try:
                    result = run_streaming(
                        argv, on_output, terminate=terminate, cancel=cancel, timeout=timeout
                    )
                except OSError as exc:
                    raise ExecutorError(f"could not start {self.runc}: {exc}") from exc
            finally:
                # Always: a container left in "created" or "stopped" state
                # would hold its cgroup and mounts.
                self._call("delete", "--force", container_id)
                prepared.stubs.remove()
            return exit_status(result, spec.args[0], timeout, _runc_error(log_file))
        finally:
            shutil.rmtree(bundle, ignore_errors=True)


def nofile_limit() -> int:
    """Docker's RLIMIT_NOFILE, capped at our own hard limit.

    Raising a hard limit needs CAP_SYS_RESOURCE, which mason itself may lack
    (e.g. inside a container), and runc fails the whole run if it cannot.
    """
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return DEFAULT_NOFILE
    return min(DEFAULT_NOFILE, hard)


def _runc_error(log_file: Path) -> str | None:
    """The last error runc logged (JSON lines), e.g. an executable not found."""
    try:
        text = log_file.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    message = None
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            message = str(entry.get("msg", ""))
    return message
