"""What both executors do in the rootfs before a run and undo after it."""

from __future__ import annotations

import shutil
from pathlib import Path

from mason.executor.rootfs import MountStubs, ensure_directory
from mason.executor.runtime_spec import mountpoints_to_stub
from mason.executor.types import ExecSpec, ExecutorError
from mason.executor.users import ResolvedUser, resolve_user
from mason.structs import Struct

__all__ = ["PreparedRun", "hosts_file_content", "prepare_run", "process_env"]


class PreparedRun(Struct):
    user: ResolvedUser
    env: tuple[str, ...]
    hosts_file: Path
    resolv_file: Path
    stubs: MountStubs


def hosts_file_content(hostname: str, extra_hosts: tuple[tuple[str, str], ...] = ()) -> str:
    base = f"127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    return base + "".join(f"{address}\t{name}\n" for name, address in extra_hosts)


def process_env(env: tuple[str, ...], user: ResolvedUser) -> tuple[str, ...]:
    """The spec's env with HOME added from /etc/passwd when the spec has none."""
    if any(e.startswith("HOME=") for e in env):
        return env
    return (*env, f"HOME={user.home}")


def prepare_run(spec: ExecSpec, scratch: Path, host_resolv_conf: Path) -> PreparedRun:
    """Resolve the user, create cwd and mountpoints, write hosts and resolv.conf.

    Call ``stubs.remove()`` on the result once the sandbox is gone.
    """
    if not spec.rootfs.is_dir():
        raise ExecutorError(f"rootfs {spec.rootfs} is not a directory")
    for mount in spec.mounts:
        source = getattr(mount, "source", None)
        if source is not None and not source.exists():
            raise ExecutorError(f"mount source {source} for {mount.target} does not exist")
    user = resolve_user(spec.rootfs, spec.user)
    ensure_directory(spec.rootfs, spec.cwd, user.uid, user.gid)
    hosts_file = scratch / "hosts"
    hosts_file.write_text(hosts_file_content(spec.hostname, spec.extra_hosts), encoding="utf-8")
    resolv_file = scratch / "resolv.conf"
    try:
        shutil.copyfile(host_resolv_conf, resolv_file)
    except FileNotFoundError:
        resolv_file.write_text("", encoding="utf-8")
    resolv_file.chmod(0o644)
    hosts_file.chmod(0o644)
    stubs = MountStubs(spec.rootfs)
    try:
        for target, is_dir in mountpoints_to_stub(spec):
            stubs.ensure(target, directory=is_dir)
    except BaseException:
        stubs.remove()
        raise
    return PreparedRun(
        user=user,
        env=process_env(spec.env, user),
        hosts_file=hosts_file,
        resolv_file=resolv_file,
        stubs=stubs,
    )
