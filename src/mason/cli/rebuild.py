"""`mason build` again with nothing changed: answered from the memo of the last such build on
this root (``mason.engine.rebuilds``) without loading the engine.

Only a plain ``--push -t NAME...`` build is memoised: no ``--output``, no cache import or export,
no ``--no-cache``, named contexts, secrets or ssh agents, a local context and Dockerfile, and
progress that is plain text (``plain``, ``quiet``, or ``auto`` off a terminal). The key hashes
the parsed command line, the working directory, the environment (but for what a shell changes
on its own), the terminal-ness of stderr, the user, the Python and the mason code (every source
file's size and mtime).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO, cast

__all__ = ["Rebuild", "Tee", "prepare_rebuild"]

#: variables a shell sets on its own, which say nothing about the build
_SHELL_VARIABLES = frozenset({"_", "OLDPWD", "PWD", "SHLVL"})


#: the most progress text a build keeps for its memo: a fully cached build prints a few KiB;
#: one that printed more ran steps (no memo), and its logs are not held in memory
_KEPT_TEXT = 1 << 20


class Tee:
    """A text stream that writes through to ``stream`` and keeps what was written (up to
    ``_KEPT_TEXT`` characters: past it, nothing)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.parts: list[str] = []
        self._kept = 0

    def write(self, text: str) -> int:
        if self._kept <= _KEPT_TEXT:
            self._kept += len(text)
            self.parts.append(text)
            if self._kept > _KEPT_TEXT:
                self.parts.clear()
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        return self.stream.encoding

    def text(self) -> str | None:
        """What was written, or None when it was more than is kept."""
        return None if self._kept > _KEPT_TEXT else "".join(self.parts)

    def as_stream(self) -> TextIO:
        """This tee where a ``TextIO`` is asked for (it has what a renderer and print use)."""
        return cast(TextIO, self)


class Rebuild:
    """One memoisable build: its key, root, context and Dockerfile, and when it started."""

    def __init__(self, root: Path, key: str, context: Path, dockerfile: Path | None) -> None:
        self.root = root
        self.key = key
        self.context = context
        self.dockerfile = dockerfile
        #: read before the build reads anything: what changed after it is not settled
        self.started_ns = time.time_ns()

    def replay(self, early: Any) -> dict[str, Any] | None:
        """The memo when it still holds (same context, the registries name the same digests),
        else None. Any doubt is a miss: the build then runs and reports what it finds."""
        from mason.engine.rebuilds import context_fingerprint, load_memo, still_true

        memo = load_memo(self.root, self.key)
        if memo is None or context_fingerprint(self.context, self.dockerfile) != memo["context"]:
            return None
        from mason.errors import MasonError
        from mason.registry.client import RegistryClient

        try:
            with RegistryClient.for_user(
                os.environ.get("DOCKER_CONFIG"), os.environ.get("REGISTRY_AUTH_FILE"), early=early
            ) as client:
                return memo if still_true(memo, client) else None
        except (MasonError, OSError, ValueError):
            return None

    def record(self, outcome: Any, progress: str | None, names: list[str]) -> None:
        """Keep ``outcome`` for the next identical build when it may answer one: no step ran,
        nothing outside the context and images was read, the context was settled (and its
        progress text was kept)."""
        from mason.engine.rebuilds import context_fingerprint, save_memo

        if (
            progress is None
            or outcome.executed_steps
            or outcome.outside_inputs
            or not outcome.image_digest
        ):
            return
        fingerprint = context_fingerprint(self.context, self.dockerfile, self.started_ns)
        if fingerprint is None:
            return
        memo = {
            "context": fingerprint,
            "resolved_tags": outcome.resolved_tags,
            "pushed": dict.fromkeys(names, str(outcome.image_digest)),
            "progress": progress,
            "image_digest": str(outcome.image_digest),
            "metadata": outcome.metadata,
        }
        save_memo(self.root, self.key, memo)


def prepare_rebuild(args: argparse.Namespace, mode: str, local_context: bool) -> Rebuild | None:
    """The build's ``Rebuild`` when its result may be memoised, else None."""
    if not (
        args.call == "build"
        and args.push
        and args.tags
        and local_context
        and args.file != "-"
        and (mode in ("plain", "quiet") or (mode == "auto" and not sys.stderr.isatty()))
    ):
        return None
    if (
        args.outputs
        or args.cache_to
        or args.cache_from
        or args.no_cache
        or args.no_cache_filter
        or args.build_contexts
        or args.secrets
        or args.ssh
        or args.explain_cache
    ):
        return None
    from mason.cli.state_cmd import resolve_root

    return Rebuild(
        resolve_root(),
        _key(args, mode),
        Path(args.context),
        Path(args.file) if args.file else None,
    )


def _key(args: argparse.Namespace, mode: str) -> str:
    from mason.digest import new_sha256

    given = {k: v for k, v in sorted(vars(args).items()) if k != "handler"}
    env = sorted((k, v) for k, v in os.environ.items() if k not in _SHELL_VARIABLES)
    what = {
        "args": given,
        "cwd": os.getcwd(),
        "env": env,
        "mode": mode,
        "tty": sys.stderr.isatty(),
        "user": [os.getuid(), os.getgid()],
        "python": sys.version,
        "code": _code_identity(),
    }
    return new_sha256(json.dumps(what, default=str).encode()).hexdigest()


def _code_identity() -> list[tuple[str, int, int]]:
    """Every mason source file's path, size and mtime: another mason makes another key."""
    import mason

    top = Path(mason.__file__).parent
    found: list[tuple[str, int, int]] = []
    pending = [top]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and entry.name != "__pycache__":
                    pending.append(Path(entry.path))
                elif entry.name.endswith(".py"):
                    st = entry.stat()
                    found.append((entry.path, st.st_size, st.st_mtime_ns))
    return sorted(found)
