"""`mason du` / `mason prune` on a real (temporary) state root."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from mason.cli.main import main
from mason.cli.progress_render import RichRenderer
from mason.engine.state import BlobInfo, StateRoot
from mason.progress import Event


def test_du_and_prune(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """du reports what the root holds; prune --all empties it."""
    monkeypatch.setenv("MASON_ROOT", str(tmp_path))
    with StateRoot.open(tmp_path) as st:
        d = st.store.put_bytes(b"x" * 5000)
        st.meta.put_blob(BlobInfo(d, 5000, "application/octet-stream"))
    assert main(["du"]) == 0
    out = capsys.readouterr().out
    assert "blob" in out and "Total" in out
    assert main(["prune", "--keep-storage", "1GB"]) == 0
    assert "Total reclaimed space: 0B" in capsys.readouterr().out
    assert main(["prune", "--all"]) == 0
    assert "Deleted 1 entries" in capsys.readouterr().out
    with StateRoot.open(tmp_path) as st:
        assert not st.store.has(d)


def test_prune_waits_for_a_running_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mason prune` under a running build (shared lock) says it waits, deletes nothing until
    the build ends, then prunes."""
    monkeypatch.setenv("MASON_ROOT", str(tmp_path))
    build = StateRoot.open(tmp_path)
    try:
        d = build.store.put_bytes(b"x" * 5000)
        build.meta.put_blob(BlobInfo(d, 5000, "application/octet-stream"))
        codes: list[int] = []
        pruner = threading.Thread(target=lambda: codes.append(main(["prune", "--all"])))
        pruner.start()
        err = ""
        for _ in range(200):  # until prune reports that it waits (bounded, not a timing assert)
            err += capsys.readouterr().err
            if "waiting for the builds" in err:
                break
            pruner.join(0.05)
        assert "waiting for the builds" in err and pruner.is_alive()
        assert build.store.has(d)
    finally:
        build.close()
    pruner.join(30)
    assert codes == [0] and "Deleted 1 entries" in capsys.readouterr().out
    with StateRoot.open(tmp_path) as st:
        assert not st.store.has(d)


def test_rich_renderer_runs_headless() -> None:
    """The TTY renderer accepts every event kind and stops cleanly."""
    out = io.StringIO()
    r = RichRenderer(out)
    for status in ("started", "log", "cached", "done", "error", "warning"):
        r.emit(Event("v" + status, "[s 1/1] RUN x", status, "text"))  # type: ignore[arg-type]
    r.close()
    assert "RUN x" in out.getvalue()
