"""The builder's snapshot adapter (mason.engine.snapshots) on real overlayfs and in copy mode:
layers unpacked once and shared, a step's upper dir kept without copying, chains
materialised from the longest existing prefix, crash leftovers removed."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from tests.unit.layer.layer_helpers import entry, make_tar

from mason.digest import Digest
from mason.engine.snapshots import Snapshotter, chain_id
from mason.engine.state import LayerRef, StateRoot
from mason.layer import overlay_supported


class FakeBlobs:
    """Uncompressed layer tars in memory, keyed by diff ID; counts reads."""

    def __init__(self) -> None:
        self.tars: dict[Digest, bytes] = {}
        self.reads: list[Digest] = []

    def add(self, data: bytes) -> LayerRef:
        diff_id = Digest("sha256:" + hashlib.sha256(data).hexdigest())
        self.tars[diff_id] = data
        return LayerRef(diff_id, diff_id, len(data), "application/vnd.oci.image.layer.v1.tar")

    @contextlib.contextmanager
    def open_uncompressed(self, lr: LayerRef) -> Iterator[BinaryIO]:
        self.reads.append(lr.diff_id)
        yield io.BytesIO(self.tars[lr.diff_id])

    def has_local(self, blob: Digest) -> bool:
        return True  # every layer is held in memory: nothing to download

    def ensure_local(self, lr: LayerRef) -> LayerRef:
        return lr

    def store_layer(self, write: Callable[[BinaryIO], Digest]) -> LayerRef:
        buf = io.BytesIO()
        diff_id = write(buf)
        assert diff_id == "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()
        return self.add(buf.getvalue())


@pytest.fixture(params=["overlay", "copy"])
def env(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[StateRoot, FakeBlobs, str]]:
    mode = str(request.param)
    if mode == "overlay":
        (tmp_path / "probe").mkdir()
        reason = overlay_supported(str(tmp_path / "probe"))
        if reason is not None:
            pytest.skip(f"overlayfs not usable here: {reason}")
    with StateRoot.open(tmp_path / "root") as state:
        yield state, FakeBlobs(), mode


def _base(blobs: FakeBlobs) -> tuple[LayerRef, LayerRef]:
    one = blobs.add(
        make_tar(
            (entry("etc/", b"5", mode=0o755), None),
            (entry("etc/passwd"), b"root\n"),
            (entry("etc/old"), b"old\n"),
        ).getvalue()
    )
    # Parent directories listed, as Docker and BuildKit write layers: such a layer depends
    # on nothing below it, so its overlay snapshot is shared by every chain.
    two = blobs.add(
        make_tar(
            (entry("etc/", b"5", mode=0o755), None),
            (entry("etc/.wh.old"), b""),
            (entry("usr/", b"5", mode=0o755), None),
            (entry("usr/tool", mode=0o755), b"#!/bin/sh\n"),
        ).getvalue()
    )
    return one, two


def test_step_on_a_pulled_chain_and_its_reuse(env: tuple[StateRoot, FakeBlobs, str]) -> None:
    state, blobs, mode = env
    snaps = Snapshotter(state, blobs, mode=mode)  # type: ignore[arg-type]
    assert snaps.mode == mode
    chain = _base(blobs)
    with snaps.mount(chain) as mounted:
        root = mounted.merged
        assert sorted(os.listdir(root / "etc")) == ["passwd"]
        (root / "etc" / "passwd").write_text("root\napp\n")
        (root / "usr" / "tool").unlink()
        (root / "app").mkdir()
        (root / "app" / "a").write_text("a")
        os.link(root / "app" / "a", root / "app" / "b")
        lr = snaps.commit(mounted, source_date_epoch=0)
    assert len(blobs.reads) == 2  # each pulled layer read once
    step = (*chain, lr)
    if mode == "overlay":
        # The step's upper dir became the layer's snapshot by rename.
        assert snaps.layers.exists(Snapshotter.layer_snapshot_id(lr.diff_id))
    else:
        assert snaps.layers.exists(Snapshotter.chain_snapshot_id(step))
    with snaps.view(step) as view:
        assert (view / "etc" / "passwd").read_text() == "root\napp\n"
        assert not (view / "usr" / "tool").exists()
        assert (view / "app" / "a").stat().st_ino == (view / "app" / "b").stat().st_ino
    # A second adapter on the same root (the next build) re-extracts nothing.
    again = Snapshotter(state, blobs, mode=mode)  # type: ignore[arg-type]
    with again.mount(step) as mounted:
        assert (mounted.merged / "app" / "a").read_text() == "a"
    assert len(blobs.reads) == 2
    registered = {c for c, _, _, _ in state.meta.snapshots()}
    if mode == "overlay":
        assert {chain[0].diff_id, chain[1].diff_id, lr.diff_id} <= registered
    else:
        assert chain_id([x.diff_id for x in step]) in registered


def test_copy_mode_materialises_only_from_the_longest_existing_prefix(tmp_path: Path) -> None:
    with StateRoot.open(tmp_path / "root") as state:
        blobs = FakeBlobs()
        snaps = Snapshotter(state, blobs, mode="copy")
        one, two = _base(blobs)
        three = blobs.add(make_tar((entry("usr/more"), b"more\n")).getvalue())
        with snaps.view((one, two)) as view:
            assert sorted(os.listdir(view)) == ["etc", "usr"]
        assert blobs.reads == [one.diff_id, two.diff_id]
        with snaps.view((one, two, three)) as view:
            assert (view / "usr" / "more").read_text() == "more\n"
        assert blobs.reads[2:] == [three.diff_id]  # built on the (one, two) snapshot
        # Only the chains asked for exist: no snapshot of (one,) alone.
        assert not snaps.layers.exists(Snapshotter.chain_snapshot_id((one,)))


def test_a_corrupt_layer_is_refused_and_leaves_nothing(
    env: tuple[StateRoot, FakeBlobs, str],
) -> None:
    from mason.engine.state import StateError

    state, blobs, mode = env
    snaps = Snapshotter(state, blobs, mode=mode)  # type: ignore[arg-type]
    good = blobs.add(make_tar((entry("a"), b"1")).getvalue())
    bad = LayerRef(Digest("sha256:" + "1" * 64), good.blob, good.blob_size, good.media_type)
    blobs.tars[bad.diff_id] = blobs.tars[good.diff_id]
    with pytest.raises(StateError, match="diff ID"), snaps.mount((bad,)):
        pass
    assert os.listdir(state.snapshots_dir / ".active") == []
    assert not [s for s in snaps.layers.snapshots() if s.id.endswith("1" * 10)]


def test_the_same_layer_on_two_bases_is_unpacked_once_with_overlay(tmp_path: Path) -> None:
    (tmp_path / "probe").mkdir()
    if overlay_supported(str(tmp_path / "probe")) is not None:
        pytest.skip("overlayfs not usable here")
    with StateRoot.open(tmp_path / "root") as state:
        blobs = FakeBlobs()
        snaps = Snapshotter(state, blobs, mode="overlay")
        a = blobs.add(make_tar((entry("a"), b"a")).getvalue())
        b = blobs.add(make_tar((entry("b"), b"b")).getvalue())
        shared = blobs.add(make_tar((entry("s"), b"s")).getvalue())
        with snaps.view((a, shared)) as v1, snaps.view((b, shared)) as v2:
            assert sorted(os.listdir(v1)) == ["a", "s"] and sorted(os.listdir(v2)) == ["b", "s"]
        assert sorted(blobs.reads) == sorted([a.diff_id, b.diff_id, shared.diff_id])
