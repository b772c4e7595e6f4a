"""Peer builders for benchmarks: buildah (and mason itself, run the same way).

Both run as subprocesses with their whole state in a temporary directory, so every
run can start from an empty builder ("a fresh machine") and the numbers include
process start-up, as a CI job would see them.

- ``Buildah``: ``buildah bud --layers --runtime runc`` with ``--root/--runroot`` in a
  temp dir (overlay driver, vfs when overlay cannot be mounted), registry cache with
  ``--cache-to/--cache-from REPO`` (buildah pushes one image per step to that
  repository), pushes and pulls with ``--tls-verify=false``.
- ``Mason``: ``mason build`` with a fresh ``$MASON_ROOT`` and buildx-style flags.

Usable from any bench: ``from bench.peers import Buildah, Mason`` (or ``from peers import``
when run as a script from ``bench/``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BUILDAH", "Buildah", "Mason", "RunResult", "remove_tree", "unmount_under"]

BUILDAH = shutil.which("buildah") or "/usr/bin/buildah"
_REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class RunResult:
    seconds: float
    output: str


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
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=env, cwd=cwd, check=False)
    elapsed = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-3000:]}")
    return RunResult(elapsed, output)


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

    def __init__(self, workdir: Path, *, command: Sequence[str] | None = None) -> None:
        self.workdir = workdir
        entry = Path(sys.executable).with_name("mason")
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
        with contextlib.suppress(KeyError):
            del env["SOURCE_DATE_EPOCH"]
        return _run([*cmd, *args, str(context)], env=env, cwd=_REPO)
