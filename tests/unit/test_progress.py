"""mason.progress.HeldSink: events held back until release, in order, then passed straight on."""

from __future__ import annotations

import threading

from mason.progress import Event, HeldSink, RecordingSink


def _event(n: int) -> Event:
    return Event(f"task:{n}", f"step {n}", "log", str(n))


def test_held_events_come_out_on_release_in_order_and_later_ones_pass_straight_on() -> None:
    out = RecordingSink()
    held = HeldSink(out)
    worker = threading.Thread(target=lambda: [held.emit(_event(n)) for n in range(50)])
    worker.start()
    worker.join()
    assert out.events == []
    held.release()
    held.emit(_event(50))  # e.g. a warning of the imported cache, long after
    assert [e.text for e in out.events] == [str(n) for n in range(51)]


def test_release_with_nothing_held_only_opens_the_gate() -> None:
    out = RecordingSink()
    held = HeldSink(out)
    held.release()
    held.emit(_event(1))
    assert [e.text for e in out.events] == ["1"]
