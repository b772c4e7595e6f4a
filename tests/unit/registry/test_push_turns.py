"""``mason.registry.push.push_blob``: puts of one blob into one registry take turns, so the
image push and the cache export, running side by side, send a shared layer once."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import BinaryIO

from tests.unit.cache.cache_fakes import FakeRegistry

from mason.digest import sha256_bytes
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.reference import Reference
from mason.registry.push import push_blob

DATA = b"a layer both exports need"
DESC = Descriptor(mt.OCI_LAYER_GZIP, sha256_bytes(DATA), len(DATA))


def _slow_opener(started: threading.Event, release: threading.Event) -> Callable[[], BinaryIO]:
    def opener() -> BinaryIO:
        started.set()  # the upload is under way: the other put must wait for it
        assert release.wait(10)
        return io.BytesIO(DATA)

    return opener


def test_a_second_put_into_another_repository_mounts_what_the_first_uploaded() -> None:
    registry = FakeRegistry()
    started, release = threading.Event(), threading.Event()
    outcomes: dict[str, str] = {}

    def put(repo: str, opener: Callable[[], BinaryIO]) -> None:
        outcomes[repo] = push_blob(registry, Reference.parse(f"reg.test/{repo}:x"), DESC, opener)

    first = threading.Thread(target=put, args=("app", _slow_opener(started, release)))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=put, args=("app-cache", lambda: io.BytesIO(DATA)))
    second.start()
    second.join(0.2)
    assert second.is_alive(), "the second put did not wait for the first"
    release.set()
    first.join(10)
    second.join(10)
    assert outcomes == {"app": "uploaded", "app-cache": "mounted"}
    assert [c[1] for c in registry.ops("push_blob")] == ["app"]


def test_puts_into_other_registries_do_not_wait() -> None:
    registry = FakeRegistry()
    started, release = threading.Event(), threading.Event()
    first = threading.Thread(
        target=push_blob,
        args=(registry, Reference.parse("one.test/app:x"), DESC, _slow_opener(started, release)),
    )
    first.start()
    assert started.wait(10)
    outcome = push_blob(
        registry, Reference.parse("two.test/app-cache:x"), DESC, lambda: io.BytesIO(DATA)
    )
    release.set()
    first.join(10)
    assert outcome == "uploaded"


def test_a_blob_this_process_put_elsewhere_is_mounted_from_there_without_a_head() -> None:
    registry = FakeRegistry()
    data = b"a layer sent to the cache while the build went on"
    desc = Descriptor(mt.OCI_LAYER_GZIP, sha256_bytes(data), len(data))
    first = push_blob(
        registry, Reference.parse("early.test/app-cache:x"), desc, lambda: io.BytesIO(data)
    )
    second = push_blob(
        registry, Reference.parse("early.test/app:x"), desc, lambda: io.BytesIO(data)
    )
    assert (first, second) == ("uploaded", "mounted")
    assert [c[0] for c in registry.calls if c[1] == "app"] == ["mount_blob"]  # no HEAD first
