"""RuncExecutor: one OCI runtime bundle and one `runc run` per ExecSpec."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

from mason.executor.orphans import BUNDLE_PREFIX, CONTAINER_PREFIX, hold_owner_lock, reap_orphans
from mason.executor.prepare import prepare_run
from mason.executor.process import exit_status, prestart_guard, run_streaming
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
    resolv.conf, runc's log, the owner lock); both are created when missing.
    Before its first run, an executor reaps the orphans of dead mason
    processes in ``state_dir`` (``mason.executor.orphans``).
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
        self._reaped = False
        self._reap_lock = threading.Lock()

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

    def reap_orphans(self) -> list[str]:
        """Remove the containers in the state dir whose mason process is gone; their ids."""
        return reap_orphans(runc=self.runc, state_dir=self.state_dir)

    def prestart(self, ahead: int = 1) -> None:
        """Start the next ``ahead`` runs' launcher guards now
        (``mason.executor.process.prestart_guard``): their start-up then overlaps the
        caller's work before the run (a mount, the bundle), or the run before theirs."""
        prestart_guard(ahead=ahead)

    def run(
        self,
        spec: ExecSpec,
        on_output: OutputCallback,
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> ExitStatus:
        with self._reap_lock:
            if not self._reaped:
                self.reap_orphans()
                self._reaped = True
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.work_dir is not None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        bundle = Path(_new_dir(self.work_dir, BUNDLE_PREFIX))
        container_id = f"{CONTAINER_PREFIX}{uuid.uuid4().hex[:20]}"
        try:
            with hold_owner_lock(bundle):
                return self._run_in(spec, on_output, bundle, container_id, cancel, timeout)
        finally:
            shutil.rmtree(bundle, ignore_errors=True)

    def _run_in(
        self,
        spec: ExecSpec,
        on_output: OutputCallback,
        bundle: Path,
        container_id: str,
        cancel: threading.Event | None,
        timeout: float | None,
    ) -> ExitStatus:
        log_file = bundle / "runc.log"
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
                # rest with it); if runc is still creating it, kill runc
                # (killing its guard does).
                killed = self._call("kill", container_id, "KILL").returncode == 0
                if not killed:
                    proc.kill()
                self._call("delete", "--force", container_id)

            # If mason dies, the guard kills runc, but the container's init
            # survives runc: the guard must remove the container itself.
            on_orphan = [self._runc_argv("kill", container_id, "KILL"),
                         self._runc_argv("delete", "--force", container_id)]  # fmt: skip
            try:
                result = run_streaming(
                    argv,
                    on_output,
                    terminate=terminate,
                    cancel=cancel,
                    timeout=timeout,
                    on_orphan=on_orphan,
                )
            except OSError as exc:
                raise ExecutorError(f"could not start {self.runc}: {exc}") from exc
        finally:
            # Always: a container left in "created" or "stopped" state would hold its
            # cgroup and mounts. runc keeps a directory per container in its root, and its
            # run removes it when it ends normally: then there is nothing to delete (issue
            # 14: one runc process less per RUN, ~4 ms).
            if os.path.lexists(self.state_dir / container_id):
                self._call("delete", "--force", container_id)
            prepared.stubs.remove()
        return exit_status(result, spec.args[0], timeout, _runc_error(log_file))


def _new_dir(parent: Path | None, prefix: str) -> str:
    """A new private directory (0700) in ``parent`` (default: the temporary directory);
    ``tempfile`` (and ``random`` with it, ~1.5 ms) is imported only for the default."""
    if parent is None:
        import tempfile

        return tempfile.mkdtemp(prefix=prefix)
    from mason.oci.atomic import temp_dir

    return temp_dir(parent, prefix)


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
