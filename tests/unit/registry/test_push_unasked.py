"""``mason.registry.push.push_blob(made_here=True)``: a small blob the build just made goes up
without a HEAD first; a large one, one with somewhere to mount it from, or one the build did
not make is asked about first, so that nothing large is sent twice."""

from __future__ import annotations

import io

import pytest
from tests.unit.cache.cache_fakes import FakeRegistry

from mason.digest import sha256_bytes
from mason.oci import mediatypes as mt
from mason.oci.descriptor import DISTRIBUTION_SOURCE_PREFIX, Descriptor
from mason.oci.reference import Reference
from mason.registry.push import UNASKED_LIMIT, push_blob

REF = Reference.parse("unasked.test/app:latest")


def _blob(size: int) -> tuple[Descriptor, bytes]:
    data = bytes(size)
    return Descriptor(mt.OCI_LAYER_GZIP, sha256_bytes(data), len(data)), data


def _ops(registry: FakeRegistry) -> list[str]:
    return [op for op, _repo, _digest in registry.calls]


def test_a_small_blob_made_here_is_uploaded_without_asking() -> None:
    registry = FakeRegistry()
    desc, data = _blob(UNASKED_LIMIT)
    outcome = push_blob(registry, REF, desc, lambda: io.BytesIO(data), made_here=True)
    assert outcome == "uploaded"
    assert _ops(registry) == ["push_blob"]
    assert registry.blobs["app"][desc.digest] == data


@pytest.mark.parametrize(
    ("size", "made_here"),
    [
        (UNASKED_LIMIT + 1, True),  # large: a needless upload would cost more than a HEAD
        (10, False),  # pulled or of unknown origin: it may well be there
    ],
)
def test_other_blobs_are_asked_about_first(size: int, made_here: bool) -> None:
    registry = FakeRegistry()
    desc, data = _blob(size)
    registry.blobs["app"] = {desc.digest: data}
    outcome = push_blob(registry, REF, desc, lambda: io.BytesIO(data), made_here=made_here)
    assert outcome == "existing"
    assert _ops(registry) == ["head_blob"]


def test_a_blob_with_a_mount_source_is_mounted_even_when_made_here() -> None:
    registry = FakeRegistry()
    desc, data = _blob(10)
    registry.blobs["app-cache"] = {desc.digest: data}
    hinted = desc.with_annotations({DISTRIBUTION_SOURCE_PREFIX + REF.registry: "app-cache"})
    outcome = push_blob(registry, REF, hinted, lambda: io.BytesIO(data), made_here=True)
    assert outcome == "mounted"
    assert "push_blob" not in _ops(registry)
