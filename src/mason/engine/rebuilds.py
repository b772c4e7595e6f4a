"""Unchanged rebuilds: a build on the same root with the same command line, environment, context
and base images as one that was answered from the cache in full is answered from what that build
recorded, after checking in the registry that its inputs and outputs are still what they were
(docs/architecture.md, "Unchanged rebuilds").

A memo is written only for a build in which no step ran, that read nothing besides its context,
its Dockerfile and images resolved by tag (no ``ADD`` of a URL or git repository), and whose
context was *settled* when the build started (``mason.engine.racy``: no file or directory
changed within a timestamp tick of it). It holds the context's fingerprint (the ``lstat`` of
every entry below the context directory, and of the Dockerfile and its directory), the digest
each tag resolved to, the digest pushed to each name, the progress text and the build's
metadata. It is used when the fingerprint is equal and the registry still names the same
digests: the result is then the one the build would make again, already where it would push it.
Anything else -- a missing, unreadable or damaged memo, an error asking the registry -- is a
miss, and the build runs. ``mason prune`` drops every memo.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from mason.digest import new_sha256
from mason.engine.racy import file_identity, settled
from mason.oci.atomic import atomic_write_bytes

__all__ = ["Memo", "context_fingerprint", "drop_memos", "load_memo", "save_memo", "still_true"]

#: the root's directory of memos, one file per key (the key hashes the command line and more)
MEMO_DIR = "rebuilds"
_FORMAT = 1

#: a memo as JSON: format, context, resolved_tags, pushed, progress, image_digest, metadata
Memo = dict[str, Any]


def _memo_path(root: Path, key: str) -> Path:
    return root / MEMO_DIR / f"{key}.json"


def context_fingerprint(
    context: Path, dockerfile: Path | None, settled_before: int | None = None
) -> str | None:
    """The sha256 of the ``lstat`` of the context directory and of every entry below it (no
    symlink followed), and of the Dockerfile and its directory. With ``settled_before`` (a
    ``time.time_ns()`` read before the build read anything), None when an entry was not settled
    by then; None too when an entry cannot be read."""
    h = new_sha256()

    def note(name: str, st: os.stat_result) -> bool:
        h.update(name.encode("utf-8", "surrogateescape") + b"\0")
        h.update(repr(file_identity(st)).encode())
        return settled_before is None or settled(st, settled_before)

    try:
        if not note(".", os.stat(context)):
            return None
        pending = [""]
        while pending:
            rel = pending.pop()
            with os.scandir(context / rel if rel else context) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    name = f"{rel}/{entry.name}" if rel else entry.name
                    st = entry.stat(follow_symlinks=False)
                    if not note(name, st):
                        return None
                    if stat.S_ISDIR(st.st_mode):
                        pending.append(name)
        if dockerfile is not None:
            absolute = dockerfile if dockerfile.is_absolute() else Path.cwd() / dockerfile
            for path in (absolute, absolute.parent):
                if not note(f"//{path}", os.stat(path)):
                    return None
    except OSError:
        return None
    return h.hexdigest()


def load_memo(root: Path, key: str) -> Memo | None:
    """The memo recorded under ``key``, or None (none, unreadable, another format, damaged)."""
    try:
        raw = _memo_path(root, key).read_bytes()
        memo = json.loads(raw)
    except (OSError, ValueError):
        return None
    fields = {
        "format": int,
        "context": str,
        "resolved_tags": dict,
        "pushed": dict,
        "progress": str,
        "image_digest": str,
        "metadata": dict,
    }
    if not isinstance(memo, dict) or any(
        not isinstance(memo.get(name), kind) for name, kind in fields.items()
    ):
        return None
    return memo if memo["format"] == _FORMAT else None


def save_memo(root: Path, key: str, memo: Memo) -> None:
    """Record ``memo`` under ``key`` (replacing one atomically; owner-only, as the root is).
    A memo that cannot be written is no memo: the next build runs."""
    path = _memo_path(root, key)
    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, exist_ok=True)
        data = json.dumps({**memo, "format": _FORMAT}, sort_keys=True).encode()
        atomic_write_bytes(str(path), data, 0o600)


def drop_memos(root: Path) -> None:
    """Forget every memo of ``root`` (``mason prune``: what they answered from may be gone)."""
    import shutil

    shutil.rmtree(root / MEMO_DIR, ignore_errors=True)


def still_true(memo: Memo, client: Any) -> bool:
    """Whether every tag the build resolved names the same digest, and every name it pushed
    holds its image, asking the registries (in parallel)."""
    from mason.oci.reference import Reference

    checks = [(ref, digest, False) for ref, digest in memo["resolved_tags"].items()]
    checks += [(name, digest, True) for name, digest in memo["pushed"].items()]

    def holds(check: tuple[str, str, bool]) -> bool:
        ref, digest, pushed = check
        parsed = Reference.parse(ref)
        if pushed:
            return bool(client.names(parsed, digest))
        found = client.head_manifest(parsed)  # through registries.conf, as a build resolves it
        return found is not None and str(found.digest) == digest

    return all(client.map_bounded(holds, checks))
