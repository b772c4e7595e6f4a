"""Issue 13, defect 5: plain-HTTP registries that are not on loopback, and pull-through
mirrors, from containers-registries.conf(5) and buildx's ``registry.insecure=true``.

The "LAN" registry runs inside a network namespace the test makes (iproute2), on an address
of a veth pair that exists only for the test; nothing leaves the machine."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.busybox import push_busybox
from tests.support.cli import mason_build
from tests.support.registry_server import RegistryServer, start_registry

from mason.registry.client import RegistryClient

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and builds need root")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def lan_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A plain-HTTP registry on 10.213.N.2:5000 inside a namespace; the host side is 10.213.N.1."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2 is not installed (bash scripts/setup.sh test installs it)")
    tag = secrets.token_hex(3)
    ns, host_if, ns_if = f"masonlan{tag}", f"mlh{tag}", f"mln{tag}"
    subnet = f"10.213.{int(tag[:2], 16)}"
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", ns)
        _ip("addr", "add", f"{subnet}.1/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("netns", "exec", ns, "ip", "addr", "add", f"{subnet}.2/30", "dev", ns_if)
        _ip("netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        server = start_registry(tmp_path_factory.mktemp("lan"), address=f"{subnet}.2", netns=ns)
        try:
            yield server
        finally:
            server.stop()
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _mason(
    tmp_path: Path, *args: str, conf: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return mason_build(
        tmp_path / "root", *args, env={"CONTAINERS_REGISTRIES_CONF": str(conf or "/nonexistent")}
    )


def _context(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


def test_a_lan_registry_needs_marking_insecure(
    lan_registry: RegistryServer, tmp_path: Path
) -> None:
    ctx = _context(tmp_path, "FROM scratch\nCOPY Dockerfile /\n")
    name = f"{lan_registry.host}/lan/app:1"
    refused = _mason(tmp_path, "--push", "-t", name, str(ctx))
    assert refused.returncode == 1
    assert "registries.conf" in refused.stderr and "registry.insecure=true" in refused.stderr

    conf = tmp_path / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{lan_registry.host}"\ninsecure = true\n')
    assert _mason(tmp_path, "--push", "-t", name, str(ctx), conf=conf).returncode == 0
    attr = _mason(
        tmp_path,
        "-o",
        f"type=image,name={lan_registry.host}/lan/app:2,push=true,registry.insecure=true",
        str(ctx),
    )
    assert attr.returncode == 0, attr.stderr
    blocked = tmp_path / "blocked.conf"
    blocked.write_text(
        f'[[registry]]\nlocation = "{lan_registry.host}"\ninsecure = true\nblocked = true\n'
    )
    refused = _mason(tmp_path, "--push", "-t", name, str(ctx), conf=blocked)
    assert refused.returncode == 1 and "is blocked in" in refused.stderr


def test_a_mirror_serves_what_the_upstream_lacks(
    lan_registry: RegistryServer, registry: RegistryServer, tmp_path: Path
) -> None:
    # the base image exists only on the mirror (the loopback registry), under a path prefix
    with RegistryClient() as client:
        push_busybox(client, f"{registry.host}/mirror-of/base/busybox:latest")
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f'[[registry]]\nprefix = "{lan_registry.host}"\nlocation = "{lan_registry.host}"\n'
        f'insecure = true\n[[registry.mirror]]\nlocation = "{registry.host}/mirror-of"\n'
    )
    ctx = _context(
        tmp_path, f"FROM {lan_registry.host}/base/busybox:latest\nRUN echo mirrored > /m\n"
    )
    out = tmp_path / "out"
    proc = _mason(tmp_path, "-o", f"type=local,dest={out}", str(ctx), conf=conf)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "m").read_text() == "mirrored\n"
    without = _mason(tmp_path, "-o", f"type=local,dest={tmp_path / 'out2'}", str(ctx), conf=None)
    assert without.returncode != 0  # the upstream itself has no such image (and is not insecure)
