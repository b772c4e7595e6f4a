"""mason's registry client against the real CNCF registry: plain, TLS + basic auth, bearer tokens."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from tests.support.busybox import push_busybox
from tests.support.registry_server import RegistryServer, count_requests, free_port

from mason.digest import sha256_bytes, sha256_file
from mason.oci.descriptor import Descriptor
from mason.oci.manifest import ImageManifest
from mason.oci.reference import Reference
from mason.registry.auth import CredentialStore
from mason.registry.client import RegistryClient
from mason.registry.copy import RegistryEndpoint, copy_image
from mason.registry.errors import RegistryAuthError, RegistryError

VARIANTS = ["registry", "registry_tls_basic", "registry_token"]


def _client(server: RegistryServer, password: str | None = None) -> RegistryClient:
    creds = None
    if server.username:
        creds = CredentialStore.static(
            {server.host: (server.username, password or server.password or "")}
        )
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
def test_wrong_credentials_name_registry_and_its_message(
    variant: str, request: pytest.FixtureRequest
) -> None:
    server: RegistryServer = request.getfixturevalue(variant)
    with (
        _client(server, password="definitely-wrong") as client,
        pytest.raises(RegistryAuthError) as err,
    ):
        client.get_manifest(Reference.parse(f"{server.host}/variants/busybox:latest"))
    text = str(err.value)
    assert server.host in text
    assert "registry says:" in text and "UNAUTHORIZED" in text
    assert "definitely-wrong" not in text


def test_token_reuse_against_real_token_server(
    registry_token: RegistryServer, tmp_path: Path
) -> None:
    assert registry_token.token_server is not None
    ref = Reference.parse(f"{registry_token.host}/reuse/busybox:latest")
    with _client(registry_token) as client:
        push_busybox(client, ref, tmp_path)
        for _ in range(3):
            client.get_manifest(ref)
        # one token for pull+push on the repo serves the whole push and later pulls
        assert client.token_requests == 1


def test_untrusted_tls_is_refused(registry_tls_basic: RegistryServer) -> None:
    creds = CredentialStore.static(
        {registry_tls_basic.host: ("mason", registry_tls_basic.password or "")}
    )
    with RegistryClient(creds) as client, pytest.raises(Exception) as err:
        client.get_manifest(Reference.parse(f"{registry_tls_basic.host}/variants/busybox:latest"))
    assert "not trusted" in str(err.value) or "CERTIFICATE" in str(err.value)


def test_declined_mount_uploads_in_the_session_the_real_registry_opened(
    registry: RegistryServer,
) -> None:
    """distribution answers a mount whose source repository lacks the blob with 202 and an
    upload session (as registries without cross-repo mount do): the blob goes up in it."""
    data = os.urandom(50_000)
    desc = Descriptor("application/octet-stream", sha256_bytes(data), len(data))
    with RegistryClient() as client:
        source = Reference.parse(f"{registry.host}/mounts/source")
        assert client.push_blob_outcome(source, desc, lambda: io.BytesIO(data)) == "uploaded"
        target = Reference.parse(f"{registry.host}/mounts/declined")
        assert not client.mount_blob(target, desc.digest, "mounts/nowhere")  # session cancelled
        outcome = client.push_blob_outcome(
            target, desc, lambda: io.BytesIO(data), mount_from="mounts/nowhere"
        )
        assert outcome == "uploaded"
        with client.open_blob(target, desc) as stream:
            assert stream.read() == data
        mounted = Reference.parse(f"{registry.host}/mounts/mounted")
        assert (
            client.push_blob_outcome(
                mounted, desc, lambda: io.BytesIO(data), mount_from="mounts/source"
            )
            == "mounted"
        )
    # one POST (the mount attempt) opened the session the upload used
    assert count_requests(registry, "POST", r"^/v2/mounts/declined/blobs/uploads/\?.*mount=") == 2
    assert count_requests(registry, "POST", r"^/v2/mounts/declined/blobs/uploads/$") == 0
    assert count_requests(registry, "PUT", r"^/v2/mounts/declined/blobs/uploads/") == 1


def test_chunked_upload_against_the_real_registry(registry: RegistryServer) -> None:
    data = os.urandom(300_000)
    desc = Descriptor("application/octet-stream", sha256_bytes(data), len(data))
    ref = Reference.parse(f"{registry.host}/chunks/blob")
    with RegistryClient(chunk_threshold=100_000, chunk_size=128 * 1024) as client:
        assert client.push_blob(ref, desc, lambda: io.BytesIO(data))
        with client.open_blob(ref, desc) as stream:
            assert stream.read() == data
    assert count_requests(registry, "PATCH", r"^/v2/chunks/blob/blobs/uploads/") == 3


def test_unreachable_registry_fails_at_once_without_backoff() -> None:
    slept: list[float] = []
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    with RegistryClient(sleep=slept.append) as client, pytest.raises(RegistryError) as err:
        client.get_manifest(Reference.parse(f"{host}/any/thing:1"))
    assert slept == []  # refused on https and http: no retry could help
    assert f"cannot reach registry {host}" in str(err.value) and "Connection refused" in str(
        err.value
    )
