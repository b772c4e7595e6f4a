"""Upload sessions opened ahead (``RegistryClient.keep_upload_ahead``): an upload takes the one
kept open instead of POSTing, a taken one is replaced until the keeping stops, and none is
left on the registry (against the in-process fake registry, its ``send``)."""

from __future__ import annotations

import io
import os
import time

import pytest
from tests.support.fake_registry import FakeRegistry

from mason.digest import sha256_bytes
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.reference import Reference
from mason.registry import client as client_module
from mason.registry.client import RegistryClient

HOST = "registry.fake.test"
CACHE = Reference.parse(f"{HOST}/app/cache:latest")
UPLOADS = r"/app/cache/blobs/uploads/"


def _client(fake: FakeRegistry) -> RegistryClient:
    return RegistryClient(None, send=fake, sleep=lambda _s: None)  # type: ignore[arg-type]


def _put(client: RegistryClient, data: bytes, *, mount_from: str | None = None) -> str:
    desc = Descriptor(mt.OCI_LAYER, sha256_bytes(data), len(data))
    return client.push_blob_outcome(
        CACHE, desc, lambda: io.BytesIO(data), mount_from=mount_from, ask_first=False
    )


def _until(fake: FakeRegistry, sessions: int) -> None:
    deadline = time.monotonic() + 10
    while len(fake.uploads) != sessions and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(fake.uploads) == sessions


def test_each_upload_takes_the_session_kept_open_and_the_last_one_is_left_for_the_next() -> None:
    fake = FakeRegistry()
    blobs = [os.urandom(100) for _ in range(3)]
    with _client(fake) as client:
        client.keep_upload_ahead(CACHE)
        for data in blobs[:2]:
            assert _put(client, data) == "uploaded"
        _until(fake, 1)  # the replacement of the last one taken
        client.stop_upload_ahead(CACHE)
        assert _put(client, blobs[2]) == "uploaded"  # takes it: none replaces it
        assert fake.uploads == {}
    assert {sha256_bytes(d) for d in blobs} <= set(fake.repo_blobs["app/cache"])
    # one POST per upload, each made before the upload asked for it
    assert fake.count("POST", UPLOADS) == 3
    assert fake.count("DELETE", UPLOADS) == 0


def test_a_session_never_taken_is_cancelled_when_the_client_closes() -> None:
    fake = FakeRegistry()
    with _client(fake) as client:
        client.keep_upload_ahead(CACHE)
        _until(fake, 1)
    assert fake.uploads == {}
    assert fake.count("DELETE", UPLOADS) == 1


def test_an_upload_mounting_its_blob_leaves_the_session_open() -> None:
    fake = FakeRegistry()
    data = b"a layer the base repository holds"
    fake.add_blob("base/image", data)
    with _client(fake) as client:
        client.keep_upload_ahead(CACHE)
        assert _put(client, data, mount_from="base/image") == "mounted"
        _until(fake, 1)
        client.stop_upload_ahead(CACHE)
        assert _put(client, b"a new one") == "uploaded"
    assert fake.count("POST", UPLOADS) == 2  # the mount's, and the one opened ahead


def test_a_session_the_registry_dropped_gives_way_to_one_of_the_uploads_own() -> None:
    fake = FakeRegistry()
    data = b"config"
    with _client(fake) as client:
        client.open_upload_ahead(CACHE)
        _until(fake, 1)
        fake.uploads.clear()  # expired on the registry's side
        assert _put(client, data) == "uploaded"
    assert sha256_bytes(data) in fake.repo_blobs["app/cache"]
    assert fake.count("POST", UPLOADS) == 2


def test_a_session_open_too_long_is_cancelled_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "_AHEAD_MAX_AGE", 0.0)
    fake = FakeRegistry()
    data = b"late"
    with _client(fake) as client:
        client.open_upload_ahead(CACHE)
        _until(fake, 1)
        opened = set(fake.uploads)
        assert _put(client, data) == "uploaded"
        _until(fake, 0)  # cancelled in the background
    assert sha256_bytes(data) in fake.repo_blobs["app/cache"]
    deleted = [r.url for r in fake.requests if r.method == "DELETE"]
    assert len(deleted) == 1 and any(uid in deleted[0] for uid in opened)
