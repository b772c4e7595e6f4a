"""Peer builders for benchmarks: buildah (and mason itself, run the same way).

Both run as subprocesses with their whole state in a temporary directory, so every
run can start from an empty builder ("a fresh machine") and the numbers include
process start-up, as a CI job would see them.

- ``Buildah``: ``buildah bud --layers --runtime runc`` with ``--root/--runroot`` in a
  temp dir (overlay driver, vfs when overlay cannot be mounted), registry cache with
  ``--cache-to/--cache-from REPO`` (buildah pushes one image per step to that
  repository), pushes and pulls with ``--tls-verify=false``.
- ``Mason``: ``mason build`` with a fresh ``$MASON_ROOT`` and buildx-style flags.
- ``BuildKit``: ``buildctl build`` against a ``buildkitd`` (OCI worker, runc, overlayfs, host
  network) with its root in a temp dir, when ``BUILDKITD``/``BUILDCTL`` name the binaries
  (``buildkit_binaries()``); ``fresh()`` restarts the daemon on an empty root, untimed, so a
  phase times only the client's build, as ``docker buildx build`` on a running builder would.

Usable from any bench: ``from bench.peers import Buildah, Mason`` (or ``from peers import``
when run as a script from ``bench/``).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BUILDAH",
    "BuildKit",
    "Buildah",
    "Mason",
    "RunResult",
    "buildkit_binaries",
    "remove_tree",
    "unmount_under",
]

BUILDAH = shutil.which("buildah") or "/usr/bin/buildah"
_REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class RunResult:
    seconds: float
    output: str
    #: CPU seconds (user + system) the run cost: the process and the children it waited for;
    #: for BuildKit also what its daemon (and the runc processes it reaped) spent meanwhile.
    #: Unlike wall time, hardly changed by other jobs loading the machine.
    cpu: float = 0.0


def unmount_under(path: Path) -> None:
    """Unmount whatever a builder left mounted below ``path`` (deepest first)."""
    prefix = str(path.resolve())
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    points = [ln.split()[4] for ln in lines if len(ln.split()) > 4]
    for point in sorted(
        (p for p in points if p == prefix or p.startswith(prefix + "/")), key=len, reverse=True
    ):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def remove_tree(path: Path) -> None:
    if not path.exists():
        return
    unmount_under(path)
    shutil.rmtree(path, ignore_errors=True)


def _run(
    cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> RunResult:
    before = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=env, cwd=cwd, check=False)
    elapsed = time.perf_counter() - start
    cpu = _children_cpu() - before
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-3000:]}")
    return RunResult(elapsed, output, cpu)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and of the children it reaped (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class Buildah:
    """``buildah`` with its storage in ``workdir`` (``fresh()`` empties it)."""

    def __init__(self, workdir: Path, *, driver: str | None = None) -> None:
        self.workdir = workdir
        self.driver = driver or self._pick_driver()

    @property
    def root(self) -> Path:
        return self.workdir / "root"

    @property
    def runroot(self) -> Path:
        return self.workdir / "runroot"

    def _base(self) -> list[str]:
        return [
            BUILDAH,
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            self.driver,
        ]

    def _pick_driver(self) -> str:
        """overlay when this kernel lets buildah mount it here, else vfs."""
        self.driver = "overlay"
        try:
            self.fresh()
            _run([*self._base(), "images"])
            return "overlay"
        except RuntimeError:
            return "vfs"
        finally:
            self.cleanup()

    def fresh(self) -> None:
        """An empty builder: no images, no layers."""
        self.cleanup()
        self.root.mkdir(parents=True)
        self.runroot.mkdir(parents=True)

    def cleanup(self) -> None:
        if self.root.exists():
            subprocess.run([*self._base(), "rm", "--all"], capture_output=True, check=False)
        remove_tree(self.root)
        remove_tree(self.runroot)

    def bud(
        self,
        context: Path,
        *,
        tag: str,
        build_args: dict[str, str] | None = None,
        cache_from: str | None = None,
        cache_to: str | None = None,
    ) -> RunResult:
        cmd = [
            *self._base(),
            "bud",
            "--layers",
            "--runtime",
            "runc",
            "--tls-verify=false",
            "-t",
            tag,
        ]
        for k, v in (build_args or {}).items():
            cmd += ["--build-arg", f"{k}={v}"]
        if cache_from:
            cmd += ["--cache-from", cache_from]
        if cache_to:
            cmd += ["--cache-to", cache_to]
        return _run([*cmd, str(context)])

    def push(self, image: str, destination: str) -> RunResult:
        """``destination`` is a transport reference: ``docker://REF``, ``oci-archive:FILE``."""
        return _run([*self._base(), "push", "--tls-verify=false", image, destination])


class Mason:
    """``mason build`` with ``$MASON_ROOT`` in ``workdir`` (``fresh()`` empties it)."""

    def __init__(
        self, workdir: Path, *, command: Sequence[str] | None = None, src: Path | None = None
    ) -> None:
        """``src``: another checkout's ``src/`` to run (with this venv), as before/after."""
        self.workdir = workdir
        self.src = src
        entry = Path(sys.executable).with_name("mason")
        if command is None and src is not None:
            command = [sys.executable, "-m", "mason.cli.main"]
        if command is None:
            command = [str(entry)] if entry.exists() else [sys.executable, "-m", "mason.cli.main"]
        self.command = list(command)

    @property
    def root(self) -> Path:
        return self.workdir / "root"

    def fresh(self) -> None:
        self.cleanup()
        self.root.mkdir(parents=True)

    def cleanup(self) -> None:
        remove_tree(self.root)

    def build(
        self, context: Path, *args: str, build_args: dict[str, str] | None = None
    ) -> RunResult:
        cmd = [*self.command, "build", "--progress=plain"]
        for k, v in (build_args or {}).items():
            cmd += ["--build-arg", f"{k}={v}"]
        env = {**os.environ, "MASON_ROOT": str(self.root)}
        if self.src is not None:
            env["PYTHONPATH"] = str(self.src)
        # an installed mason has its bytecode compiled; so does this one after its first run
        for name in ("SOURCE_DATE_EPOCH", "PYTHONDONTWRITEBYTECODE"):
            env.pop(name, None)
        return _run([*cmd, *args, str(context)], env=env, cwd=_REPO)


def buildkit_binaries() -> tuple[str, str] | None:
    """(buildkitd, buildctl) from ``$BUILDKITD``/``$BUILDCTL`` when both are executable."""
    daemon, client = os.environ.get("BUILDKITD", ""), os.environ.get("BUILDCTL", "")
    if daemon and client and os.access(daemon, os.X_OK) and os.access(client, os.X_OK):
        return daemon, client
    return None


class BuildKit:
    """``buildkitd`` with its root in ``workdir``, trusting the plain-HTTP ``registry``
    (host:port); ``build`` runs ``buildctl build`` with the dockerfile frontend."""

    def __init__(self, workdir: Path, registry: str, binaries: tuple[str, str]) -> None:
        self.workdir = workdir
        self.registry = registry
        self.daemon, self.client = binaries
        self.sock = workdir / "buildkitd.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> Path:
        return self.workdir / "root"

    def _config(self) -> Path:
        conf = self.workdir / "buildkitd.toml"
        conf.write_text(
            f'root = "{self.root}"\n'
            'insecure-entitlements = [ "network.host", "security.insecure" ]\n'
            '[worker.oci]\n  enabled = true\n  snapshotter = "overlayfs"\n'
            '  networkMode = "host"\n  binary = "runc"\n  gc = true\n'
            "[worker.containerd]\n  enabled = false\n"
            f'[registry."{self.registry}"]\n  http = true\n  insecure = true\n'
        )
        return conf

    def fresh(self) -> None:
        """A running daemon on an empty root (started and waited for here, not timed)."""
        self.cleanup()
        self.root.mkdir(parents=True)
        path = f"{Path(self.daemon).parent}:/usr/sbin:/usr/bin:/sbin:/bin"
        log = open(self.workdir / "buildkitd.log", "ab")  # noqa: SIM115 - the daemon's stderr
        self.proc = subprocess.Popen(
            [self.daemon, "--config", str(self._config()), "--root", str(self.root),
             "--addr", f"unix://{self.sock}", "--oci-worker=true", "--containerd-worker=false"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PATH": path},
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"buildkitd exited; see {self.workdir / 'buildkitd.log'}")
            probe = subprocess.run(
                [self.client, "--addr", f"unix://{self.sock}", "debug", "workers"],
                capture_output=True, check=False,
            )  # fmt: skip
            if probe.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("buildkitd did not answer within 60 s")

    def cleanup(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        remove_tree(self.root)

    def build(
        self, context: Path, *args: str, build_args: dict[str, str] | None = None
    ) -> RunResult:
        """``args``: buildctl flags (``--output``, ``--import-cache``, ``--export-cache``)."""
        cmd = [self.client, "--addr", f"unix://{self.sock}", "build", "--progress=plain"]
        cmd += ["--frontend", "dockerfile.v0", "--local", f"context={context}"]
        # the built-in Dockerfile frontend even under "# syntax=docker/dockerfile:1" (no pull
        # of a frontend image; the machine may have no internet): a cmdline opt stops forwarding
        cmd += ["--local", f"dockerfile={context}", "--opt", "cmdline="]
        for k, v in (build_args or {}).items():
            cmd += ["--opt", f"build-arg:{k}={v}"]
        daemon = self.proc.pid if self.proc is not None else 0
        before = _process_cpu(daemon)
        result = _run([*cmd, *args])
        spent = _process_cpu(daemon) - before
        return RunResult(result.seconds, result.output, result.cpu + spent)
