"""A build makes its snapshots durable once at its end (``builder._sync_snapshots``): a disk
that refuses is a build error, unless the build already failed (its own error is reported;
the marker left behind makes the next build sync them)."""

from __future__ import annotations

import errno
from types import SimpleNamespace
from typing import Any

import pytest

from mason.engine.builder import _sync_snapshots
from mason.engine.state import StateError


def _snapshots(error: OSError | None, calls: list[str] | None = None) -> Any:
    def sync() -> None:
        if calls is not None:
            calls.append("sync")
        if error is not None:
            raise error

    return SimpleNamespace(layers=SimpleNamespace(sync=sync, root="/state/snapshots"))


def test_a_failed_sync_fails_a_build_that_succeeded() -> None:
    with pytest.raises(StateError, match="cannot write the build's snapshots to disk: I/O"):
        _sync_snapshots(_snapshots(OSError(errno.EIO, "I/O error")), failing=False)


def test_a_failed_sync_leaves_a_failing_build_its_own_error() -> None:
    calls: list[str] = []
    _sync_snapshots(_snapshots(OSError(errno.EIO, "I/O error"), calls), failing=True)
    _sync_snapshots(_snapshots(None, calls), failing=False)
    assert calls == ["sync", "sync"]  # tried both times; only the succeeding build raises
