"""mason's registry client against the real CNCF registry: plain, TLS + basic auth, bearer tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.busybox import push_busybox
from tests.support.registry_server import RegistryServer, count_requests

from mason.digest import sha256_file
from mason.oci.manifest import ImageManifest
from mason.oci.reference import Reference
from mason.registry.auth import CredentialStore
from mason.registry.client import RegistryClient
from mason.registry.copy import RegistryEndpoint, copy_image
from mason.registry.errors import RegistryAuthError

VARIANTS = ["registry", "registry_tls_basic", "registry_token"]


def _client(server: RegistryServer, password: str | None = None) -> RegistryClient:
    creds = None
    if server.username:
        creds = CredentialStore.static({server.host: (server.username, password or server.password or "")})
    return RegistryClient(creds, ca_file=str(server.ca_file) if server.ca_file else None)


@pytest.mark.parametrize("variant", VARIANTS)
def test_push_pull_copy(variant: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    server: RegistryServer = request.getfixturevalue(variant)
    ref = Reference.parse(f"{server.host}/variants/busybox:{variant.replace('_', '-')}")
    with _client(server) as client:
        digest = push_busybox(client, ref, tmp_path / "build")
        manifest = client.get_manifest(ref)
        assert isinstance(manifest, ImageManifest) and manifest.digest == digest
        layer = manifest.layers[0]
        client.fetch_blob(ref, layer, tmp_path / "layer")
        assert sha256_file(str(tmp_path / "layer")) == (layer.digest, layer.size)
        target = Reference.parse(f"{server.host}/variants/copied:{variant.replace('_', '-')}")
        stats = copy_image(client, RegistryEndpoint(ref), RegistryEndpoint(target))
        assert stats.blobs_mounted == 2 and stats.blobs_uploaded == 0
        assert client.head_manifest(target) is not None
        assert variant.replace("_", "-") in client.list_tags(target)
    repo = "variants/copied"
    assert count_requests(server, "PUT", rf"^/v2/{repo}/blobs/uploads/") == 0


@pytest.mark.parametrize("variant", ["registry_tls_basic", "registry_token"])
def test_wrong_credentials_name_registry_and_its_message(variant: str, request: pytest.FixtureRequest) -> None:
    server: RegistryServer = request.getfixturevalue(variant)
    with _client(server, password="definitely-wrong") as client, pytest.raises(RegistryAuthError) as err:
        client.get_manifest(Reference.parse(f"{server.host}/variants/busybox:latest"))
    text = str(err.value)
    assert server.host in text
    assert "registry says:" in text and "UNAUTHORIZED" in text
    assert "definitely-wrong" not in text


def test_token_reuse_against_real_token_server(registry_token: RegistryServer, tmp_path: Path) -> None:
    assert registry_token.token_server is not None
    ref = Reference.parse(f"{registry_token.host}/reuse/busybox:latest")
    with _client(registry_token) as client:
        push_busybox(client, ref, tmp_path)
        for _ in range(3):
            client.get_manifest(ref)
        # one token for pull+push on the repo serves the whole push and later pulls
        assert client.token_requests == 1


def test_untrusted_tls_is_refused(registry_tls_basic: RegistryServer) -> None:
    creds = CredentialStore.static({registry_tls_basic.host: ("mason", registry_tls_basic.password or "")})
    with RegistryClient(creds) as client, pytest.raises(Exception) as err:
        client.get_manifest(Reference.parse(f"{registry_tls_basic.host}/variants/busybox:latest"))
    assert "not trusted" in str(err.value) or "CERTIFICATE" in str(err.value)
