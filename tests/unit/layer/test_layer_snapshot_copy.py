"""The snapshotter in copy mode (no mounts): prepare, commit, layers, cleanup."""

from __future__ import annotations

import fcntl
import io
import os
from pathlib import Path

import pytest
from tests.unit.layer.layer_helpers import entry, make_tar, tar_members, tree

from mason.layer import LayerError, Snapshotter


def _layer_names(snap: Snapshotter, sid: str) -> list[str]:
    buf = io.BytesIO()
    snap.write_layer(sid, buf, source_date_epoch=0)
    return [m.name for m in tar_members(buf.getvalue())]


def test_copy_mode_prepare_commit_and_layer_diffs(tmp_path: Path) -> None:
    snap = Snapshotter(str(tmp_path / "snaps"), mode="copy")
    with snap.prepare([]) as active:
        root = Path(active.path)
        (root / "etc").mkdir()
        (root / "etc" / "passwd").write_text("root")
        (root / "etc" / "gone").write_text("bye")
        base = snap.commit(active)
    assert snap.info(base).kind == "full"
    assert _layer_names(snap, base) == ["etc", "etc/gone", "etc/passwd"]
    with snap.prepare([base]) as active:
        root = Path(active.path)
        assert (root / "etc" / "passwd").read_text() == "root"
        (root / "etc" / "gone").unlink()
        (root / "app").mkdir()
        (root / "app" / "main").write_text("run")
        top = snap.commit(active)
    assert _layer_names(snap, top) == ["app", "app/main", "etc", "etc/.wh.gone"]
    assert [s.id for s in snap.snapshots()] == sorted([base, top])
    with snap.view([base, top]) as view:
        assert sorted(tree(view)) == ["app", "app/main", "etc", "etc/passwd"]
    # The parent is unchanged.
    assert sorted(tree(snap.info(base).path)) == ["etc", "etc/gone", "etc/passwd"]


def test_discarded_and_failed_snapshots_leave_nothing(tmp_path: Path) -> None:
    snap = Snapshotter(str(tmp_path), mode="copy")
    with pytest.raises(RuntimeError), snap.prepare([]) as active:
        Path(active.path, "f").write_text("x")
        raise RuntimeError("step failed")
    assert os.listdir(tmp_path / ".active") == []
    assert snap.snapshots() == []


def test_chain_members_must_exist_once(tmp_path: Path) -> None:
    snap = Snapshotter(str(tmp_path), mode="copy")
    with snap.prepare([]) as active:
        a = snap.commit(active)
    with pytest.raises(LayerError, match="twice"):
        snap.prepare([a, a])
    with pytest.raises(LayerError, match="does not exist"):
        snap.prepare(["0000deadbeef"])


def test_apply_layer_in_copy_mode_is_flat(tmp_path: Path) -> None:
    snap = Snapshotter(str(tmp_path), mode="copy")
    base, info = snap.apply_layer([], make_tar((entry("a"), b"1"), (entry("b"), b"2")))
    assert info.size > 0
    top, _ = snap.apply_layer([base], make_tar((entry(".wh.a"), b"")))
    assert sorted(tree(snap.info(top).path)) == ["b"]
    assert _layer_names(snap, top) == [".wh.a"]


def test_rejected_layer_leaves_no_snapshot(tmp_path: Path) -> None:
    snap = Snapshotter(str(tmp_path), mode="copy")
    with pytest.raises(LayerError):
        snap.apply_layer([], make_tar((entry("ok"), b"1"), (entry("../evil"), b"2")))
    assert snap.snapshots() == []
    assert os.listdir(tmp_path / ".active") == []


def test_half_written_snapshot_dirs_are_cleaned_on_open(tmp_path: Path) -> None:
    snap = Snapshotter(str(tmp_path), mode="copy")
    with snap.prepare([]) as active:
        Path(active.path, "kept").write_text("k")
        good = snap.commit(active)
    # What a SIGKILL-ed process leaves: an active dir with its (no longer held)
    # lock, a half-made lock, and removal trash without a lock.
    dead = tmp_path / ".active" / "0123456789abcdef"
    (dead / "fs" / "half").mkdir(parents=True)
    (dead / "fs" / "half" / "written").write_text("partial")
    (tmp_path / ".active" / "0123456789abcdef.lock").write_text("")
    (tmp_path / ".active" / "fedcba9876543210.locktmp").write_text("")
    (tmp_path / ".active" / "rm-1234" / "fs").mkdir(parents=True)
    # A live one, whose lock is held, must survive.
    live = snap.prepare([])
    try:
        Path(live.path, "busy").write_text("b")
        reopened = Snapshotter(str(tmp_path), mode="copy")
        assert sorted(os.listdir(tmp_path / ".active")) == sorted([live.name, live.name + ".lock"])
        assert [s.id for s in reopened.snapshots()] == [good]
        assert Path(live.path, "busy").read_text() == "b"
    finally:
        snap.discard(live)
    assert os.listdir(tmp_path / ".active") == []


def test_lock_of_live_snapshot_is_held(tmp_path: Path) -> None:
    snap = Snapshotter(str(tmp_path), mode="copy")
    with snap.prepare([]) as active:
        fd = os.open(tmp_path / ".active" / (active.name + ".lock"), os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


def test_caller_ids_are_content_addresses(tmp_path: Path) -> None:
    """Committing to an id that exists keeps the first snapshot and drops the second."""
    snap = Snapshotter(str(tmp_path), mode="copy")
    with snap.prepare([]) as active:
        Path(active.path, "f").write_text("first")
        assert snap.commit(active, snapshot_id="c123") == "c123"
    with snap.prepare([]) as active:
        Path(active.path, "f").write_text("second")
        assert snap.commit(active, snapshot_id="c123") == "c123"
        assert active.done
    assert Path(snap.info("c123").path, "f").read_text() == "first"
    assert os.listdir(tmp_path / ".active") == []
    with snap.prepare([]) as active, pytest.raises(LayerError, match="invalid snapshot id"):
        snap.commit(active, snapshot_id="Not/An-Id")


def test_write_active_layer_then_commit_under_the_layer_id(tmp_path: Path) -> None:
    snap = Snapshotter(str(tmp_path), mode="copy")
    base, _ = snap.apply_layer(
        [],
        make_tar(
            (entry("etc/", b"5", mode=0o755), None), (entry("etc/a"), b"a"), (entry("etc/b"), b"b")
        ),
        snapshot_id="base",
    )
    with snap.prepare([base]) as active:
        Path(active.path, "etc", "b").unlink()
        Path(active.path, "new").write_text("n")
        buf = io.BytesIO()
        info = snap.write_active_layer(active, buf, source_date_epoch=0)
        sid = snap.commit(active, snapshot_id="top")
    assert [m.name for m in tar_members(buf.getvalue())] == ["etc", "etc/.wh.b", "new"]
    assert info.size == len(buf.getvalue())
    assert sid == "top" and snap.info("top").parents == ("base",)
    assert sorted(tree(snap.info("top").path)) == ["etc", "etc/a", "new"]


def test_apply_to_an_active_snapshot_and_diff_id_checks(tmp_path: Path) -> None:
    snap = Snapshotter(str(tmp_path), mode="copy")
    with snap.prepare([]) as active:
        first = snap.apply_to(active, make_tar((entry("a"), b"1"), (entry("b"), b"2")))
        snap.apply_to(active, make_tar((entry(".wh.a"), b"")))
        assert sorted(tree(active.path)) == ["b"]
        snap.commit(active, snapshot_id="two")
    with pytest.raises(LayerError, match=r"expected sha256:0+"):
        snap.apply_layer(
            [],
            make_tar((entry("a"), b"1"), (entry("b"), b"2")),
            snapshot_id="bad",
            expect_diff_id="sha256:" + "0" * 64,
        )
    assert not snap.exists("bad") and os.listdir(tmp_path / ".active") == []
    _, again = snap.apply_layer(
        [], make_tar((entry("a"), b"1"), (entry("b"), b"2")), expect_diff_id=first.diff_id
    )
    assert again == first


def test_readonly_view_of_a_full_snapshot_is_not_copied(tmp_path: Path) -> None:
    snap = Snapshotter(str(tmp_path), mode="copy")
    sid, _ = snap.apply_layer([], make_tar((entry("a"), b"1")))
    with snap.view([sid], readonly=True) as path:
        assert path == snap.info(sid).path
    with snap.view([sid]) as path:
        assert path != snap.info(sid).path
        Path(path, "a").write_text("scribble")
    assert Path(snap.info(sid).path, "a").read_text() == "1"
