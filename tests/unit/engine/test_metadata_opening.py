"""A root's metadata opened in a thread while the build goes on (``Metadata.opening``, start-up
issue 14): the first user waits for it, gets the connection that made the tables, and an
opening that failed is raised to every user; closing the root never raises it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mason.engine.metadata import Metadata
from mason.engine.state import StateError, StateRoot


def test_the_opened_metadata_serves_the_thread_that_waits(tmp_path: Path) -> None:
    wait = Metadata.opening(tmp_path / "meta.db")
    meta = wait()
    assert wait() is meta  # waited for once, the same object after
    meta.put_step_keys([("id", "key", b"pre", None)])
    assert meta._spare is None  # the first thread took the connection that made the tables
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(meta.step_key("id")))
    worker.start()
    worker.join()
    assert got and got[0] is not None  # another thread opens its own connection and reads it
    meta.close()


def test_an_opening_that_failed_is_raised_to_every_waiter(tmp_path: Path) -> None:
    wait = Metadata.opening(tmp_path / "missing-dir" / "meta.db")
    with pytest.raises(FileNotFoundError):
        wait()
    with pytest.raises(FileNotFoundError):
        wait()


def test_a_root_whose_metadata_cannot_open_says_so_when_used_and_still_closes(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "meta.db").write_bytes(b"not a database, " * 512)
    st = StateRoot.open(root)
    with pytest.raises(Exception, match="not a database"):
        st.meta.put_step_keys([("id", "key", b"x", None)])
    with pytest.raises(Exception, match="not a database"):
        _ = st.meta
    st.close()  # nothing to close of what failed to open, and the lock is released
    with StateRoot.open(root, exclusive=True, wait=False):
        pass


def test_a_closed_root_has_no_metadata(tmp_path: Path) -> None:
    st = StateRoot.open(tmp_path / "root")
    st.meta.put_step_keys([("id", "key", b"x", None)])
    st.close()
    with pytest.raises(StateError, match="not open"):
        _ = st.meta
