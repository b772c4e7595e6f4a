"""The OCI runtime bundle config.json for one ExecSpec, with Docker's defaults.

Pure: takes the spec and its resolved user, returns a dict. Nothing here
touches the filesystem, so unit tests check the document without runc.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from mason.executor.types import BindMount, CacheMount, ExecSpec, Mount, SecretMount, TmpfsMount
from mason.executor.users import ResolvedUser

__all__ = [
    "DEFAULT_CAPABILITIES",
    "DEFAULT_NOFILE",
    "MASKED_PATHS",
    "READONLY_PATHS",
    "SYSTEM_MOUNT_TARGETS",
    "build_runtime_config",
    "mountpoints_to_stub",
    "user_mount_config",
]

# Docker's default capability set (moby oci/caps/defaults.go).
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
)

# Docker's default masked and read-only paths (moby oci/defaults.go).
MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

#: every capability by number (linux/capability.h); the host's cap_last_cap says how many exist
ALL_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip
#: the devices BuildKit's insecure mode adds when the host has them (loop devices left out)
INSECURE_DEVICES: tuple[tuple[str, str, int, int], ...] = (
    ("/dev/kmsg", "c", 1, 11), ("/dev/cuse", "c", 10, 203), ("/dev/fuse", "c", 10, 229),
    ("/dev/kvm", "c", 10, 232), ("/dev/net/tun", "c", 10, 200), ("/dev/loop-control", "c", 10, 237),
)  # fmt: skip


def host_capabilities() -> tuple[str, ...]:
    """Every capability this process has (its ``CapEff``), as BuildKit's insecure mode takes
    them (containerd's ``cap.Current``): a sandbox cannot be given what its parent lacks."""
    try:
        with open("/proc/self/status") as f:
            eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, ValueError, StopIteration, IndexError):
        return DEFAULT_CAPABILITIES
    return tuple(name for bit, name in enumerate(ALL_CAPABILITIES) if eff >> bit & 1)


DEFAULT_NOFILE = 1048576
DEFAULT_UMASK = 0o022

# Mounts that every sandbox gets; the ones under /dev, /proc and /sys live
# inside those and need no mountpoint in the rootfs.
SYSTEM_MOUNT_TARGETS: tuple[str, ...] = ("/proc", "/dev", "/sys")


def _system_mount(destination: str, kind: str, source: str, options: str) -> dict[str, Any]:
    return {
        "destination": destination,
        "type": kind,
        "source": source,
        "options": options.split(","),
    }


_SYSTEM_MOUNTS: tuple[dict[str, Any], ...] = (
    _system_mount("/proc", "proc", "proc", "nosuid,noexec,nodev"),
    _system_mount("/dev", "tmpfs", "tmpfs", "nosuid,strictatime,mode=755,size=65536k"),
    _system_mount(
        "/dev/pts", "devpts", "devpts", "nosuid,noexec,newinstance,ptmxmode=0666,mode=0620,gid=5"
    ),
    _system_mount("/dev/shm", "tmpfs", "shm", "nosuid,noexec,nodev,mode=1777,size=65536k"),
    _system_mount("/dev/mqueue", "mqueue", "mqueue", "nosuid,noexec,nodev"),
    _system_mount("/sys", "sysfs", "sysfs", "nosuid,noexec,nodev,ro"),
    _system_mount("/sys/fs/cgroup", "cgroup", "cgroup", "nosuid,noexec,nodev,relatime,ro"),
)


def user_mount_config(mount: Mount) -> dict[str, Any]:
    """The runtime-spec mount entry for one ExecSpec mount."""
    if isinstance(mount, TmpfsMount):
        options = ["nosuid", "nodev", "mode=1777"]
        if mount.size is not None:
            options.append(f"size={mount.size}")
        return {"destination": mount.target, "type": "tmpfs", "source": "tmpfs", "options": options}
    if isinstance(mount, SecretMount):
        options = ["rbind", "ro", "nosuid", "nodev", "noexec", "rprivate"]
    elif isinstance(mount, BindMount | CacheMount):
        options = ["rbind", "ro" if mount.readonly else "rw", "rprivate"]
    else:  # pragma: no cover - the union is closed
        raise TypeError(f"unknown mount {mount!r}")
    return {
        "destination": mount.target,
        "type": "bind",
        "source": str(mount.source),
        "options": options,
    }


def _depth(target: str) -> int:
    return len(PurePosixPath(target).parts)


def _ordered(mounts: tuple[Mount, ...]) -> list[Mount]:
    # Parents before children, as Docker sorts them; stable for equal depth.
    return sorted(mounts, key=lambda m: _depth(m.target))


def mountpoints_to_stub(spec: ExecSpec) -> list[tuple[str, bool]]:
    """Mount targets (path, is_directory) that must exist in the rootfs itself.

    Targets nested inside an earlier mount (e.g. /dev/shm, or /cache/sub under
    a /cache bind) live on that mount, not in the rootfs, so they are skipped.
    """
    result: list[tuple[str, bool]] = [(t, True) for t in SYSTEM_MOUNT_TARGETS]
    result += [("/etc/hosts", False), ("/etc/resolv.conf", False)]
    taken = [t for t, _ in result]
    for mount in _ordered(spec.mounts):
        target = str(PurePosixPath(mount.target))
        if any(target == t or target.startswith(t.rstrip("/") + "/") for t in taken):
            continue
        if isinstance(mount, TmpfsMount):
            is_dir = True
        elif isinstance(mount, SecretMount):
            is_dir = False
        else:
            is_dir = mount.source.is_dir()
        result.append((target, is_dir))
        taken.append(target)
    return result


def rlimits(spec: ExecSpec, nofile: int) -> list[dict[str, Any]]:
    """Docker's RLIMIT_NOFILE, then the spec's ``--ulimit`` values (a nofile among them wins)."""
    limits = {"nofile": (nofile, nofile)}
    limits.update({u.name: (u.soft, u.hard) for u in spec.ulimits})
    # runc takes -1 as unlimited only through the unsigned maximum
    unlimited = 2**64 - 1
    return [
        {
            "type": f"RLIMIT_{name.upper()}",
            "soft": unlimited if soft < 0 else soft,
            "hard": unlimited if hard < 0 else hard,
        }
        for name, (soft, hard) in limits.items()
    ]


def _runtime_mounts(spec: ExecSpec, hosts_file: Path, resolv_file: Path) -> list[dict[str, Any]]:
    """Docker's system mounts (``/dev/shm`` sized by ``--shm-size``), /etc/hosts and
    /etc/resolv.conf, then the spec's own mounts, parents first."""
    mounts: list[dict[str, Any]] = [dict(m, options=list(m["options"])) for m in _SYSTEM_MOUNTS]
    if spec.shm_size is not None:
        shm = next(m for m in mounts if m["destination"] == "/dev/shm")
        sized = [o for o in shm["options"] if not o.startswith("size=")]
        shm["options"] = [*sized, f"size={spec.shm_size}"]
    for target, source in (("/etc/hosts", hosts_file), ("/etc/resolv.conf", resolv_file)):
        mounts.append(
            {
                "destination": target,
                "type": "bind",
                "source": str(source),
                "options": ["rbind", "rw", "rprivate"],
            }
        )
    mounts.extend(user_mount_config(m) for m in _ordered(spec.mounts))
    return mounts


def build_runtime_config(
    spec: ExecSpec,
    user: ResolvedUser,
    env: tuple[str, ...],
    *,
    hosts_file: Path,
    resolv_file: Path,
    nofile: int = DEFAULT_NOFILE,
) -> dict[str, Any]:
    """The config.json document for running ``spec`` with runc (OCI runtime spec 1.0.2)."""
    caps = list(host_capabilities() if spec.insecure else DEFAULT_CAPABILITIES)
    # Like Docker: a non-root user keeps the bounding set but no effective caps (insecure: every
    # set has them all, as BuildKit's WithInsecureSpec adds them to each)
    effective = caps if user.uid == 0 or spec.insecure else []
    namespaces: list[dict[str, str]] = [
        {"type": "pid"},
        {"type": "ipc"},
        {"type": "uts"},
        {"type": "mount"},
    ]
    if spec.network == "none":
        # runc brings up loopback in a network namespace it creates.
        namespaces.append({"type": "network"})
    mounts = _runtime_mounts(spec, hosts_file, resolv_file)
    config = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {
                "uid": user.uid,
                "gid": user.gid,
                "umask": DEFAULT_UMASK,
                "additionalGids": list(user.additional_gids),
            },
            "args": list(spec.args),
            "env": list(env),
            "cwd": spec.cwd,
            "capabilities": {
                "bounding": caps,
                "effective": effective,
                "permitted": effective,
            },
            "rlimits": rlimits(spec, nofile),
            "noNewPrivileges": False,
        },
        "root": {"path": str(spec.rootfs), "readonly": False},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            # No cgroupsPath: runc 1.1 then makes a cgroup named after the
            # container id under its own, on v1 and v2 alike, and removes it on delete.
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": namespaces,
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
    if spec.insecure:
        _make_insecure(config)
    return config


def _make_insecure(config: dict[str, Any]) -> None:
    """BuildKit v0.32.2's insecure mode (WithInsecureSpec, WithWriteableSysfs/Cgroupfs): no masked or
    read-only paths, /sys and its cgroupfs writable, character and block devices allowed, and the
    device nodes it adds that this host has. mason has no seccomp profile in any mode."""
    process, linux = config["process"], config["linux"]
    caps = process["capabilities"]
    caps["inheritable"] = caps["ambient"] = list(caps["bounding"])
    linux["maskedPaths"] = []
    linux["readonlyPaths"] = []
    linux["resources"]["devices"] = [
        {"allow": True, "type": "c", "access": "rwm"},
        {"allow": True, "type": "b", "access": "rwm"},
    ]
    linux["devices"] = [
        {
            "path": path,
            "type": kind,
            "major": major,
            "minor": minor,
            "fileMode": 0o666,
            "uid": 0,
            "gid": 0,
        }
        for path, kind, major, minor in INSECURE_DEVICES
        if os.path.exists(path)
    ]
    for m in config["mounts"]:
        if m["destination"] in ("/sys", "/sys/fs/cgroup"):
            m["options"] = ["rw" if o == "ro" else o for o in m["options"]]
