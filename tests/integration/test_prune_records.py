"""Issue 13, defect 1: `mason prune --keep-storage X` prunes by cached results and the
chains they reach, least recently used first: afterwards the root holds at most X bytes and
the most recently used build is still fully cached (the shared base layer was deleted
first once, which invalidated every result)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.support.cli import expect_ok, mason, mason_build

from mason.engine.state import StateRoot

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (overlayfs, runc)")


def _usage(root: Path) -> int:
    with StateRoot.open(root) as st:
        return sum(e.size for e in st.usage())


def _context(tmp_path: Path, name: str, dockerfile: str) -> Path:
    ctx = tmp_path / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


def test_prune_to_a_size_keeps_the_latest_build_whole(busybox_image: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    old = _context(
        tmp_path, "old", f"FROM {busybox_image}\nRUN head -c 3000000 /dev/urandom > /big\n"
    )
    new = _context(
        tmp_path, "new", f"FROM {busybox_image}\nRUN echo small > /small\nRUN echo more > /more\n"
    )
    expect_ok(mason_build(root, "-o", f"type=oci,dest={tmp_path / 'old.tar'}", str(old)))
    expect_ok(mason_build(root, "-o", f"type=oci,dest={tmp_path / 'new.tar'}", str(new)))
    before = _usage(root)
    target = before - 2_000_000  # the old build's 3 MB layer (and its snapshot) must go
    expect_ok(mason(root, "prune", "--keep-storage", str(target)))
    after = _usage(root)
    assert after <= target, (before, after, target)

    again = expect_ok(mason_build(root, "-o", f"type=oci,dest={tmp_path / 'again.tar'}", str(new)))
    log = again.stderr + again.stdout
    assert log.count("CACHED") == 3, log  # FROM and both RUNs


def test_keep_duration_prunes_only_what_was_not_used_since(
    busybox_image: str, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    ctx = _context(tmp_path, "ctx", f"FROM {busybox_image}\nRUN echo kept > /kept\n")
    expect_ok(mason_build(root, "-o", f"type=oci,dest={tmp_path / 'a.tar'}", str(ctx)))
    before = _usage(root)
    du = expect_ok(mason(root, "du", "--verbose")).stdout
    record = next(line for line in du.splitlines() if line.endswith("[2/2] RUN echo kept > /kept"))
    assert record.startswith("just now") and "B" in record.split()[2], du  # last use, layer size
    out = expect_ok(mason(root, "prune", "--keep-duration", "1h")).stdout
    assert "Deleted 0 entries" in out and _usage(root) == before
    out = expect_ok(mason(root, "prune", "--filter", "until=0s")).stdout
    assert _usage(root) < before and "Deleted 0 entries" not in out
