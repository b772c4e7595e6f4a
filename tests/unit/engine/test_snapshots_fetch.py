"""A chain's remote layers are downloaded side by side (``mason.engine.snapshots``): the
upper layers' blobs come while the lower ones are unpacked, one after the other."""

from __future__ import annotations

import contextlib
import gzip
import io
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from mason.digest import sha256_bytes
from mason.engine.blobs import Blobs, RemoteLocation
from mason.engine.snapshots import Snapshotter
from mason.engine.state import LayerRef, StateRoot
from mason.oci import mediatypes as mt

_WAIT = 30.0  # only reached when the downloads are not concurrent (the failure)


def _layer(name: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        data = name.encode()
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def _remote(blobs: Blobs, blob_bytes: bytes, before: Callable[[], object]) -> LayerRef:
    @contextlib.contextmanager
    def _open() -> Iterator[BinaryIO]:
        before()
        yield io.BytesIO(blob_bytes)

    blob = sha256_bytes(blob_bytes)
    diff_id = sha256_bytes(gzip.decompress(blob_bytes))
    blobs.add_remote(blob, diff_id, RemoteLocation(None, mt.OCI_LAYER_GZIP, len(blob_bytes), _open))
    return LayerRef(diff_id, blob, len(blob_bytes), mt.OCI_LAYER_GZIP)


@pytest.mark.parametrize("mode", ["copy", "overlay"])
def test_upper_layers_download_while_the_lowest_is_fetched(tmp_path: Path, mode: str) -> None:
    upper_asked = threading.Event()
    seen: list[bool] = []
    with StateRoot.open(tmp_path / "root") as st:
        blobs = Blobs(st)
        snapshots = Snapshotter(st, blobs, mode=mode)  # type: ignore[arg-type]
        if snapshots.mode != mode:
            pytest.skip(f"no {mode} snapshots here")
        # the lowest layer's download only ends once the upper one's has started
        lowest = _remote(blobs, _layer("a"), lambda: seen.append(upper_asked.wait(_WAIT)))
        upper = _remote(blobs, _layer("b"), upper_asked.set)
        with snapshots.view([lowest, upper]) as root:
            assert seen == [True]
            assert (root / "a").read_text() == "a" and (root / "b").read_text() == "b"
        assert lowest.blob is not None and upper.blob is not None
        assert blobs.has_local(lowest.blob) and blobs.has_local(upper.blob)
        assert [t for t in threading.enumerate() if t.name == "layer-fetch"] == []


def test_a_failed_background_download_is_reported_when_the_layer_is_opened(
    tmp_path: Path,
) -> None:
    calls: list[int] = []
    failed = threading.Event()

    def fail_once() -> None:
        calls.append(1)
        if len(calls) == 1:
            failed.set()
            raise OSError("connection reset")

    with StateRoot.open(tmp_path / "root") as st:
        blobs = Blobs(st)
        snapshots = Snapshotter(st, blobs, mode="copy")
        lowest = _remote(blobs, _layer("a"), lambda: failed.wait(_WAIT))
        upper = _remote(blobs, _layer("b"), fail_once)
        with snapshots.view([lowest, upper]) as root:  # the foreground asks again
            assert (root / "b").read_text() == "b"
        assert len(calls) == 2


def test_the_downloads_start_before_the_snapshot_mode_is_probed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mason.layer.snapshot as layer_snapshot

    fetched = threading.Event()
    seen: list[bool] = []

    def probe(directory: str) -> str | None:
        seen.append(fetched.wait(_WAIT))
        return "no overlay in this test"

    monkeypatch.setattr(layer_snapshot, "overlay_supported", probe)
    with StateRoot.open(tmp_path / "root") as st:
        blobs = Blobs(st)
        snapshots = Snapshotter(st, blobs, mode="auto")
        only = _remote(blobs, _layer("a"), fetched.set)
        with snapshots.view([only]) as root:
            assert (root / "a").read_text() == "a"
        assert seen == [True] and snapshots.mode == "copy"


def test_nothing_is_fetched_for_layers_a_snapshot_already_holds(tmp_path: Path) -> None:
    opened: list[str] = []
    with StateRoot.open(tmp_path / "root") as st:
        blobs = Blobs(st)
        snapshots = Snapshotter(st, blobs, mode="copy")
        lowest = _remote(blobs, _layer("a"), lambda: opened.append("a"))
        with snapshots.view([lowest]):
            pass
        assert lowest.blob is not None
        st.store.delete(lowest.blob)  # the snapshot of [lowest] stays
        upper = _remote(blobs, _layer("b"), lambda: opened.append("b"))
        with snapshots.view([lowest, upper]) as root:
            assert (root / "a").read_text() == "a" and (root / "b").read_text() == "b"
        assert opened == ["a", "b"]  # lowest came from its snapshot, not downloaded again
