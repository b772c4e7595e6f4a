"""``Snapshotter(mode="auto")`` probes overlayfs when the mode is first needed, not when it
opens (issue 14: a fully cached build mounts nothing), once, telling ``on_fallback`` why."""

from __future__ import annotations

from pathlib import Path

import pytest

from mason.layer import snapshot as snapshot_mod
from mason.layer.snapshot import Snapshotter


@pytest.mark.parametrize("reason", [None, "overlay mount failed: Operation not permitted"])
def test_auto_probes_once_when_the_mode_is_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reason: str | None
) -> None:
    probes: list[str] = []

    def probe(directory: str) -> str | None:
        probes.append(directory)
        return reason

    monkeypatch.setattr(snapshot_mod, "overlay_supported", probe)
    snaps = Snapshotter(str(tmp_path / "snaps"), mode="auto")
    told: list[str] = []
    snaps.on_fallback = told.append
    assert probes == []
    assert snaps.mode == ("copy" if reason else "overlay")
    assert snaps.mode == snaps.mode and snaps.fallback_reason == reason
    assert len(probes) == 1 and told == ([reason] if reason else [])


def test_an_explicit_mode_never_probes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot_mod, "overlay_supported", lambda d: pytest.fail("probed"))
    snaps = Snapshotter(str(tmp_path / "snaps"), mode="copy")
    assert snaps.mode == "copy" and snaps.fallback_reason is None
