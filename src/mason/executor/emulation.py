"""RUN for a foreign platform: QEMU user-mode emulation (Debian's ``qemu-user-static``).

Three ways, tried in this order for each platform a build runs a process for:

1. The host's own architecture: nothing to do.
2. binfmt_misc: the kernel starts the emulator for every foreign binary, children included.
   An entry ``qemu-<arch>`` that is enabled *with the fix-binary flag F* works inside runc's
   container (the kernel opened the interpreter when it was registered; without F it would
   look the interpreter up inside the rootfs, where it is not). When no entry exists and
   mason runs as root, it registers the package's own line (``/usr/lib/binfmt.d/qemu-<arch>.conf``,
   F added if missing), exactly what systemd-binfmt does for that package at boot; binfmt_misc
   is mounted first when nothing is mounted at its place. The entry stays (as the package's).
3. BuildKit's fallback: the static emulator is bound read-only into the sandbox at
   ``/dev/.buildkit_qemu_emulator`` and started explicitly with the step's arguments. Only
   that process is emulated: a foreign program it starts needs binfmt_misc.

No emulator at all is a ``EmulatorMissingError`` naming the package (exit 1).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

from mason.executor.types import ExecutorError
from mason.oci.platform import Platform
from mason.structs import Struct

__all__ = [
    "EMULATOR_MOUNT",
    "QEMU_PACKAGE",
    "Emulation",
    "EmulatorMissingError",
    "Emulators",
    "qemu_arch",
]

EMULATOR_MOUNT = "/dev/.buildkit_qemu_emulator"
QEMU_PACKAGE = "qemu-user-static"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")

#: Go's architecture -> QEMU's (BuildKit's qemuArchMap, plus the other Debian emulators)
_QEMU_ARCH = {
    "arm64": "aarch64",
    "amd64": "x86_64",
    "arm": "arm",
    "386": "i386",
    "riscv64": "riscv64",
    "s390x": "s390x",
    "ppc64le": "ppc64le",
    "ppc64": "ppc64",
    "mips64le": "mips64el",
    "mips64": "mips64",
    "loong64": "loongarch64",
}


def qemu_arch(platform: Platform) -> str:
    """QEMU's name of ``platform``'s architecture (``aarch64`` for ``arm64``)."""
    return _QEMU_ARCH.get(platform.architecture, platform.architecture)


class EmulatorMissingError(ExecutorError):
    """A RUN for a platform this machine can neither run nor emulate."""

    reference = "emulator-missing"
    exit_code = 1


class Emulation(Struct, frozen=True):
    """How processes of ``platform`` run: natively, through binfmt_misc, or explicitly through
    ``emulator`` (bound at ``EMULATOR_MOUNT``); ``note`` says which, for the step's log."""

    platform: Platform
    emulator: Path | None = None
    note: str = ""

    def args(self, args: Sequence[str]) -> tuple[str, ...]:
        """The sandbox's command line: the emulator first when it must be run explicitly."""
        return (EMULATOR_MOUNT, *args) if self.emulator is not None else tuple(args)


class Emulators:
    """Decides, once per platform and build, how that platform's processes run."""

    def __init__(
        self,
        host: Platform,
        *,
        binfmt_dir: Path = BINFMT_DIR,
        bin_dirs: Sequence[Path] = (Path("/usr/bin"),),
        conf_dirs: Sequence[Path] = (Path("/usr/lib/binfmt.d"), Path("/etc/binfmt.d")),
        may_register: bool | None = None,
    ) -> None:
        self.host = host
        self.binfmt_dir = binfmt_dir
        self.bin_dirs = tuple(bin_dirs)
        self.conf_dirs = tuple(conf_dirs)
        self.may_register = os.geteuid() == 0 if may_register is None else may_register
        self._memo: dict[Platform, Emulation] = {}
        self._lock = threading.Lock()

    def for_platform(self, platform: Platform) -> Emulation:
        """How to run ``platform``'s processes; ``EmulatorMissingError`` when no way exists."""
        with self._lock:
            if platform not in self._memo:
                self._memo[platform] = self._decide(platform.normalized())
            return self._memo[platform]

    def _decide(self, platform: Platform) -> Emulation:
        if (platform.os, platform.architecture) == (self.host.os, self.host.architecture):
            return Emulation(platform)
        arch = qemu_arch(platform)
        if self._registered(arch):
            return Emulation(platform, note=f"emulated by qemu-{arch} (binfmt_misc)")
        why = self._register(arch)
        if why is None:
            return Emulation(
                platform, note=f"emulated by qemu-{arch} (registered with binfmt_misc by mason)"
            )
        emulator = self._emulator(arch)
        if emulator is not None:
            return Emulation(
                platform,
                emulator,
                f"emulated by {emulator}, run explicitly ({why}); a foreign program "
                "this step starts needs binfmt_misc",
            )
        raise EmulatorMissingError(
            f"no emulator for {platform}: this machine ({self.host}) cannot run its RUN steps",
            context=[f"looked for qemu-{arch}-static in {', '.join(map(str, self.bin_dirs))}"],
            hint=f"install Debian's {QEMU_PACKAGE} package (apt-get install {QEMU_PACKAGE}); "
            "as root mason registers it with binfmt_misc",
        )

    def _registered(self, arch: str) -> bool:
        """An enabled ``qemu-<arch>`` entry with the fix-binary flag."""
        try:
            text = (self.binfmt_dir / f"qemu-{arch}").read_text()
        except OSError:
            return False
        lines = text.splitlines()
        flags = next((ln.split(":", 1)[1] for ln in lines if ln.startswith("flags:")), "")
        return bool(lines) and lines[0].strip() == "enabled" and "F" in flags

    def _register(self, arch: str) -> str | None:
        """Register the package's binfmt line; None when done, else why not."""
        line = self._conf_line(arch)
        if line is None:
            return f"no binfmt.d entry qemu-{arch}.conf of {QEMU_PACKAGE}"
        if not self.may_register:
            return "registering with binfmt_misc needs root"
        register = self.binfmt_dir / "register"
        if not register.exists() and not self._mount_binfmt():
            return f"binfmt_misc is not mounted at {self.binfmt_dir}"
        try:
            register.write_text(line)
        except OSError as exc:
            if not self._registered(arch):
                return f"binfmt_misc refused the registration: {exc.strerror}"
        return None if self._registered(arch) else "binfmt_misc did not take the registration"

    def _conf_line(self, arch: str) -> str | None:
        """``:qemu-<arch>:M::magic:mask:interpreter:flags`` with F, its interpreter present."""
        for d in self.conf_dirs:
            try:
                line = (d / f"qemu-{arch}.conf").read_text().strip()
            except OSError:
                continue
            # ":name:type:offset:magic:mask:interpreter:flags" (a colon inside is \x3a)
            fields = line.split(":")
            if len(fields) != 8 or fields[1] != f"qemu-{arch}":
                continue
            if not os.access(fields[6], os.X_OK):
                continue
            if "F" not in fields[7]:
                fields[7] += "F"
            return ":".join(fields)
        return None

    def _mount_binfmt(self) -> bool:
        """Mount binfmt_misc at its place when nothing is mounted there (systemd's job)."""
        import subprocess

        if not self.binfmt_dir.is_dir() or os.path.ismount(self.binfmt_dir):
            return False
        done = subprocess.run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", str(self.binfmt_dir)],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0 and (self.binfmt_dir / "register").exists()

    def _emulator(self, arch: str) -> Path | None:
        for d in self.bin_dirs:
            path = d / f"qemu-{arch}-static"
            if path.is_file() and os.access(path, os.X_OK):
                return path
        return None
