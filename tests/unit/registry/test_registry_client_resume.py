"""Transfers that break off resume from what arrived (issue 9, item 12), against the fake registry.

Downloads: ``Range`` from the last byte received (not from the start of a 1 MiB chunk), a
206 checked against its ``Content-Range``, a server without Range support read from 0 with
the known part dropped. Uploads: after a broken PATCH, ``GET`` on the upload says how far the
registry got and the upload goes on from there (the source seeked, or reopened and skipped);
a dropped session starts over. Budgets count failures without progress; errors count every
attempt the transfer made.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.support.fake_registry import FakeRegistry

from mason.digest import sha256_bytes
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.reference import Reference
from mason.registry.client import RegistryClient
from mason.registry.errors import RegistryError
from mason.registry.transport import RetryPolicy

HOST = "registry.fake.test"
CHUNK = 64 * 1024  # the smallest PATCH the client sends


def client_for(fake: FakeRegistry, attempts: int = 5, **kwargs: object) -> RegistryClient:
    return RegistryClient(
        send=fake,
        sleep=lambda _s: None,  # type: ignore[arg-type]
        retry=RetryPolicy(attempts=attempts),
        **kwargs,
    )


def ref() -> Reference:
    return Reference.parse(f"{HOST}/app/web:v1")


def desc_of(data: bytes) -> Descriptor:
    return Descriptor(mt.OCI_LAYER, sha256_bytes(data), len(data))


# -- downloads --------------------------------------------------------------------------------


def test_download_cut_every_300k_resumes_from_the_byte_reached(tmp_path: Path) -> None:
    fake = FakeRegistry()
    data = os.urandom(1_000_000)
    digest = fake.add_blob("app/web", data)
    fake.cut_after[digest] = [300_000, 300_000, 300_000]
    with client_for(fake, attempts=3) as client:  # 3 breaks, each after progress: within budget
        client.fetch_blob(ref(), desc_of(data), tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == data
    assert [rng for _, rng, _ in fake.blob_gets] == [
        None,
        "bytes=300000-",
        "bytes=600000-",
        "bytes=900000-",
    ]
    assert [status for status, _, _ in fake.blob_gets] == [200, 206, 206, 206]


def test_download_restarts_from_zero_when_range_is_ignored(tmp_path: Path) -> None:
    fake = FakeRegistry(ignore_range=True)
    data = os.urandom(700_000)
    digest = fake.add_blob("app/web", data)
    fake.cut_after[digest] = [300_000]
    with client_for(fake) as client:
        client.fetch_blob(ref(), desc_of(data), tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == data
    assert [(status, rng) for status, rng, _ in fake.blob_gets] == [
        (200, None),
        (200, "bytes=300000-"),
    ]


def test_download_206_with_the_wrong_content_range_is_not_trusted(tmp_path: Path) -> None:
    fake = FakeRegistry(wrong_range=True)
    data = os.urandom(700_000)
    digest = fake.add_blob("app/web", data)
    fake.cut_after[digest] = [300_000]
    with client_for(fake) as client:
        client.fetch_blob(ref(), desc_of(data), tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == data
    # the 206 said "bytes 0-...": dropped, and the blob read again from 0 (the known part skipped)
    assert fake.blob_gets == [
        (200, None, None),
        (206, "bytes=300000-", "bytes 0-699999/700000"),
        (200, None, None),
    ]


def test_download_without_progress_gives_up_and_counts_attempts(tmp_path: Path) -> None:
    fake = FakeRegistry()
    data = os.urandom(200_000)
    digest = fake.add_blob("app/web", data)
    fake.cut_after[digest] = [100_000] + [0] * 10
    with client_for(fake, attempts=3) as client, pytest.raises(RegistryError) as err:
        client.fetch_blob(ref(), desc_of(data), tmp_path / "b")
    message = str(err.value)
    # 3 attempts since the last progress (the one that made it included), as RetryPolicy counts
    assert "at byte 100000 of 200000" in message and "after 3 attempt(s)" in message
    assert len(fake.blob_gets) == 3
    assert list(tmp_path.iterdir()) == []


# -- uploads ----------------------------------------------------------------------------------


class _Source:
    """An opener that counts its calls; ``seekable=False`` gives streams that cannot seek."""

    def __init__(self, data: bytes, *, seekable: bool = True) -> None:
        self.data = data
        self.seekable = seekable
        self.opened = 0

    def __call__(self) -> io.BufferedIOBase:
        self.opened += 1
        if self.seekable:
            return io.BytesIO(self.data)
        return _Unseekable(self.data)


class _Unseekable(io.BufferedIOBase):
    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def read(self, n: int | None = -1) -> bytes:
        return self._inner.read(n)

    def seekable(self) -> bool:
        return False


def _push(
    fake: FakeRegistry, data: bytes, opener: Callable[[], io.BufferedIOBase], attempts: int = 5
) -> str:
    with client_for(fake, attempts=attempts, chunk_threshold=CHUNK, chunk_size=CHUNK) as client:
        return client.push_blob_outcome(ref(), desc_of(data), opener)  # type: ignore[arg-type]


def test_chunked_upload_with_every_4th_patch_reset_resumes(tmp_path: Path) -> None:
    fake = FakeRegistry(reset_patch_every=4)
    data = os.urandom(16 * CHUNK + 123)  # 17 PATCHes
    assert _push(fake, data, _Source(data)) == "uploaded"
    assert fake.blobs[str(sha256_bytes(data))] == data
    assert fake.count("POST", r"/uploads/") == 1  # one session: never started over
    starts = [int(r.split("-")[0]) for r in fake.patch_ranges]
    assert starts == sorted(
        starts
    )  # each reset PATCH is sent again from its own offset, never from 0
    assert len(starts) == 17 + 5  # 22 PATCHes: every 4th of them reset and resent
    assert fake.count("GET", r"/uploads/") == 5  # one status query per reset


def test_chunked_upload_resumes_when_only_the_answer_was_lost(tmp_path: Path) -> None:
    fake = FakeRegistry(reset_patch_every=3, reset_after_store=True)
    data = os.urandom(6 * CHUNK)
    assert _push(fake, data, _Source(data)) == "uploaded"
    assert fake.blobs[str(sha256_bytes(data))] == data
    assert fake.count("POST", r"/uploads/") == 1
    assert fake.patches == 6  # the registry had the chunk: nothing sent twice


@pytest.mark.parametrize("seekable", [True, False])
def test_dropped_session_starts_over_and_rereads_the_source(seekable: bool) -> None:
    fake = FakeRegistry(reset_patches={2}, drop_session_on_reset=True)
    data = os.urandom(3 * CHUNK)
    source = _Source(data, seekable=seekable)
    assert _push(fake, data, source) == "uploaded"
    assert fake.blobs[str(sha256_bytes(data))] == data
    assert fake.count("POST", r"/uploads/") == 2
    assert source.opened == (1 if seekable else 2)  # seek back to 0, or reopen


def test_a_patch_refused_for_its_session_starts_a_new_session() -> None:
    # the CNCF registry, after a PATCH cut mid-body, may still name the session in a status query
    # and then refuse the next PATCH with 404 BLOB_UPLOAD_INVALID: that is a lost session too
    fake = FakeRegistry(refuse_patches={2})
    data = os.urandom(3 * CHUNK)
    assert _push(fake, data, _Source(data)) == "uploaded"
    assert fake.blobs[str(sha256_bytes(data))] == data
    assert fake.count("POST", r"/uploads/") == 2


def test_upload_without_progress_says_how_many_attempts_it_made() -> None:
    fake = FakeRegistry(reset_patch_every=2, drop_session_on_reset=True)  # never past the 2nd chunk
    data = os.urandom(4 * CHUNK)
    with pytest.raises(RegistryError) as err:
        _push(fake, data, _Source(data))
    message = str(err.value)
    assert "gave up after 5 attempt(s)" in message
    assert f"({CHUNK} of {len(data)} bytes acknowledged)" in message
    assert "after 1 attempt(s)" not in message


def test_monolithic_upload_error_counts_every_attempt() -> None:
    fake = FakeRegistry(faults=[("PUT", r"/uploads/", [500] * 10)])
    data = b"small blob"
    with client_for(fake, attempts=3) as client, pytest.raises(RegistryError) as err:
        client.push_blob(ref(), desc_of(data), lambda: io.BytesIO(data))
    assert "gave up after 3 attempt(s)" in str(err.value)
    assert fake.count("PUT", r"/uploads/") == 3
    assert err.value.status == 500
