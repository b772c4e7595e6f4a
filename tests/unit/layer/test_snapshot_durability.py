"""Snapshot commits are made durable once, by ``Snapshotter.sync`` (issue 14), and a marker
says which commits a crash may have torn: ``cleanup`` syncs a killed process's commits (this
boot) and removes a crashed boot's."""

from __future__ import annotations

import fcntl
import json
import os
import platform
from pathlib import Path

import pytest
from tests.unit.layer.layer_helpers import entry, make_tar

from mason.layer import overlay_supported
from mason.layer import snapshot as snapshot_mod
from mason.layer.snapshot import Snapshotter

needs_overlay = pytest.mark.skipif(
    os.geteuid() != 0, reason="overlay mounts need root (CI runs as root)"
)


def _snapshot(snaps: Snapshotter, sid: str) -> None:
    snaps.apply_layer([], make_tar((entry(f"{sid}.txt"), sid.encode())), snapshot_id=sid)


def _markers(root: Path) -> list[str]:
    return sorted(os.listdir(root / ".unsynced"))


def _meta(root: Path, sid: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((root / sid / "meta.json").read_text())
    return loaded


def test_commits_name_their_marker_until_synced(tmp_path: Path) -> None:
    root = tmp_path / "snaps"
    snaps = Snapshotter(str(root), mode="copy")
    _snapshot(snaps, "a")
    _snapshot(snaps, "b")
    [token] = _markers(root)
    assert token.split("-")[0] == snapshot_mod._boot_id()
    assert _meta(root, "a")["unsynced"] == _meta(root, "b")["unsynced"] == token
    snaps.sync()
    assert _markers(root) == []
    _snapshot(snaps, "c")  # a commit after the sync gets a marker of its own
    [again] = _markers(root)
    assert again != token and _meta(root, "c")["unsynced"] == again
    snaps.sync_soon()
    snaps.sync()
    assert _markers(root) == [] and snaps.exists("a") and snaps.exists("c")


def _dead_marker(root: Path, token: str) -> None:
    (root / ".unsynced").mkdir(exist_ok=True)
    (root / ".unsynced" / token).write_bytes(b"")


def _tagged(root: Path, sid: str, token: str) -> None:
    meta = _meta(root, sid)
    meta["unsynced"] = token
    (root / sid / "meta.json").write_text(json.dumps(meta))


def test_a_killed_process_commits_are_synced_and_kept(tmp_path: Path) -> None:
    root = tmp_path / "snaps"
    first = Snapshotter(str(root), mode="copy")
    _snapshot(first, "a")
    first.sync()
    token = f"{snapshot_mod._boot_id()}-0123456789ab"
    _dead_marker(root, token)
    _tagged(root, "a", token)
    again = Snapshotter(str(root), mode="copy")
    assert _markers(root) == [] and again.exists("a")


def test_a_crashed_boot_commits_are_removed(tmp_path: Path) -> None:
    """Snapshots named by the marker of an earlier boot, and one whose meta.json the crash
    left torn, are removed; one committed and synced before is kept."""
    root = tmp_path / "snaps"
    first = Snapshotter(str(root), mode="copy")
    for sid in ("kept", "lost", "torn"):
        _snapshot(first, sid)
    first.sync()
    token = "0" * 32 + "-0123456789ab"  # not this boot
    _dead_marker(root, token)
    _tagged(root, "lost", token)
    (root / "torn" / "meta.json").write_bytes(b"")
    again = Snapshotter(str(root), mode="copy")
    assert _markers(root) == []
    assert again.exists("kept") and not again.exists("lost") and not (root / "torn").exists()
    assert not (root / "lost").exists()


def test_a_live_process_marker_is_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "snaps"
    first = Snapshotter(str(root), mode="copy")
    _snapshot(first, "a")
    token = "0" * 32 + "-0123456789ab"  # even from another boot: its owner holds it
    _dead_marker(root, token)
    _tagged(root, "a", token)
    fd = os.open(root / ".unsynced" / token, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        again = Snapshotter(str(root), mode="copy")
        assert token in _markers(root) and again.exists("a")
    finally:
        os.close(fd)
    first.sync()


@needs_overlay
def test_overlay_mounts_do_not_sync_on_unmount(tmp_path: Path) -> None:
    """A step's mount is ``volatile`` where the kernel has it: its unmount syncs nothing
    (``sync`` does, once)."""
    root = tmp_path / "snaps"
    if overlay_supported(str(tmp_path)) is not None:
        pytest.skip("overlayfs is not usable here")
    snaps = Snapshotter(str(root), mode="overlay")
    _snapshot(snaps, "a")
    with snaps.prepare(["a"]) as active, open("/proc/self/mountinfo", encoding="utf-8") as f:
        line = next(ln for ln in f if f" {active.path} " in ln)
    # the kernel has it from 5.10: there the mount must carry it
    has_volatile = tuple(int(n) for n in platform.release().split(".")[:2]) >= (5, 10)
    assert ("volatile" in line) == has_volatile
    snaps.sync()
