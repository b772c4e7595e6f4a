"""Sandbox init for ChrootExecutor, run by `unshare` inside new namespaces.

Stdlib only and run by path (``python -I -S _chroot_init.py PLAN``) so it
starts fast and needs nothing importable. It mounts /proc, /dev, /sys,
/etc/hosts, /etc/resolv.conf and the spec's mounts inside the private mount
namespace, sets the hostname, brings up loopback in a new network namespace,
pivots into the rootfs (detaching the host's tree), masks /proc as Docker
does, drops the capability bounding set to Docker's defaults, switches
user and execs the command. Set-up failures are written to the status fd
(close-on-exec, so a successful exec leaves it empty).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import resource
import socket
import struct
import sys
from typing import Any

__all__: list[str] = []

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_CAPBSET_DROP = 24
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

CAPS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5,
    "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
}  # fmt: skip

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    pass


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    res = _libc.mount(
        None if source is None else source.encode(),
        target.encode(),
        None if fstype is None else fstype.encode(),
        ctypes.c_ulong(flags),
        None if data is None else data.encode(),
    )
    if res != 0:
        err = ctypes.get_errno()
        raise SetupError(f"mount {source or fstype} on {target}: {os.strerror(err)}")


def _bind(source: str, target: str, readonly: bool, extra: int = 0) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    if readonly or extra:
        flags = MS_REMOUNT | MS_BIND | extra | (MS_RDONLY if readonly else 0)
        _mount(None, target, None, flags)


def _setup_dev(dev: str, shm_size: int | None) -> None:
    # nodev: the device files below are bind mounts of their own; a node made here is dead
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=65536k")
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        path = os.path.join(dev, name)
        with open(path, "w"):
            pass
        _bind(f"/dev/{name}", path, readonly=False)
    os.mkdir(os.path.join(dev, "pts"))
    _mount("devpts", os.path.join(dev, "pts"), "devpts", MS_NOSUID | MS_NOEXEC,
           "newinstance,ptmxmode=0666,mode=0620")  # fmt: skip
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    os.mkdir(os.path.join(dev, "shm"))
    _mount("shm", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
           f"mode=1777,size={shm_size or 65536 * 1024}")  # fmt: skip
    os.symlink("/proc/self/fd", os.path.join(dev, "fd"))
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", os.path.join(dev, name))


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, req + b"\0" * 22)[:18])[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP) + b"\0" * 22)


#: pivot_root has no libc wrapper; its number differs between architectures
_SYS_PIVOT_ROOT = {
    "x86_64": 155,
    "aarch64": 41,
    "riscv64": 41,
    "loongarch64": 41,
    "ppc64le": 203,
    "s390x": 217,
    "armv7l": 218,
    "armv8l": 218,
}
_MNT_DETACH = 2


def _pivot_root(root: str) -> None:
    """Make ``root`` the namespace's ``/`` and detach the host's tree. A chroot alone can be
    left again by a process with CAP_SYS_CHROOT (Docker's default set has it); after
    pivot_root and the detach, nothing of the host is left to climb back to."""
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise SetupError(f"no pivot_root system call number known for {os.uname().machine}")
    os.chdir(root)
    if _libc.syscall(number, b".", b".") != 0:  # the old root ends up stacked under "."
        raise SetupError(f"pivot_root to {root}: {os.strerror(ctypes.get_errno())}")
    if _libc.umount2(b".", _MNT_DETACH) != 0:
        raise SetupError(f"detaching the host root: {os.strerror(ctypes.get_errno())}")
    os.chdir("/")


def _protect_proc(readonly: list[str], masked: list[str]) -> None:
    """Docker's read-only and masked /proc and /sys paths (runc's readonlyPaths and
    maskedPaths): without them a root RUN could write host sysctls (core_pattern)."""
    for path in readonly:
        if os.path.exists(path):
            _bind(path, path, readonly=True, extra=MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path in masked:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0")
        elif os.path.exists(path):
            _bind("/dev/null", path, readonly=True)


def _drop_bounding_set(keep: set[int]) -> None:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if cap not in keep and _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            if err != errno.EINVAL:
                raise SetupError(f"dropping capability {cap}: {os.strerror(err)}")


def _setup(plan: dict[str, Any]) -> None:
    # Every mountpoint comes as a host path that the parent resolved inside
    # the rootfs (symlinks scoped to it), so no mount can land outside.
    root = plan["rootfs"]
    system = plan["system_paths"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # The rootfs becomes a mount of its own (pivot_root needs one), nodev: with no device
    # cgroup here, a node the build makes or an image ships must not reach host devices.
    _bind(root, root, readonly=False, extra=MS_NODEV)
    _mount("proc", system["/proc"], "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _setup_dev(system["/dev"], plan.get("shm_size"))
    _mount(
        "sysfs",
        system["/sys"],
        "sysfs",
        MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if plan.get("insecure") else MS_RDONLY),
    )
    for m in plan["mounts"]:
        target = m["path"]
        if m["type"] == "tmpfs":
            data = "mode=1777" + (f",size={m['size']}" if m.get("size") else "")
            _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, data)
        else:
            extra = MS_NOSUID | MS_NODEV | MS_NOEXEC if m["type"] == "secret" else MS_NODEV
            _bind(m["source"], target, m["readonly"], extra)
    socket.sethostname(plan["hostname"])
    if plan["network"] == "none":
        _loopback_up()
    _pivot_root(root)
    _protect_proc(plan["readonly_paths"], plan["masked_paths"])
    os.chdir(plan["cwd"])
    if not plan.get("insecure"):  # insecure: the bounding set stays whole
        _drop_bounding_set({CAPS[c] for c in plan["capabilities"]})
    nofile = plan["nofile"]
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    for name, soft, hard in plan.get("ulimits", ()):
        limit = getattr(resource, f"RLIMIT_{name.upper()}")
        resource.setrlimit(
            limit,
            (
                resource.RLIM_INFINITY if soft < 0 else soft,
                resource.RLIM_INFINITY if hard < 0 else hard,
            ),
        )
    os.setgroups(plan["additional_gids"])
    os.setgid(plan["gid"])
    os.setuid(plan["uid"])
    os.umask(0o022)


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        plan = json.load(f)
    status_fd = int(plan["status_fd"])
    os.set_inheritable(status_fd, False)
    try:
        _setup(plan)
    except (OSError, SetupError) as exc:
        os.write(status_fd, f"sandbox set-up failed: {exc}".encode())
        return 125
    env = dict(e.split("=", 1) for e in plan["env"])
    args = plan["args"]
    try:
        os.execvpe(args[0], args, env)
    except OSError as exc:
        os.write(status_fd, f"exec {args[0]!r}: {exc.strerror}".encode())
        return 127 if exc.errno == errno.ENOENT else 126
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
