"""``mason build --explain-cache``: say why a step that ran missed the cache (docs/architecture.md §8).

Every build keeps, per *step identity*, the preimage of the last key the step was built or
hit with (``step_keys`` in the sqlite metadata), and for a COPY/ADD from the context one
checksum per selected file. A step that runs is compared with what its identity last had:
the first differing field of the two preimages (``mason.solver.diff_keys``) is rendered as
one status line, ``cache miss: <reason>``, in the step's progress block.

The identity is the context directory, the Dockerfile's name and the step's display name
(``[build 2/6] RUN make``: stage name, step number, instruction text) with a pinned base
digest left out, so ``FROM busybox`` is the same step when the tag moves. Renaming a stage or
inserting a line gives new identities: their misses say there is no earlier build.

Values of environment variables and build args are never printed (they may hold tokens);
only their names are.

A fresh machine has no earlier build of its own: the exported cache carries, beside each
record (``mason.explain``, which BuildKit ignores), the step's key preimage with every
environment value replaced by a digest of ``NAME=value`` (``redact_preimage``) and the context
files it selected (``exported_inputs``). A step with no kept key on this root is compared with
the entry of the same step name in the imported caches, both sides redacted alike.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from mason.digest import canonical_json, sha256_bytes
from mason.engine.context import ContextEntry
from mason.errors import MasonError
from mason.solver import CacheKey, KeyDifference, Vertex, diff_keys
from mason.structs import Struct

__all__ = [
    "MISS_PREFIX",
    "ExplainRecorder",
    "FileEntry",
    "StepRecord",
    "context_file_entries",
    "explain_miss",
    "exported_inputs",
    "redact_preimage",
    "step_identity",
]

MISS_PREFIX = "cache miss: "
NO_EARLIER = "no earlier build of this step on this root or in the imported caches"
#: A COPY of more files keeps only its aggregate checksum (its misses name no file).
MAX_FILES = 20000

_PINNED = re.compile(r"@sha256:[0-9a-f]{64}")
#: An exported step lists at most this many context files (else only its aggregate checksum).
MAX_EXPORTED_FILES = 2000


def redact_preimage(preimage: bytes) -> bytes:
    """A ``mason.v1`` key preimage fit to leave the machine: each environment entry's value
    (build args land there) replaced by the digest of ``NAME=value``. BuildKit's own record
    digest already hashes those values, so the digest tells no more; equal values still
    compare equal, so a miss can name the variable. Secrets never enter a preimage."""
    from mason.engine.gitsource import redact_credentials_in

    doc = json.loads(preimage)
    op = doc.get("op")
    if isinstance(op, dict) and isinstance(op.get("env"), list):
        op["env"] = [
            f"{str(e).partition('=')[0]}={sha256_bytes(str(e).encode())}" for e in op["env"]
        ]
    action = op.get("action") if isinstance(op, dict) else None
    if isinstance(action, dict) and isinstance(action.get("urls"), list):
        action["urls"] = [redact_credentials_in(str(u)) for u in action["urls"]]
    return canonical_json(doc)


def exported_inputs(key: CacheKey, op: object) -> dict[str, Any]:
    """What the cache keeps beside a step's record for ``--explain-cache`` on another machine:
    the step's redacted preimage and the context files its op selected."""
    out: dict[str, Any] = {"key": json.loads(redact_preimage(key.preimage))}
    # read after the preimage: making a deferred one walks the files (``DeferredKey``)
    files: Sequence[FileEntry] | None = getattr(op, "context_files", None)
    if files is not None and len(files) <= MAX_EXPORTED_FILES:
        out["files"] = [f.to_json() for f in files]
    return out


class FileEntry(Struct, frozen=True):
    """One context entry a COPY selected: ``kind`` is file, dir, symlink or other;
    ``checksum`` the content's sha256, a symlink's target, or "" (dirs, others)."""

    path: str
    kind: str
    mode: int
    checksum: str

    def to_json(self) -> list[Any]:
        return [self.path, self.kind, self.mode, self.checksum]

    @staticmethod
    def from_json(value: list[Any]) -> FileEntry:
        return FileEntry(str(value[0]), str(value[1]), int(value[2]), str(value[3]))


class StepRecord(Struct, frozen=True):
    """What a step identity was last built or hit with; ``redacted`` when it came from an
    imported cache (its environment values are digests: compare a redacted key with it)."""

    key: CacheKey
    files: tuple[FileEntry, ...] | None = None
    redacted: bool = False


def context_file_entries(entries: Sequence[ContextEntry]) -> tuple[FileEntry, ...] | None:
    """The ``FileEntry``s of a walk ``checksum_sources`` recorded, or None past ``MAX_FILES``."""
    if len(entries) > MAX_FILES:
        return None
    return tuple(FileEntry(*entry) for entry in entries)


def step_identity(context: Path, dockerfile: str, name: str) -> str:
    return "\0".join((str(context.resolve()), dockerfile, _PINNED.sub("", name)))


def _short(value: Any) -> str:
    if isinstance(value, str) and value.startswith("sha256:") and len(value) == 71:
        return value[:19]
    text = (
        "none"
        if value is None
        else value
        if isinstance(value, str)
        else json.dumps(value, sort_keys=True)
    )
    return text if len(text) <= 60 else text[:59] + "…"


def _arrow(old: Any, new: Any) -> str:
    return f"({_short(old)} → {_short(new)})"


def _env_reason(old: list[str], new: list[str], build_args: Collection[str]) -> str:
    a = dict(e.partition("=")[::2] for e in old)
    b = dict(e.partition("=")[::2] for e in new)
    names = [n for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]
    if not names:
        return "environment order changed"
    names.sort(key=lambda n: n not in build_args)  # a build arg is the likelier cause: first
    first = names[0]
    what = "build arg" if first in build_args else "environment variable"
    change = "added" if first not in a else "removed" if first not in b else "changed"
    more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
    return f"{what} {first} {change}{more}"


_EXEC_FIELDS = {
    "op.args": "command changed",
    "op.mounts": "RUN --mount options changed",
    "op.files": "RUN heredoc changed",
}
_EXEC_VALUES = {
    "op.cwd": "working directory",
    "op.user": "user",
    "op.network": "network mode",
    "op.epoch": "SOURCE_DATE_EPOCH",
}
_FILE_FIELDS = {
    "sources": "sources",
    "dest": "destination",
    "from": "--from",
    "chown": "--chown",
    "chmod": "--chmod",
    "link": "--link",
    "urls": "URL",
    "git": "git source",
    "checksum": "--checksum",
    "inline": "heredoc",
    "user": "owner",
    "extract": "extraction",
}


def _op_reason(d: KeyDifference, verb: str, build_args: Collection[str]) -> str:
    if d.field == "op.type":
        return f"step definition format changed {_arrow(d.old, d.new)}"
    if d.field == "op.image":
        return f"base image changed {_arrow(d.old, d.new)}"
    if d.field == "op.env":
        return _env_reason(list(d.old or ()), list(d.new or ()), build_args)
    if d.field in _EXEC_FIELDS:
        return _EXEC_FIELDS[d.field]
    if d.field in _EXEC_VALUES:
        return f"{_EXEC_VALUES[d.field]} changed {_arrow(d.old, d.new)}"
    if d.field.startswith("op.action."):
        name = d.field.removeprefix("op.action.")
        return f"{verb} {_FILE_FIELDS.get(name, name)} changed {_arrow(d.old, d.new)}"
    return f"step definition changed ({d.field.removeprefix('op.')})"


def _files_reason(old: tuple[FileEntry, ...], new: tuple[FileEntry, ...], verb: str) -> str | None:
    a = {e.path: e for e in old}
    b = {e.path: e for e in new}
    for path in sorted(set(a) | set(b)):
        x, y = a.get(path), b.get(path)
        if x == y:
            continue
        if x is None:
            return f"{verb} source {path} added"
        if y is None:
            return f"{verb} source {path} removed"
        if x.kind != y.kind:
            return f"{verb} source {path} changed (type {x.kind} → {y.kind})"
        what = []
        if x.checksum != y.checksum:
            what.append("symlink target" if y.kind == "symlink" else "content")
        if x.mode != y.mode:
            what.append(f"mode {x.mode:04o} → {y.mode:04o}")
        return f"{verb} source {path} changed ({', '.join(what)})"
    return None


def explain_miss(
    old: StepRecord | None,
    new: CacheKey,
    new_files: tuple[FileEntry, ...] | None = None,
    *,
    verb: str = "COPY",
    input_reasons: Sequence[str] = (),
    build_args: Collection[str] = (),
    no_cache: bool = False,
) -> str:
    """The reason a step with key ``new`` ran, against what its identity had before (``old``).

    ``input_reasons[i]`` says how input ``i`` changed (``input step [b 2/3] RUN x changed``).
    Op-definition changes come first, then the content, then the inputs: an input that
    changed is explained in that input's own block.
    """
    if no_cache:
        return "cache not used (--no-cache)"
    if old is None:
        return NO_EARLIER
    diffs = diff_keys(old.key, new)
    if not diffs:
        return "key unchanged since the last build, but its result is no longer stored (pruned?)"
    by_field = {d.field: d for d in diffs}
    if "v" in by_field:
        return f"cache key format changed {_arrow(by_field['v'].old, by_field['v'].new)}"
    if "op.type" in by_field:
        return _op_reason(by_field["op.type"], verb, build_args)
    for d in diffs:
        if d.field.startswith("op."):
            return _op_reason(d, verb, build_args)
    if "content" in by_field:
        if old.files is not None and new_files is not None:
            reason = _files_reason(old.files, new_files, verb)
            if reason is not None:
                return reason
            return f"downloaded content of {verb} URL changed"
        if str(new.op.get("type", "")).startswith("mason.exec."):
            return "bind-mounted context files changed"
        if (new.op.get("action") or {}).get("git"):  # the content is the commits the refs name
            return f"{verb} git repository moved to another commit"
        return f"{verb} sources changed (content)"
    if "inputs" in by_field:
        return f"number of inputs changed {_arrow(by_field['inputs'].old, by_field['inputs'].new)}"
    for d in diffs:
        if d.field.startswith("inputs["):
            i = int(d.field[7:-1])
            return input_reasons[i] if i < len(input_reasons) else f"input {i} changed"
    return "key changed"  # not reached: every field of a preimage is handled above


class ExplainRecorder:
    """Wraps the builder's ``SolveProgress``: keeps every step's key (``flush`` writes them)
    and, with ``explain``, adds the ``cache miss:`` line when a step starts.

    ``note(vertex, text)`` writes a status line into a vertex's block (the progress adapter's).
    """

    def __init__(
        self,
        inner: Any,
        meta: Any,
        *,
        context: Path,
        dockerfile: str,
        build_args: Collection[str],
        explain: bool,
        imported: Sequence[Any] = (),
    ) -> None:
        self.imported = imported
        self._imported_index: dict[str, StepRecord] | None = None
        self.inner = inner
        self.meta = meta
        self.context = context
        self.dockerfile = dockerfile
        self.build_args = frozenset(build_args)
        self.explain = explain
        self._pending: dict[str, tuple[Vertex[Any], CacheKey]] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # the other SolveProgress callbacks
        return getattr(self.inner, name)

    def _identity(self, vertex: Vertex[Any]) -> str:
        return step_identity(self.context, self.dockerfile, vertex.name)

    def _keep(self, vertex: Vertex[Any], key: CacheKey) -> None:
        with self._lock:
            self._pending[self._identity(vertex)] = (vertex, key)

    def _rows(self) -> tuple[list[tuple[str, str, bytes, str | None]], list[str]]:
        """The pending steps' rows to write, and the identities kept with the same key
        already (only touched: their preimages, made on first read, are not made)."""
        with self._lock:
            pending = list(self._pending.items())
            self._pending.clear()
        same = self.meta.step_key_digests([i for i, _ in pending])
        rows: list[tuple[str, str, bytes, str | None]] = []
        touched: list[str] = []
        for identity, (vertex, key) in pending:
            if same.get(identity) == key.digest:
                touched.append(identity)
                continue
            preimage = key.preimage  # first: making it may walk the context files
            files = getattr(vertex.op, "context_files", None)
            files_json = (
                None
                if files is None
                else json.dumps([f.to_json() for f in files], separators=(",", ":"))
            )
            rows.append((identity, key.digest, preimage, files_json))
        return rows, touched

    def _from_imports(self, vertex: Vertex[Any]) -> StepRecord | None:
        """The entry of the same step in the imported caches (first cache first)."""
        if self._imported_index is None:
            index: dict[str, StepRecord] = {}
            for source in self.imported:
                config = source.config
                for digest, entry in config.explain.items():
                    step = config.steps.get(digest)
                    name = _PINNED.sub("", step) if step else None
                    if name is None or name in index or not isinstance(entry.get("key"), dict):
                        continue
                    try:  # another machine's data: a malformed entry explains nothing
                        files = entry.get("files")
                        index[name] = StepRecord(
                            CacheKey.from_preimage(canonical_json(entry["key"])),
                            None if files is None else tuple(map(FileEntry.from_json, files)),
                            redacted=True,
                        )
                    except (KeyError, IndexError, TypeError, ValueError):
                        continue
            self._imported_index = index
        return self._imported_index.get(_PINNED.sub("", vertex.name))

    def _stored(self, vertex: Vertex[Any]) -> StepRecord | None:
        row = self.meta.step_key(self._identity(vertex))
        if row is None:
            return self._from_imports(vertex) if self.imported else None
        _, preimage, files_json = row
        files = (
            None
            if files_json is None
            else tuple(FileEntry.from_json(v) for v in json.loads(files_json))
        )
        return StepRecord(CacheKey.from_preimage(preimage), files)

    def _input_reason(self, vertex: Vertex[Any], i: int) -> str:
        iv = vertex.inputs[i]
        new = getattr(iv.op, "manifest_digest", None)
        if new is None:
            return f"input step {iv.name} changed"
        old = self._stored(iv)
        old_image = old.key.op.get("image") if old is not None else None
        return (
            f"base image changed {_arrow(old_image, new)}"
            if old_image
            else f"base image changed (now {_short(new)})"
        )

    def explain_text(self, vertex: Vertex[Any], key: CacheKey) -> str:
        verb = m.group(1) if (m := re.search(r"\] (\w+)", vertex.name)) else "COPY"
        old = self._stored(vertex)
        preimage = key.preimage  # made first: a DeferredKey's walks the context files
        if old is not None and old.redacted:
            key = CacheKey.from_preimage(redact_preimage(preimage))
        return explain_miss(
            old,
            key,
            getattr(vertex.op, "context_files", None),
            verb=verb.upper(),
            input_reasons=[self._input_reason(vertex, i) for i in range(len(vertex.inputs))],
            build_args=self.build_args,
            no_cache=vertex.ignore_cache,
        )

    def vertex_started(self, vertex: Vertex[Any], key: CacheKey) -> None:
        self.inner.vertex_started(vertex, key)
        if self.explain:
            try:
                text = self.explain_text(vertex, key)
            except Exception as exc:  # advisory only: never fail a build over it
                text = f"not explained ({type(exc).__name__}: {exc})"
            self.inner.note(vertex, MISS_PREFIX + text)

    def vertex_cached(self, vertex: Vertex[Any], key: CacheKey, source: str) -> None:
        self._keep(vertex, key)
        self.inner.vertex_cached(vertex, key, source)

    def vertex_done(self, vertex: Vertex[Any], key: CacheKey, elapsed: float) -> None:
        self._keep(vertex, key)
        self.inner.vertex_done(vertex, key, elapsed)

    def flush(self) -> None:
        """Write the kept keys (also after a failed build: the steps that finished are valid)."""
        # advisory data: a metadata hiccup or a preimage that cannot be made (the context
        # changed under the build) must not fail (or mask the failure of) a build
        with contextlib.suppress(sqlite3.Error, OSError, MasonError):
            rows, touched = self._rows()
            self.meta.put_step_keys(rows, touched)
