"""Unchanged rebuilds' memos (mason.engine.rebuilds): what the context fingerprint notices, when
a context is too fresh to be trusted, and that a memo which does not read back is no memo."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mason.engine.rebuilds import (
    MEMO_DIR,
    context_fingerprint,
    drop_memos,
    load_memo,
    save_memo,
    still_true,
)
from mason.oci.descriptor import Descriptor
from mason.oci.reference import Reference

_DIGEST = "sha256:" + "a" * 64
_OTHER = "sha256:" + "b" * 64


def _context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "app" / "deep").mkdir(parents=True)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY app /app\n")
    (ctx / "app" / "a.txt").write_text("one\n")
    (ctx / "app" / "deep" / "b.txt").write_text("two\n")
    (ctx / "link").symlink_to("app/a.txt")
    return ctx


def _memo(**overrides: object) -> dict[str, object]:
    memo: dict[str, object] = {
        "context": "f" * 64,
        "resolved_tags": {"127.0.0.1:5000/base/busybox:latest": _DIGEST},
        "pushed": {"127.0.0.1:5000/app:1": _OTHER},
        "progress": "#1 [internal] load build definition from Dockerfile\n",
        "image_digest": _OTHER,
        "metadata": {"containerimage.digest": _OTHER},
    }
    memo.update(overrides)
    return memo


def test_fingerprint_is_stable_and_notices_every_kind_of_change(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    first = context_fingerprint(ctx, None)
    assert first is not None and first == context_fingerprint(ctx, None)
    seen = {first}

    def changed() -> str:
        now = context_fingerprint(ctx, None)
        assert now is not None and now not in seen
        seen.add(now)
        return now

    deep = ctx / "app" / "deep" / "b.txt"
    before = deep.stat()
    deep.write_text("TWO\n")  # same size; the mtime put back: only the ctime tells
    os.utime(deep, ns=(before.st_atime_ns, before.st_mtime_ns))
    changed()
    (ctx / "link").unlink()
    (ctx / "link").symlink_to("app/deep/b.txt")
    changed()
    (ctx / "app" / "new.txt").write_text("")
    changed()
    (ctx / "app" / "new.txt").unlink()
    changed()
    os.chmod(ctx / "app" / "a.txt", 0o600)
    changed()


def test_fingerprint_covers_a_dockerfile_outside_the_context(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    outside = tmp_path / "dockerfiles" / "Dockerfile"
    outside.parent.mkdir()
    outside.write_text("FROM scratch\n")
    first = context_fingerprint(ctx, outside)
    assert first is not None and first != context_fingerprint(ctx, None)
    (outside.parent / "Dockerfile.dockerignore").write_text("app\n")  # its directory changed
    assert context_fingerprint(ctx, outside) != first


def test_a_context_changed_just_before_the_build_is_not_settled(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    assert context_fingerprint(ctx, None, settled_before=time.time_ns()) is None
    old = time.time_ns() - 10 * 1_000_000_000
    for path in (ctx, *ctx.rglob("*")):
        os.utime(path, ns=(old, old), follow_symlinks=False)
    # the ctimes are still new (utime sets it): nothing is settled until time passes
    assert context_fingerprint(ctx, None, settled_before=time.time_ns()) is None
    later = time.time_ns() + 5 * 1_000_000_000
    assert context_fingerprint(ctx, None, settled_before=later) == context_fingerprint(ctx, None)


def test_an_unreadable_context_has_no_fingerprint(tmp_path: Path) -> None:
    assert context_fingerprint(tmp_path / "missing", None) is None


def test_memo_round_trip_is_owner_only(tmp_path: Path) -> None:
    save_memo(tmp_path, "k1", _memo())
    assert load_memo(tmp_path, "k1") == {**_memo(), "format": 1}
    path = tmp_path / MEMO_DIR / "k1.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_memo(tmp_path, "k2") is None
    drop_memos(tmp_path)
    assert load_memo(tmp_path, "k1") is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],
        lambda raw: b"[]",
        lambda raw: raw.replace(b'"format": 1', b'"format": 99'),
        lambda raw: raw.replace(b'"progress"', b'"progres"'),
        lambda raw: raw.replace(b'"pushed": {', b'"pushed": 7, "was": {'),
    ],
)
def test_a_damaged_memo_is_no_memo(tmp_path: Path, damage: Callable[[bytes], bytes]) -> None:
    save_memo(tmp_path, "k", _memo())
    path = tmp_path / MEMO_DIR / "k.json"
    raw = path.read_bytes()
    path.write_bytes(damage(raw))
    assert load_memo(tmp_path, "k") is None


class _Registry:
    """What a registry client answers to the two questions a replay asks."""

    def __init__(self, tags: dict[str, str], pushed: dict[str, str]) -> None:
        self.tags = tags
        self.pushed = pushed
        self.asked: list[tuple[str, bool]] = []

    def head_manifest(self, ref: Reference) -> Descriptor | None:
        self.asked.append((str(ref), False))
        digest = self.tags.get(str(ref))
        return None if digest is None else Descriptor("application/json", digest, 1)

    def names(self, ref: Reference, digest: str) -> bool:
        self.asked.append((str(ref), True))
        return self.pushed.get(str(ref)) == digest

    def map_bounded(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return [fn(i) for i in items]


def test_still_true_asks_for_every_tag_and_pushed_name() -> None:
    base, app = "127.0.0.1:5000/base/busybox:latest", "127.0.0.1:5000/app:1"
    registry = _Registry({base: _DIGEST}, {app: _OTHER})
    assert still_true(_memo(), registry)
    assert sorted(registry.asked) == [(app, True), (base, False)]
    assert not still_true(_memo(), _Registry({base: _OTHER}, {app: _OTHER}))  # the tag moved
    assert not still_true(_memo(), _Registry({base: _DIGEST}, {app: _DIGEST}))  # overwritten
    assert not still_true(_memo(), _Registry({base: _DIGEST}, {}))  # deleted
