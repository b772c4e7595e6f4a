"""mason.collector: the collector held off during start-up, then frozen and turned back on."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from mason import collector


@pytest.fixture(autouse=True)
def _restore_collector() -> Iterator[None]:
    was = gc.isenabled()
    yield
    collector.release()
    gc.unfreeze()
    (gc.enable if was else gc.disable)()


def test_hold_turns_the_collector_off_and_release_freezes_start_up_and_turns_it_on() -> None:
    gc.enable()
    gc.unfreeze()
    collector.hold()
    assert not gc.isenabled()
    made_at_start_up = [[] for _ in range(1000)]  # containers: the collector tracks them
    collector.release()
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    assert frozen >= len(made_at_start_up)
    made_later = [[] for _ in range(1000)]
    collector.release()  # once only: what was made since is not frozen
    # (not an exact count: another thread may free a frozen object meanwhile)
    assert gc.get_freeze_count() < frozen + len(made_later)


def test_release_without_hold_leaves_a_callers_collector_as_it_is() -> None:
    gc.unfreeze()
    gc.disable()
    collector.release()
    assert not gc.isenabled()
    assert gc.get_freeze_count() == 0
    collector.hold()  # off already: not ours to turn on later
    collector.release()
    assert not gc.isenabled()
