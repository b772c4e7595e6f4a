"""Real sandboxes: runc and the unshare+chroot fallback on a busybox rootfs.

Needs root, runc and busybox-static (/bin/busybox); skipped otherwise (which
fails CI under MASON_REQUIRE_INTEGRATION=1).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from tests.integration.sandbox_helpers import BUSYBOX, sh

from mason.executor import (
    DEFAULT_CAPABILITIES,
    MASKED_PATHS,
    BindMount,
    ChrootExecutor,
    ExecCancelledError,
    ExecSpec,
    ExecTimeoutError,
    Executor,
    ExitStatus,
    RuncExecutor,
    SecretMount,
    TmpfsMount,
    UserResolutionError,
    choose_executor,
)

# Linux capability numbers, to check the bounding set the kernel reports.
CAP_NUMBERS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5,
    "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
}  # fmt: skip

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root"),
    pytest.mark.skipif(not BUSYBOX.exists(), reason="busybox-static is not installed"),
]


def test_exit_codes_and_merged_output(executor: Executor, rootfs: Path) -> None:
    status, out = sh(executor, rootfs, "echo to-out; echo to-err >&2; exit 7")
    assert (status.code, status.signal, status.ok) == (7, None, False)
    # runc copies the two streams with separate goroutines, so only the
    # order within each stream is kept.
    assert sorted(out.splitlines()) == ["to-err", "to-out"]
    assert sorted(status.last_lines) == ["to-err", "to-out"]
    assert sh(executor, rootfs, "true")[0].ok


def test_killed_by_signal(executor: Executor, rootfs: Path) -> None:
    # The sandbox's init ignores signals from inside its pid namespace, so a
    # child dies; like a shell, its 128+N status reads as signal N.
    status, _ = sh(executor, rootfs, "sh -c 'kill -9 $$'; exit $?")
    assert status.signal == 9
    assert status.code == 137


def test_missing_command_is_a_start_error(executor: Executor, rootfs: Path) -> None:
    status = executor.run(ExecSpec(rootfs=rootfs, args=("/no/such/tool",)), lambda _: None)
    assert not status.ok
    assert status.error is not None
    assert "/no/such/tool" in status.error


def test_output_is_streamed_while_running(executor: Executor, rootfs: Path, tmp_path: Path) -> None:
    # The command waits for a file that the callback creates when it sees
    # "waiting": this only finishes if output arrives while the process runs.
    sync = tmp_path / "sync"
    sync.mkdir()

    def on_output(data: bytes) -> None:
        if b"waiting" in data:
            (sync / "go").write_text("")

    spec = ExecSpec(
        rootfs=rootfs,
        args=(
            "/bin/sh",
            "-c",
            "echo waiting; while [ ! -e /sync/go ]; do sleep 0.05; done; echo done",
        ),
        mounts=(BindMount(sync, "/sync"),),
    )
    status = executor.run(spec, on_output, timeout=60)
    assert status.ok
    assert status.last_lines == ("waiting", "done")


def test_user_switching_and_groups(executor: Executor, rootfs: Path) -> None:
    status, out = sh(executor, rootfs, "id -u; id -g; id -G; echo $HOME", user="app")
    assert status.ok
    assert out.split("\n")[:4] == ["1000", "1000", "1000 2000 2001", "/home/app"]
    status, out = sh(executor, rootfs, "id -u; id -g; id -G", user="4242:4343")
    assert out.split() == ["4242", "4343", "4343"]
    status, out = sh(executor, rootfs, "id -u; id -G", user="app:readers")
    assert out.split() == ["1000", "2001"]
    with pytest.raises(UserResolutionError, match="ghost"):
        sh(executor, rootfs, "true", user="ghost")


def test_cwd_created_and_owned_by_user(executor: Executor, rootfs: Path) -> None:
    status, out = sh(executor, rootfs, "pwd; touch mine", user="app", cwd="/work/deep/dir")
    assert status.ok
    assert out.strip() == "/work/deep/dir"
    created = rootfs / "work/deep/dir"
    assert created.is_dir()
    assert (created.stat().st_uid, created.stat().st_gid) == (1000, 1000)
    assert (rootfs / "work").stat().st_uid == 1000
    assert (created / "mine").stat().st_uid == 1000


def interfaces(proc_net_dev: str) -> set[str]:
    return {line.split(":")[0].strip() for line in proc_net_dev.splitlines()[2:] if ":" in line}


def test_network_none_has_only_loopback_up(executor: Executor, rootfs: Path) -> None:
    status, out = sh(
        executor, rootfs, "cat /proc/net/dev; echo ---; ip link show lo", network="none"
    )
    assert status.ok
    net_dev, link = out.split("---")
    assert interfaces(net_dev) == {"lo"}
    assert "UP" in link.split("<")[1].split(">")[0].split(",")


def test_network_default_shares_host_namespace(executor: Executor, rootfs: Path) -> None:
    status, out = sh(executor, rootfs, "cat /proc/net/dev", network="default")
    assert status.ok
    assert interfaces(out) == interfaces(Path("/proc/net/dev").read_text())


def test_env_hostname_and_hosts(executor: Executor, rootfs: Path) -> None:
    status, out = sh(
        executor,
        rootfs,
        'echo "$GREETING"; hostname; grep -c "localhost sandbox-7" /etc/hosts; echo $HOME',
        env=("PATH=/bin", "GREETING=hello world"),
        hostname="sandbox-7",
    )
    assert status.ok
    assert out.splitlines() == ["hello world", "sandbox-7", "1", "/root"]
    host_resolv = Path("/etc/resolv.conf")
    if host_resolv.exists():
        status, out = sh(executor, rootfs, "cat /etc/resolv.conf")
        assert out == host_resolv.read_text()


def test_bind_mounts_readonly_and_readwrite(
    executor: Executor, rootfs: Path, tmp_path: Path
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "input.txt").write_text("from the host\n")
    rw = tmp_path / "rw"
    rw.mkdir()
    status, out = sh(
        executor,
        rootfs,
        "cat /in/input.txt; touch /in/nope 2>/dev/null && echo writable; echo made > /out/result",
        mounts=(BindMount(ro, "/in", readonly=True), BindMount(rw, "/out")),
    )
    assert status.ok
    assert out.splitlines() == ["from the host"]
    assert (rw / "result").read_text() == "made\n"
    assert not (ro / "nope").exists()
    # Mountpoints created for the run are gone from the rootfs.
    assert not (rootfs / "in").exists() and not (rootfs / "out").exists()


def test_tmpfs_mount(executor: Executor, rootfs: Path) -> None:
    status, out = sh(
        executor,
        rootfs,
        "grep ' /scratch ' /proc/mounts; echo data > /scratch/file; cat /scratch/file",
        mounts=(TmpfsMount("/scratch", size=4 << 20),),
    )
    assert status.ok
    mount_line, data = out.splitlines()
    assert mount_line.split()[2] == "tmpfs"
    assert "size=4096k" in mount_line
    assert data == "data"
    assert not (rootfs / "scratch").exists()


def test_secret_readable_but_never_left_in_rootfs(
    executor: Executor, rootfs: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secrets/token"
    secret.parent.mkdir()
    secret.write_text("t0ps3cret")
    before = sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*"))
    status, out = sh(
        executor,
        rootfs,
        "cat /run/secrets/token; echo; (echo x > /run/secrets/token) 2>/dev/null && echo writable; true",
        mounts=(SecretMount(secret, "/run/secrets/token"),),
    )
    assert status.ok
    assert out.splitlines() == ["t0ps3cret"]
    assert secret.read_text() == "t0ps3cret"
    after = sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*"))
    assert after == before
    assert not (rootfs / "run").exists()


def test_no_stubs_left_for_system_mounts(executor: Executor, rootfs: Path) -> None:
    before = sorted(os.listdir(rootfs))
    status, out = sh(executor, rootfs, "ls /dev; cat /dev/null; head -c 4 /dev/zero | wc -c")
    assert status.ok
    listing = out.split()
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm"} <= set(listing)
    assert listing[-1] == "4"
    assert sorted(os.listdir(rootfs)) == before  # no /proc, /dev, /sys, /etc/hosts stubs


def test_capability_bounding_set_is_dockers(executor: Executor, rootfs: Path) -> None:
    status, out = sh(executor, rootfs, "grep CapBnd /proc/self/status")
    assert status.ok
    expected = sum(1 << CAP_NUMBERS[c] for c in DEFAULT_CAPABILITIES)
    assert int(out.split()[1], 16) == expected


def find_processes(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if token.encode() in cmdline:
                found.append(int(entry))
    return found


def test_cancel_kills_everything(executor: Executor, rootfs: Path) -> None:
    token = f"{uuid.uuid4().int % 10**6}.5"  # a unique sleep duration to find the process by
    cancel = threading.Event()

    def on_output(data: bytes) -> None:
        if b"started" in data:
            cancel.set()

    spec = ExecSpec(
        rootfs=rootfs,
        args=("/bin/sh", "-c", f"sleep {token} & echo started; wait"),
    )
    with pytest.raises(ExecCancelledError) as info:
        executor.run(spec, on_output, cancel=cancel)
    assert "started" in info.value.context
    assert find_processes(f"sleep\0{token}") == []


def test_timeout_kills(executor: Executor, rootfs: Path) -> None:
    token = f"{uuid.uuid4().int % 10**6}.25"
    spec = ExecSpec(rootfs=rootfs, args=("/bin/sleep", token))
    with pytest.raises(ExecTimeoutError):
        executor.run(spec, lambda _: None, timeout=1.0)
    assert find_processes(f"sleep\0{token}") == []


def test_keyboard_interrupt_cleans_up(executor: Executor, rootfs: Path) -> None:
    token = f"{uuid.uuid4().int % 10**6}.75"

    def on_output(data: bytes) -> None:
        raise KeyboardInterrupt

    spec = ExecSpec(rootfs=rootfs, args=("/bin/sh", "-c", f"echo go; exec sleep {token}"))
    with pytest.raises(KeyboardInterrupt):
        executor.run(spec, on_output)
    assert find_processes(f"sleep\0{token}") == []


def test_masks_and_readonly_paths(executor: Executor, rootfs: Path) -> None:
    # Mask only the /proc files this kernel has (a VM kernel may lack kcore).
    masked = [
        p
        for p in MASKED_PATHS
        if p.startswith("/proc/") and Path(p).is_file() and Path(p).read_bytes()
    ]
    if not masked:
        pytest.skip("none of Docker's masked /proc files has content on this kernel")
    status, out = sh(
        executor,
        rootfs,
        f"wc -c < {masked[0]}; (echo 1 > /proc/sys/kernel/domainname) 2>/dev/null && echo wrote; "
        "(touch /sys/x) 2>/dev/null && echo wrote; echo end",
    )
    assert status.ok
    assert out.split() == ["0", "end"]


def test_runc_cancel_leaves_no_container(runc_executor: RuncExecutor, rootfs: Path) -> None:
    cancel = threading.Event()
    seen: list[str] = []

    def on_output(data: bytes) -> None:
        seen.extend(runc_executor.list_containers())
        cancel.set()

    with pytest.raises(ExecCancelledError):
        runc_executor.run(
            ExecSpec(rootfs=rootfs, args=("/bin/sh", "-c", "echo up; exec sleep 600")),
            on_output,
            cancel=cancel,
        )
    assert len(seen) == 1 and seen[0].startswith("mason-")
    assert runc_executor.list_containers() == []
    result = subprocess.run(
        ["runc", "--root", str(runc_executor.state_dir), "list", "-q"],
        capture_output=True,
        text=True,
    )
    assert result.stdout.strip() == ""


def test_choose_executor_prefers_working_runc(tmp_path: Path) -> None:
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    chosen = choose_executor(state_dir=tmp_path / "state", work_dir=tmp_path / "work")
    assert isinstance(chosen, RuncExecutor)
    fallback = choose_executor(state_dir=tmp_path / "state", runc="no-such-runc-binary")
    assert isinstance(fallback, ChrootExecutor)


def test_overlay_rootfs_upper_gets_only_real_changes(
    executor: Executor, rootfs_template: Path, tmp_path: Path
) -> None:
    # The snapshotter hands executors an overlay mount: what the command
    # writes lands in upper, and mountpoint stubs must not.
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "ovl-work", "merged"))
    shutil.copytree(rootfs_template, lower, symlinks=True)
    for d in (upper, work, merged):
        d.mkdir()
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)]).returncode:
        pytest.skip("overlayfs is not available here")
    try:
        status, out = sh(executor, merged, "echo hi > /created; cat /created", cwd="/app")
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    assert status.ok and out == "hi\n"
    files = {str(p.relative_to(upper)) for p in upper.rglob("*") if not p.is_dir()}
    assert files == {"created"}
    assert (upper / "app").is_dir()
    assert not any((upper / n).exists() for n in ("proc", "dev", "sys", "etc/hosts"))


def test_parallel_runs_are_independent(
    executor: Executor, rootfs_template: Path, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    roots = []
    for i in range(4):
        root = tmp_path / f"rootfs{i}"
        shutil.copytree(rootfs_template, root, symlinks=True)
        roots.append(root)

    def one(i: int) -> tuple[ExitStatus, str]:
        return sh(executor, roots[i], f"hostname; exit {i}", hostname=f"host{i}")

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    assert [(s.code, out.strip()) for s, out in results] == [(i, f"host{i}") for i in range(4)]


def test_device_nodes_made_in_the_sandbox_are_dead(executor: Executor, rootfs: Path) -> None:
    # runc denies them by the device cgroup, the chroot sandbox by nodev mounts: a RUN with
    # CAP_MKNOD (Docker's default set) must not open a host device through a node it makes.
    # /dev/fuse (10:229) needs no capability to open and is not on runc's allow list;
    # ``count=0`` reads nothing.
    if not Path("/dev/fuse").is_char_device():
        pytest.skip("no /dev/fuse on this machine to try")
    script = (
        "mkdir -p /tmp; for d in /n /dev/n /tmp/n; do mknod $d c 10 229 && "
        "((dd if=$d of=/dev/null count=0 2>/dev/null && echo open) || echo denied); done; "
        "echo x > /dev/null && echo ok"
    )
    status, out = sh(executor, rootfs, script)
    assert status.ok, out
    assert out.split() == ["denied", "denied", "denied", "ok"]


_ESCAPE = """
import os
os.mkdir("/esc")
os.chroot("/esc")            # the cwd stays outside the new root
for _ in range(64):
    os.chdir("..")
os.chroot(".")               # a plain chroot sandbox now has the host's / again
print("escaped" if os.path.exists(MARKER) else "contained")
"""


def test_a_chroot_escape_finds_no_host(executor: Executor, rootfs: Path, tmp_path: Path) -> None:
    # the classic double-chroot escape, run by the host's own Python (its /usr bound read-only):
    # Docker's default capabilities include CAP_SYS_CHROOT
    python = Path("/usr/bin/python3")
    if not python.exists():
        pytest.skip("no /usr/bin/python3 on this machine to run the escape with")
    marker = tmp_path / "host-marker"
    marker.write_text("host")
    (rootfs / "usr").mkdir(exist_ok=True)
    for link in ("lib", "lib64"):
        if not os.path.lexists(rootfs / link):
            os.symlink(f"usr/{link}", rootfs / link)
    spec = ExecSpec(
        rootfs=rootfs,
        args=(str(python), "-c", f"MARKER={str(marker)!r}\n" + _ESCAPE),
        env=("PATH=/bin",),
        mounts=(BindMount(Path("/usr"), "/usr", readonly=True),),
    )
    chunks: list[bytes] = []
    status = executor.run(spec, chunks.append)
    out = b"".join(chunks).decode()
    assert status.ok, out
    assert out.split() == ["contained"]
