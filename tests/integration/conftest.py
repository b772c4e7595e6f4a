"""Fixtures for integration tests: the real CNCF registry (three variants) and a busybox base image.

Registries start once per session on free 127.0.0.1 ports and are stopped (by their PID)
when the session ends. Helpers live in ``tests.support`` so benches and scripts reuse them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.sandbox_helpers import BUSYBOX, GROUP, PASSWD, make_executor
from tests.support.cachebuild import Builder, copy_context
from tests.support.registry_server import RegistryServer, registry_available, start_registry

from mason.executor import Executor, RuncExecutor


def _start(tmp_path_factory: pytest.TempPathFactory, variant: str) -> Iterator[RegistryServer]:
    if not registry_available():
        pytest.skip("docker-registry is not installed (bash scripts/setup.sh installs it)")
    server = start_registry(tmp_path_factory.mktemp(f"registry-{variant}"), variant)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Plain-HTTP registry, no auth."""
    yield from _start(tmp_path_factory, "plain")


@pytest.fixture(scope="session")
def placeholder_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Plain-HTTP registry, no auth, for documents whose layer blobs are placeholders
    (``seed_placeholder_blob``): a registry stores a blob once for all repositories, so a
    placeholder in the shared ``registry`` would stand in for the real blob of that digest
    (the golden busybox layer) in every later test's pull."""
    yield from _start(tmp_path_factory, "plain")


@pytest.fixture(scope="session")
def registry_tls_basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """HTTPS (own CA: ``.ca_file``) with htpasswd basic auth (``.username``/``.password``)."""
    yield from _start(tmp_path_factory, "tls-basic")


@pytest.fixture(scope="session")
def registry_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Plain HTTP with bearer-token auth from a test token server."""
    yield from _start(tmp_path_factory, "token")


@pytest.fixture(scope="session")
def busybox_image(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``127.0.0.1:PORT/base/busybox:latest``, built from busybox-static and pushed with mason's client."""
    from tests.support.busybox import BUSYBOX, push_busybox

    from mason.registry.client import RegistryClient

    if not Path(BUSYBOX).exists():
        pytest.skip("busybox-static is not installed (bash scripts/setup.sh installs it)")
    ref = f"{registry.host}/base/busybox:latest"
    with RegistryClient() as client:
        push_busybox(client, ref, tmp_path_factory.mktemp("busybox"))
    return ref


# -- cache builds through the CLI (test_remote_cache and the modules beside it) -------------


@pytest.fixture
def build(tmp_path: Path, busybox_image: str) -> Builder:
    """Runs ``mason build`` with ``BASE=<busybox>``, each call on a fresh ``$MASON_ROOT``."""
    return Builder(tmp_path, busybox_image)


@pytest.fixture
def multistage(tmp_path: Path) -> Path:
    return copy_context("multistage", tmp_path)


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return copy_context("small", tmp_path)


@pytest.fixture
def reg(registry: RegistryServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A registry prefix unique to the test: ``127.0.0.1:PORT/<test name>``."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    yield f"{registry.host}/{name}"


# -- sandboxes (test_executor, test_security_secrets) ------------------------------


@pytest.fixture(scope="module")
def rootfs_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("busybox") / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, check=True, text=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    return root


@pytest.fixture
def rootfs(rootfs_template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    shutil.copytree(rootfs_template, root, symlinks=True)
    return root


@pytest.fixture(scope="module")
def runc_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runc-state")


@pytest.fixture(params=["runc", "chroot"])
def executor(
    request: pytest.FixtureRequest, runc_state: Path, tmp_path: Path
) -> Iterator[Executor]:
    ex = make_executor(request.param, runc_state, tmp_path / "work")
    yield ex
    if isinstance(ex, RuncExecutor):
        assert ex.list_containers() == []
    # Bundles and scratch dirs are always removed.
    assert not (tmp_path / "work").exists() or os.listdir(tmp_path / "work") == []


@pytest.fixture
def runc_executor(runc_state: Path, tmp_path: Path) -> RuncExecutor:
    ex = make_executor("runc", runc_state, tmp_path / "work")
    assert isinstance(ex, RuncExecutor)
    return ex
