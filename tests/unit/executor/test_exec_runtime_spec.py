"""config.json generation: namespaces, capabilities, mounts, user, env — no runc needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.executor.spec_helpers import APP, by_destination, config_for, spec_with

from mason.executor import (
    DEFAULT_CAPABILITIES,
    MASKED_PATHS,
    READONLY_PATHS,
    BindMount,
    CacheMount,
    SecretMount,
    TmpfsMount,
)
from mason.executor.prepare import hosts_file_content, process_env
from mason.executor.runtime_spec import mountpoints_to_stub


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        ("default", ["ipc", "mount", "pid", "uts"]),
        ("host", ["ipc", "mount", "pid", "uts"]),
        ("none", ["ipc", "mount", "network", "pid", "uts"]),
    ],
)
def test_namespaces_per_network_mode(network: str, expected: list[str]) -> None:
    config = config_for(spec_with(network=network))
    assert sorted(ns["type"] for ns in config["linux"]["namespaces"]) == expected
    # New namespaces only: no path would join an existing one.
    assert all("path" not in ns for ns in config["linux"]["namespaces"])


def test_process_section() -> None:
    spec = spec_with(env=("PATH=/bin", "A=b c"), cwd="/src", hostname="builder")
    config = config_for(spec, APP, env=(*spec.env, "HOME=/home/app"))
    process = config["process"]
    assert process["args"] == ["sh", "-c", "make"]
    assert process["env"] == ["PATH=/bin", "A=b c", "HOME=/home/app"]
    assert process["cwd"] == "/src"
    assert process["terminal"] is False
    assert process["user"] == {
        "uid": 1000,
        "gid": 1000,
        "umask": 0o022,
        "additionalGids": [10, 2000],
    }
    assert process["noNewPrivileges"] is False
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}]
    assert config["hostname"] == "builder"
    assert config["root"] == {"path": "/snap/rootfs", "readonly": False}


def test_capabilities_are_dockers_default_set() -> None:
    caps = config_for(spec_with())["process"]["capabilities"]
    assert caps["bounding"] == list(DEFAULT_CAPABILITIES)
    assert caps["effective"] == caps["permitted"] == list(DEFAULT_CAPABILITIES)
    assert len(DEFAULT_CAPABILITIES) == 14
    assert "CAP_SYS_ADMIN" not in DEFAULT_CAPABILITIES
    assert "CAP_NET_ADMIN" not in DEFAULT_CAPABILITIES
    assert "ambient" not in caps and "inheritable" not in caps


def test_non_root_user_has_no_effective_capabilities() -> None:
    caps = config_for(spec_with(), APP)["process"]["capabilities"]
    assert caps["bounding"] == list(DEFAULT_CAPABILITIES)
    assert caps["effective"] == caps["permitted"] == []


def test_system_mounts() -> None:
    mounts = by_destination(config_for(spec_with()))
    assert mounts["/proc"]["type"] == "proc"
    assert mounts["/dev"]["type"] == "tmpfs"
    assert "mode=755" in mounts["/dev"]["options"]
    assert mounts["/dev/pts"]["type"] == "devpts"
    assert "newinstance" in mounts["/dev/pts"]["options"]
    assert mounts["/dev/shm"]["type"] == "tmpfs"
    assert mounts["/dev/mqueue"]["type"] == "mqueue"
    assert mounts["/sys"]["type"] == "sysfs"
    assert "ro" in mounts["/sys"]["options"]
    assert "ro" in mounts["/sys/fs/cgroup"]["options"]
    assert mounts["/etc/hosts"]["source"] == "/bundle/hosts"
    assert mounts["/etc/resolv.conf"]["source"] == "/bundle/resolv.conf"


def test_linux_section_masks_like_docker_and_leaves_cgroups_to_runc() -> None:
    linux = config_for(spec_with())["linux"]
    assert linux["maskedPaths"] == list(MASKED_PATHS)
    assert linux["readonlyPaths"] == list(READONLY_PATHS)
    assert "/proc/kcore" in linux["maskedPaths"]
    assert "/proc/sys" in linux["readonlyPaths"]
    assert "cgroupsPath" not in linux
    assert linux["resources"]["devices"] == [{"allow": False, "access": "rwm"}]


def test_user_mounts_typed_and_ordered_parents_first() -> None:
    spec = spec_with(
        mounts=(
            BindMount(Path("/ctx/sub"), "/src/sub", readonly=True),
            BindMount(Path("/ctx"), "/src"),
            TmpfsMount("/tmp", size=1 << 20),
            CacheMount(Path("/root/.cache/mason/c1"), "/root/.cache"),
            SecretMount(Path("/run/mason/secret-1"), "/run/secrets/token"),
        )
    )
    config = config_for(spec)
    user = config["mounts"][-5:]
    assert [m["destination"] for m in user] == [
        "/src",
        "/tmp",
        "/src/sub",
        "/root/.cache",
        "/run/secrets/token",
    ]
    mounts = by_destination(config)
    assert mounts["/src"] == {
        "destination": "/src",
        "type": "bind",
        "source": "/ctx",
        "options": ["rbind", "rw", "rprivate"],
    }
    assert "ro" in mounts["/src/sub"]["options"]
    assert mounts["/tmp"]["type"] == "tmpfs"
    assert f"size={1 << 20}" in mounts["/tmp"]["options"]
    assert mounts["/root/.cache"]["source"] == "/root/.cache/mason/c1"
    assert "rw" in mounts["/root/.cache"]["options"]
    secret = mounts["/run/secrets/token"]
    assert secret["type"] == "bind"
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(secret["options"])


def test_mountpoints_to_stub_skips_nested_targets(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    secret = tmp_path / "secret"
    secret.write_text("s")
    spec = spec_with(
        mounts=(
            BindMount(tmp_path / "ctx", "/src"),
            BindMount(tmp_path / "ctx", "/src/inner"),
            TmpfsMount("/dev/extra"),
            SecretMount(secret, "/run/secrets/token"),
        )
    )
    assert mountpoints_to_stub(spec) == [
        ("/proc", True),
        ("/dev", True),
        ("/sys", True),
        ("/etc/hosts", False),
        ("/etc/resolv.conf", False),
        ("/src", True),
        ("/run/secrets/token", False),
    ]


def test_hosts_file_and_home() -> None:
    hosts = hosts_file_content("builder")
    assert "127.0.0.1\tlocalhost builder\n" in hosts
    assert "::1\tlocalhost" in hosts
    assert process_env(("PATH=/bin",), APP) == ("PATH=/bin", "HOME=/home/app")
    assert process_env(("HOME=/custom",), APP) == ("HOME=/custom",)
