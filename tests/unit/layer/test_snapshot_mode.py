"""``Snapshotter(mode="auto")`` probes overlayfs when the mode is first needed, not when it
opens (issue 14: a fully cached build mounts nothing), once, telling ``on_fallback`` why."""

from __future__ import annotations

import threading
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


def test_probe_soon_probes_beside_the_caller_and_the_mode_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    probes: list[str] = []

    def probe(directory: str) -> str | None:
        probes.append(threading.current_thread().name)
        started.set()
        release.wait(5)
        return "no overlay in this test"

    monkeypatch.setattr(snapshot_mod, "overlay_supported", probe)
    snaps = Snapshotter(str(tmp_path / "snaps"), mode="auto")
    told: list[str] = []
    snaps.on_fallback = told.append
    snaps.probe_soon()
    assert started.wait(5)  # under way while the caller goes on
    asked = threading.Thread(target=lambda: told.append(f"mode {snaps.mode}"))
    asked.start()
    asked.join(0.2)
    assert asked.is_alive()  # the mode waits for the probe, it does not probe again
    release.set()
    asked.join(5)
    assert probes == ["overlay-probe"]
    assert told == ["no overlay in this test", "mode copy"]


def test_probe_soon_does_nothing_for_a_known_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot_mod, "overlay_supported", lambda d: pytest.fail("probed"))
    snaps = Snapshotter(str(tmp_path / "snaps"), mode="overlay")
    started: list[object] = []
    monkeypatch.setattr(snapshot_mod.threading, "Thread", lambda *a, **k: started.append(k))
    snaps.probe_soon()
    assert started == []  # no thread at all, not merely one that found the mode known
    assert snaps.mode == "overlay"
