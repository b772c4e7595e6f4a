"""Registries other than the CNCF one: scheme probing, token realms elsewhere, Docker Hub,
private repositories, body limits and chunk rules, refused manifest types, Retry-After dates."""

from __future__ import annotations

import base64
import email.utils
import io
import os
from urllib.parse import urlsplit

import pytest
from tests.support.fake_registry import FakeRegistry, respond

from mason.digest import sha256_bytes
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.manifest import build_index, build_manifest
from mason.oci.reference import Reference
from mason.registry.auth import CredentialStore
from mason.registry.client import RegistryClient
from mason.registry.errors import RegistryAuthError, RegistryError, RegistryNotFoundError
from mason.registry.transport import RetryPolicy
from mason.registry.wire import ConnectError, ReadError, Request, Response

HOST = "registry.fake.test"


def blob(data: bytes, media_type: str = mt.OCI_LAYER) -> Descriptor:
    return Descriptor(media_type, sha256_bytes(data), len(data))


# -- scheme probe ----------------------------------------------------------------------------


class _Wire:
    """A ``send`` for a loopback host: per scheme, a list of outcomes
    (an exception to raise or a status to answer), the last one repeating."""

    def __init__(self, **by_scheme: list[object]) -> None:
        self.by_scheme = by_scheme
        self.calls: list[str] = []

    def __call__(self, request: Request) -> Response:
        scheme = urlsplit(request.url).scheme
        self.calls.append(scheme)
        outcomes = self.by_scheme[scheme]
        outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        assert isinstance(outcome, int)
        return respond(outcome, json={})


def _client(wire: _Wire, slept: list[float]) -> RegistryClient:
    return RegistryClient(send=wire, sleep=slept.append)


@pytest.mark.parametrize(
    ("host", "failure", "status"),
    [
        ("127.0.0.1:5000", "[Errno 111] Connection refused", 200),
        ("localhost:5000", "[SSL: WRONG_VERSION_NUMBER] wrong version number", 401),
    ],
)
def test_refused_or_tls_failed_https_moves_to_http_at_once(
    host: str, failure: str, status: int
) -> None:
    slept: list[float] = []
    wire = _Wire(https=[ConnectError(failure)], http=[status])
    with _client(wire, slept) as client:
        client.ping(host)
    assert wire.calls == ["https", "http"] and slept == []


def test_unreachable_registry_fails_without_backoff_and_names_both_schemes() -> None:
    slept: list[float] = []
    refused = ConnectError("[Errno 111] Connection refused")
    wire = _Wire(https=[refused], http=[refused])
    with _client(wire, slept) as client, pytest.raises(RegistryError) as err:
        client.ping("127.0.0.1:5000")
    assert wire.calls == ["https", "http"] and slept == []
    text = str(err.value)
    assert "cannot reach registry 127.0.0.1:5000" in text
    assert "https: ConnectError" in text and "http: ConnectError" in text


def test_transient_errors_during_the_probe_are_still_retried() -> None:
    slept: list[float] = []
    wire = _Wire(https=[ReadError("reset"), 503, 200], http=[200])
    with _client(wire, slept) as client:
        client.ping("127.0.0.1:5000")
    assert wire.calls == ["https", "https", "https"] and len(slept) == 2


def test_chosen_scheme_keeps_bounded_retries_for_connection_errors() -> None:
    slept: list[float] = []
    wire = _Wire(http=[200, ConnectError("refused"), 200])
    wire.by_scheme["https"] = [ConnectError("refused")]
    with _client(wire, slept) as client:
        client.ping("127.0.0.1:5000")
        assert client.blob_exists(Reference.parse("127.0.0.1:5000/a/b"), sha256_bytes(b"x"))
    assert wire.calls == ["https", "http", "http", "http"] and len(slept) == 1


# -- auth elsewhere --------------------------------------------------------------------------


def test_token_realm_on_another_host_and_port_with_its_own_query() -> None:
    fake = FakeRegistry(
        auth="bearer", token_realm="https://login.fake.test:8443/oauth2/token", service="svc a"
    )
    fake.add_blob("team/app", b"layer")
    store = CredentialStore.static({HOST: (fake.username, fake.password)})
    with RegistryClient(store, send=fake, sleep=lambda _s: None) as client:
        ref = Reference.parse(f"{HOST}/team/app:1")
        assert client.blob_exists(ref, sha256_bytes(b"layer"))
    token_calls = [r for r in fake.requests if "login.fake.test:8443" in r.url]
    assert len(token_calls) == 1 and token_calls[0].authorization is not None
    assert token_calls[0].authorization.startswith("Basic ")
    assert fake.token_queries == [("svc a", ["repository:team/app:pull"])]
    # the registry's own requests carry the bearer token, never the password
    assert all(
        r.authorization is None or r.authorization.startswith("Bearer ")
        for r in fake.requests
        if HOST in r.url
    )


def test_docker_hub_names_go_to_registry_1_with_hub_credentials() -> None:
    fake = FakeRegistry(
        host="registry-1.docker.io",
        auth="bearer",
        token_realm="https://auth.docker.io/token",
        service="registry.docker.io",
        username="hubuser",
        password="hubpass",
    )
    config = b"{}"
    manifest = build_manifest(blob(config, mt.OCI_CONFIG), [])
    fake.add_manifest("library/busybox", manifest.raw, manifest.media_type, tag="latest")
    auth = base64.b64encode(b"hubuser:hubpass").decode()
    store = CredentialStore(
        docker_config={"auths": {"https://index.docker.io/v1/": {"auth": auth}}}
    )
    with RegistryClient(store, send=fake, sleep=lambda _s: None) as client:
        got = client.get_manifest(Reference.parse("busybox"))
    assert got.digest == manifest.digest
    hosts = {urlsplit(r.url).hostname for r in fake.requests}
    assert hosts == {"registry-1.docker.io", "auth.docker.io"}
    assert fake.token_queries == [("registry.docker.io", ["repository:library/busybox:pull"])]


@pytest.mark.parametrize("denial", [401, 403, 404])
def test_anonymous_pull_of_a_private_repository(denial: int) -> None:
    fake = FakeRegistry(
        auth="bearer", anonymous_pull=True, private_repos={"corp/secret"}, private_denial=denial
    )
    with (
        RegistryClient(send=fake, sleep=lambda _s: None) as client,
        pytest.raises(RegistryError) as err,
    ):
        client.get_manifest(Reference.parse(f"{HOST}/corp/secret:1"))
    error = err.value
    assert error.status == denial
    expected_type = RegistryNotFoundError if denial == 404 else RegistryAuthError
    assert isinstance(error, expected_type)
    text = str(error)
    assert f"https://{HOST}/v2/corp/secret/manifests/1" in text
    # the registry's own words, in full (code, message and the detail naming repo and action)
    code = {401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN"}[denial]
    assert f"registry says: {code}" in text
    if denial != 404:
        assert '"Action": "pull"' in text and '"Name": "corp/secret"' in text
    assert error.hint is not None and "log in" in error.hint


def test_private_repository_with_credentials_works() -> None:
    fake = FakeRegistry(auth="bearer", anonymous_pull=True, private_repos={"corp/secret"})
    fake.add_blob("corp/secret", b"s")
    store = CredentialStore.static({HOST: (fake.username, fake.password)})
    with RegistryClient(store, send=fake, sleep=lambda _s: None) as client:
        assert client.blob_exists(Reference.parse(f"{HOST}/corp/secret"), sha256_bytes(b"s"))


# -- uploads ---------------------------------------------------------------------------------


def test_monolithic_put_over_a_body_limit_falls_back_to_chunks() -> None:
    fake = FakeRegistry(max_body=100_000)
    data = os.urandom(300_000)
    ref = Reference.parse(f"{HOST}/app/big")
    with RegistryClient(send=fake, sleep=lambda _s: None) as client:
        assert client.push_blob_outcome(ref, blob(data), lambda: io.BytesIO(data)) == "uploaded"
        assert fake.blobs[sha256_bytes(data)] == data
        assert (
            fake.count("PUT", r"/uploads/") == 2
        )  # the refused monolithic PUT, then the closing one
        assert fake.uploads == {}  # the refused session was cancelled
        # the limit is remembered: a second large blob goes straight to chunks
        other = os.urandom(300_000)
        seen = len(fake.requests)
        assert client.push_blob(ref, blob(other), lambda: io.BytesIO(other))
        later = fake.requests[seen:]
    assert fake.blobs[sha256_bytes(other)] == other
    assert [r.method for r in later if "/uploads/" in r.url and r.method == "PUT"] == ["PUT"]
    assert all(r.status != 413 for r in later)


def test_chunk_min_length_is_honoured() -> None:
    fake = FakeRegistry(chunk_min_length=5000)
    data = os.urandom(12_345)
    with RegistryClient(
        send=fake, sleep=lambda _s: None, chunk_threshold=1000, chunk_size=1000
    ) as client:
        assert client.push_blob(
            Reference.parse(f"{HOST}/app/c"), blob(data), lambda: io.BytesIO(data)
        )
    assert fake.blobs[sha256_bytes(data)] == data
    assert fake.count("PATCH", r"/uploads/") == 3  # 5000 + 5000 + 2345


def test_mount_declined_with_a_session_uploads_in_that_session() -> None:
    fake = FakeRegistry(mount_supported=False)
    data = b"not mountable here"
    fake.add_blob("src/repo", data)
    with RegistryClient(send=fake, sleep=lambda _s: None) as client:
        outcome = client.push_blob_outcome(
            Reference.parse(f"{HOST}/dst/repo"),
            blob(data),
            lambda: io.BytesIO(data),
            mount_from="src/repo",
        )
    assert outcome == "uploaded" and data == fake.blobs[sha256_bytes(data)]
    assert fake.count("POST", r"/dst/repo/blobs/uploads/") == 1


# -- manifests and retries -------------------------------------------------------------------


def test_refused_manifest_media_type_names_registry_url_and_message() -> None:
    fake = FakeRegistry(accepted_manifest_types={mt.OCI_MANIFEST, mt.DOCKER_MANIFEST})
    index = build_index([])
    ref = Reference.parse(f"{HOST}/app/cache:latest")
    with (
        RegistryClient(send=fake, sleep=lambda _s: None) as client,
        pytest.raises(RegistryError) as err,
    ):
        client.put_manifest(ref, index.raw, index.media_type)
    text = str(err.value)
    assert f"registry {HOST} refused the manifest of media type {mt.OCI_INDEX} (HTTP 400)" in text
    assert f"PUT https://{HOST}/v2/app/cache/manifests/latest" in text
    assert (
        "MANIFEST_INVALID: manifest invalid" in text
        and f"unsupported manifest media type {mt.OCI_INDEX}" in text
    )
    assert err.value.hint is not None and mt.OCI_INDEX in err.value.hint


@pytest.mark.parametrize(("offset", "expected"), [(-3600, 0.0), (86400, 60.0)])
def test_retry_after_as_http_date(offset: int, expected: float) -> None:
    import time

    slept: list[float] = []
    when = email.utils.formatdate(time.time() + offset, usegmt=True)
    fake = FakeRegistry(faults=[("HEAD", r"/blobs/", [429])], retry_after=when)
    fake.add_blob("app/web", b"q")
    client = RegistryClient(send=fake, sleep=slept.append, retry=RetryPolicy(max_retry_after=60.0))
    assert client.blob_exists(Reference.parse(f"{HOST}/app/web"), sha256_bytes(b"q"))
    assert slept == [expected]


def test_unparseable_retry_after_falls_back_to_backoff() -> None:
    slept: list[float] = []
    fake = FakeRegistry(faults=[("HEAD", r"/blobs/", [429])], retry_after="soon")
    fake.add_blob("app/web", b"q")
    client = RegistryClient(send=fake, sleep=slept.append, retry=RetryPolicy(base_delay=0.25))
    assert client.blob_exists(Reference.parse(f"{HOST}/app/web"), sha256_bytes(b"q"))
    assert slept == [0.25]
