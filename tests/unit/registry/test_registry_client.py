"""RegistryClient against the in-process fake registry (its ``send``, no sockets)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from tests.support.fake_registry import FakeRegistry

from mason.digest import Digest, sha256_bytes
from mason.errors import DigestMismatchError
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.manifest import ImageManifest, build_manifest
from mason.oci.reference import Reference
from mason.registry.auth import CredentialStore
from mason.registry.client import RegistryClient
from mason.registry.errors import RegistryAuthError, RegistryError, RegistryNotFoundError
from mason.registry.transport import RetryPolicy

HOST = "registry.fake.test"


def client_for(fake: FakeRegistry, creds: bool = True, **kwargs: object) -> RegistryClient:
    store = CredentialStore.static({HOST: (fake.username, fake.password)}) if creds else None
    return RegistryClient(store, send=fake, sleep=lambda _s: None, **kwargs)  # type: ignore[arg-type]


def ref(text: str = "app/web:v1") -> Reference:
    return Reference.parse(f"{HOST}/{text}")


def blob(data: bytes, media_type: str = mt.OCI_LAYER) -> Descriptor:
    return Descriptor(media_type, sha256_bytes(data), len(data))


def push_image(client: RegistryClient, target: Reference, layer: bytes) -> ImageManifest:
    cfg = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    cdesc, ldesc = blob(cfg, mt.OCI_CONFIG), blob(layer)
    client.push_blob(target, cdesc, lambda: io.BytesIO(cfg))
    client.push_blob(target, ldesc, lambda: io.BytesIO(layer))
    manifest = build_manifest(cdesc, [ldesc])
    client.put_manifest(target, manifest.raw, manifest.media_type)
    return manifest


def test_bearer_flow_push_pull_and_token_reuse() -> None:
    fake = FakeRegistry(auth="bearer")
    with client_for(fake) as client:
        manifest = push_image(client, ref(), b"layer-bytes")
        pushes = fake.token_requests
        got = client.get_manifest(ref())
        assert got.digest == manifest.digest
        for _ in range(3):
            assert client.blob_exists(ref(), manifest.layers[0].digest)
    # one token for push (pull,push), reused for later pulls of the same repo
    assert pushes == 1
    assert fake.token_requests == 1
    token_calls = [r for r in fake.requests if r.url.startswith("https://auth.fake.test")]
    assert all(r.authorization and r.authorization.startswith("Basic ") for r in token_calls)


def test_anonymous_bearer_pull_and_access_token_field() -> None:
    fake = FakeRegistry(auth="bearer", anonymous_pull=True, token_field="access_token")
    digest = fake.add_blob("lib/x", b"hello")
    with client_for(fake, creds=False) as client:
        with client.open_blob(ref("lib/x:1"), Descriptor(mt.OCI_LAYER, Digest(digest), 5)) as f:
            assert f.read() == b"hello"
        with pytest.raises(RegistryAuthError) as err:
            client.push_blob(ref("lib/x:1"), blob(b"new"), lambda: io.BytesIO(b"new"))
    assert "anonymous" in str(err.value)


def test_expired_token_is_refreshed() -> None:
    fake = FakeRegistry(auth="bearer", token_expires_in=120)
    now = [1000.0]
    with client_for(fake) as client:
        client._transport.auth._clock = lambda: now[0]
        push_image(client, ref(), b"a")
        client.get_manifest(ref())
        assert fake.token_requests == 1
        now[0] += 95  # within 30 s of expiry: refreshed before use, not after a 401
        client.get_manifest(ref())
        assert fake.token_requests == 2
    assert all(r.status != 401 for r in fake.requests[2:])


def test_reauthenticates_once_on_401_mid_transfer() -> None:
    fake = FakeRegistry(auth="bearer")
    with client_for(fake) as client:
        manifest = push_image(client, ref(), b"payload")
        fake.revoked.update(fake.tokens)  # the registry forgets every token it issued
        with client.open_blob(ref(), manifest.layers[0]) as f:
            assert f.read() == b"payload"
    assert fake.token_requests == 2


def test_basic_auth_and_wrong_password_message() -> None:
    fake = FakeRegistry(auth="basic")
    with client_for(fake) as client:
        push_image(client, ref(), b"x")
    bad = RegistryClient(
        CredentialStore.static({HOST: ("user", "nope")}),
        send=fake,
        sleep=lambda _s: None,
    )
    with pytest.raises(RegistryAuthError) as err:
        bad.get_manifest(ref())
    text = str(err.value)
    assert HOST in text and "'user'" in text and "UNAUTHORIZED: authentication required" in text
    assert "nope" not in text


def test_redirected_blob_get_does_not_forward_authorization() -> None:
    fake = FakeRegistry(auth="basic", redirect_blobs=True)
    digest = fake.add_blob("app/web", b"redirected content")
    with (
        client_for(fake) as client,
        client.open_blob(ref(), Descriptor(mt.OCI_LAYER, Digest(digest), 18)) as f,
    ):
        assert f.read() == b"redirected content"
    storage = [r for r in fake.requests if "storage.fake.test" in r.url]
    assert storage and all(r.authorization is None for r in storage)


def test_corrupt_blob_is_rejected_naming_both_digests_and_nothing_kept(tmp_path: Path) -> None:
    fake = FakeRegistry()
    good = b"the real bytes"
    digest = fake.add_blob("app/web", good)
    fake.corrupt[digest] = b"evil bytes!!!!"  # same length, other content
    dest = tmp_path / "blob"
    with client_for(fake, creds=False) as client, pytest.raises(DigestMismatchError) as err:
        client.fetch_blob(ref(), Descriptor(mt.OCI_LAYER, Digest(digest), len(good)), dest)
    assert digest in str(err.value)
    assert sha256_bytes(b"evil bytes!!!!") in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_truncated_transfer_is_resumed(tmp_path: Path) -> None:
    fake = FakeRegistry()
    data = os.urandom(300_000)
    digest = fake.add_blob("app/web", data)
    fake.truncate[digest] = 2
    with client_for(fake, creds=False) as client:
        client.fetch_blob(
            ref(), Descriptor(mt.OCI_LAYER, Digest(digest), len(data)), tmp_path / "b"
        )
    assert (tmp_path / "b").read_bytes() == data
    ranged = [r for r in fake.requests if r.method == "GET" and "/blobs/" in r.url]
    assert len(ranged) == 3


def test_500_then_200_is_retried() -> None:
    fake = FakeRegistry(faults=[("GET", r"/manifests/", [500, 503])])
    with client_for(fake, creds=False) as client:
        manifest = push_image(client, ref(), b"z")
        assert client.get_manifest(ref()).digest == manifest.digest
    assert fake.count("GET", r"/manifests/") == 3


def test_retries_are_bounded_and_error_names_everything() -> None:
    fake = FakeRegistry(faults=[("GET", r"/manifests/", [502] * 10)])
    with (
        client_for(fake, creds=False, retry=RetryPolicy(attempts=3)) as client,
        pytest.raises(RegistryError) as err,
    ):
        client.get_manifest(ref())
    e = err.value
    assert e.status == 502 and e.operation.startswith("get manifest")
    assert "GET https://registry.fake.test/v2/app/web/manifests/v1" in str(e)
    assert "FAULT: injected 502" in str(e)
    assert fake.count("GET", r"/manifests/") == 3


def test_429_honours_retry_after() -> None:
    slept: list[float] = []
    fake = FakeRegistry(faults=[("HEAD", r"/blobs/", [429])])
    fake.add_blob("app/web", b"q")
    client = RegistryClient(send=fake, sleep=slept.append)
    assert client.blob_exists(ref(), sha256_bytes(b"q"))
    assert slept == [0.0]


def test_not_found_manifest() -> None:
    fake = FakeRegistry()
    with client_for(fake, creds=False) as client:
        assert client.head_manifest(ref("nope/x:1")) is None
        with pytest.raises(RegistryNotFoundError) as err:
            client.get_manifest(ref("nope/x:1"))
    assert "MANIFEST_UNKNOWN" in str(err.value)


def test_tag_pagination_follows_link() -> None:
    fake = FakeRegistry(tag_page_size=2)
    for i in range(5):
        fake.add_manifest("app/web", f'{{"n":{i}}}'.encode(), mt.OCI_MANIFEST, tag=f"t{i}")
    with client_for(fake, creds=False) as client:
        assert client.list_tags(ref()) == ["t0", "t1", "t2", "t3", "t4"]
    assert fake.count("GET", r"/tags/list") == 3


def test_mount_and_fallback_when_registry_opens_session() -> None:
    fake = FakeRegistry()
    data = b"shared layer"
    fake.add_blob("src/repo", data)
    desc = blob(data)
    with client_for(fake, creds=False) as client:
        assert client.mount_blob(ref("dst/one:x"), desc.digest, "src/repo")
        fake.mount_supported = False
        assert not client.mount_blob(ref("dst/two:x"), desc.digest, "src/repo")
        assert fake.uploads == {}  # the opened session was cancelled
        outcome = client.push_blob_outcome(
            ref("dst/three:x"), desc, lambda: io.BytesIO(data), mount_from="src/repo"
        )
    assert outcome == "uploaded"
    assert desc.digest in fake.repo_blobs["dst/three"]
    # the fallback used the session the mount POST opened: one POST for dst/three
    assert fake.count("POST", r"/dst/three/blobs/uploads/") == 1


def test_chunked_upload_for_large_blobs() -> None:
    fake = FakeRegistry()
    data = os.urandom(10_000)
    with client_for(fake, creds=False, chunk_threshold=4096, chunk_size=3000) as client:
        assert client.push_blob(ref(), blob(data), lambda: io.BytesIO(data))
        assert not client.push_blob(ref(), blob(data), lambda: io.BytesIO(data))
    assert fake.blobs[sha256_bytes(data)] == data
    assert fake.count("PATCH", r"/uploads/") == 4


def test_manifest_size_cap_and_digest_check() -> None:
    fake = FakeRegistry()
    fake.add_manifest("app/web", b"{" + b" " * (4 * 1024 * 1024) + b"}", mt.OCI_MANIFEST, tag="big")
    with client_for(fake, creds=False) as client, pytest.raises(RegistryError) as err:
        client.fetch_manifest(ref("app/web:big"))
    assert "over mason's limit" in str(err.value)
    raw = b'{"schemaVersion":2}'
    wrong = Digest("sha256:" + hashlib.sha256(b"other").hexdigest())
    fake.manifests["app/web"][wrong] = (raw, mt.OCI_MANIFEST)
    with client_for(fake, creds=False) as client, pytest.raises(DigestMismatchError):
        client.fetch_manifest(ref(f"app/web@{wrong}"))


def test_plain_http_only_for_loopback() -> None:
    fake = FakeRegistry(host="example.org")
    client = RegistryClient(send=fake, sleep=lambda _s: None)
    assert client._transport.http_allowed("127.0.0.1:5000")
    assert client._transport.http_allowed("localhost:5000")
    assert not client._transport.http_allowed("example.org")
    assert RegistryClient(insecure_hosts=["example.org"])._transport.http_allowed("example.org")
