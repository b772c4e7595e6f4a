"""Local state in ``$MASON_ROOT``: content store, sqlite metadata, process lock.

Layout of a root (the root and mason's directories 0700, its files 0600; a root made by an
older mason is tightened when opened)::

    lock                 fcntl lock file (shared while building, exclusive to prune/clean)
    meta.db              sqlite3: results, blobs, compressed variants, snapshots
    blobs/sha256/<hex>   content-addressed blobs (layers, configs, manifests)
    tmp/                 temp files; renamed into place or removed; leftovers cleaned on start
    snapshots/           snapshot directories (managed by mason.layer through build.snapshots)
    cachemounts/         RUN --mount=type=cache directories (each with the mode= it asks for)
    cachemount-locks/    flock files of the cache mounts

Crash consistency: every blob is written to ``tmp/`` then fsynced and renamed;
metadata changes are sqlite transactions; a blob row is only written after the
blob is in place, so a crash leaves at worst an unreferenced file that the next
exclusive ``clean`` (start of a build when no other process holds the root, or
``prune``) removes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from mason.build.secrets import remove_orphaned_secrets
from mason.digest import Digest, HashingWriter, VerifyingReader, parse_digest
from mason.errors import DiagnosticError, DigestMismatchError
from mason.oci.atomic import fsync_dir

__all__ = [
    "BlobInfo",
    "CachedResult",
    "ContentStore",
    "LayerRef",
    "Metadata",
    "StateError",
    "StateRoot",
    "UsageEntry",
    "human_size",
    "parse_size",
]

_CHUNK = 1 << 20
#: everything mason keeps in a root is for its user only (cache mounts and metadata can hold
#: what a build fetched with credentials); a snapshot's content keeps the image's own modes,
#: behind its 0700 parent
_PRIVATE_DIR = 0o700
_PRIVATE_FILE = 0o600


def _tighten(path: Path, mode: int) -> None:
    """Drop permission bits beyond ``mode`` from ``path`` if it exists, is not a symlink and is
    ours (a root made by an older mason was 0755/0644)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    current = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid() or not current & ~mode:
        return
    os.chmod(path, current & mode)


def _tighten_root(path: Path) -> None:
    """The root itself, unless it is a shared directory (sticky or world-writable, e.g.
    ``MASON_ROOT=/tmp``): mason never takes such a directory away from its other users."""
    st = os.stat(path)
    if st.st_mode & (stat.S_ISVTX | stat.S_IWOTH):
        return
    _tighten(path, _PRIVATE_DIR)


class StateError(DiagnosticError):
    """``$MASON_ROOT`` is unusable or inconsistent."""

    reference = "state-error"


@dataclass(frozen=True)
class BlobInfo:
    digest: Digest
    size: int
    media_type: str


@dataclass(frozen=True)
class LayerRef:
    """One layer of a result chain: its uncompressed diff ID and, when known, a blob
    that holds it (possibly only in a remote cache, not yet in the content store)."""

    diff_id: Digest
    blob: Digest | None = None
    blob_size: int = 0
    media_type: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"diff_id": self.diff_id, "blob": self.blob, "size": self.blob_size, "media_type": self.media_type}

    @staticmethod
    def from_json(d: dict[str, Any]) -> LayerRef:
        blob = d.get("blob")
        return LayerRef(Digest(d["diff_id"]), Digest(blob) if blob else None, int(d.get("size", 0)), str(d.get("media_type", "")))


@dataclass(frozen=True)
class CachedResult:
    """What a cache key resolved to: the full layer chain of the step's filesystem,
    plus an opaque JSON ``extra`` (e.g. base image config digest)."""

    key: str
    layers: tuple[LayerRef, ...]
    description: str
    created: float
    last_used: float
    extra: dict[str, Any]


@dataclass(frozen=True)
class UsageEntry:
    kind: str
    ident: str
    size: int
    last_used: float
    description: str


def parse_size(text: str) -> int:
    """``10GB``, ``512MiB``, ``1.5g``, ``1024`` -> bytes (binary multiples, as docker does)."""
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = 1
    for suffix, m in (("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("t", 1 << 40)):
        if t.endswith(suffix):
            mult, t = m, t[:-1]
            break
    try:
        value = float(t)
    except ValueError:
        raise StateError(f"invalid size {text!r}", reference="invalid-size", hint="use e.g. 512MB or 10GB") from None
    if value < 0:
        raise StateError(f"invalid size {text!r}", reference="invalid-size")
    return int(value * mult)


def human_size(n: int) -> str:
    """BuildKit's (go-units) size text: decimal units, three significant digits ("1.09MB")."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{n}B" if unit == "B" else f"{size:.3g}{unit}"
        size /= 1000
    raise AssertionError("unreachable")


class ContentStore:
    """Blobs by digest under ``blobs/``. Writes are atomic and idempotent: a return
    without error means the content is stored at that digest (not necessarily by this call)."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.tmp = tmp

    def path(self, digest: Digest) -> Path:
        algo, _, hexpart = parse_digest(digest).partition(":")
        return self.root / algo / hexpart

    def has(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: Digest) -> int:
        return self.path(digest).stat().st_size

    def open(self, digest: Digest, size: int | None = None) -> BinaryIO:
        """Open a blob for reading (a buffered binary stream); it verifies digest (and size) at EOF."""
        try:
            f = open(self.path(digest), "rb")  # noqa: SIM115 - handed to the reader
        except FileNotFoundError:
            raise StateError(f"blob {digest} is not in the content store", reference="blob-missing") from None
        raw = VerifyingReader(f, digest, size, what=f"local blob {digest}",
                              on_mismatch=lambda exc: self._corrupt(digest, exc))
        return io.BufferedReader(raw, _CHUNK)

    def _corrupt(self, digest: Digest, exc: DigestMismatchError) -> None:
        """A stored blob does not match its name (disk error, tampering): delete it so it is
        never used again (the next build fetches or rebuilds it) and say so."""
        path = self.path(digest)
        self.delete(digest)
        raise DigestMismatchError(exc.message, reference="corrupt-local-blob", context=[f"file: {path} (deleted)"],
                                  hint="run the build again: mason fetches or rebuilds the blob") from exc

    def temp_file(self) -> tuple[IO[bytes], Path]:
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix=f"{os.getpid()}-blob-")
        return os.fdopen(fd, "wb"), Path(name)

    def _commit_file(self, tmp_path: Path, digest: Digest) -> None:
        """Rename a finished temp file into place (fsynced first)."""
        dest = self.path(digest)
        dest.parent.mkdir(mode=_PRIVATE_DIR, parents=True, exist_ok=True)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, dest)
        with contextlib.suppress(OSError):
            fsync_dir(str(dest.parent))

    @contextlib.contextmanager
    def writer(self, expected: Digest | None = None) -> Iterator[HashingWriter]:
        """The one way content gets in: a temp file hashed as it is written; on a clean exit
        it is stored under its digest (``expected`` checked first), read ``.digest`` and
        ``.size`` after the block. On an error nothing is kept."""
        f, tmp = self.temp_file()
        try:
            with f:
                out = HashingWriter(f, expected.split(":", 1)[0] if expected else "sha256")
                yield out
            if expected is not None and out.digest != expected:
                raise StateError(f"content does not match {expected} (got {out.digest})", reference="digest-mismatch")
            if not self.has(out.digest):
                self._commit_file(tmp, out.digest)
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, data: bytes, expected: Digest | None = None) -> Digest:
        with self.writer(expected) as out:
            out.write(data)
        return out.digest

    def put_stream(self, src: BinaryIO | IO[bytes], expected: Digest | None = None) -> tuple[Digest, int]:
        """Copy ``src`` into the store, hashing as it streams."""
        with self.writer(expected) as out:
            shutil.copyfileobj(src, out, _CHUNK)
        return out.digest, out.size

    def delete(self, digest: Digest) -> None:
        self.path(digest).unlink(missing_ok=True)

    def iter_digests(self) -> Iterator[Digest]:
        for algo_dir in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            for f in sorted(algo_dir.iterdir()):
                yield Digest(f"{algo_dir.name}:{f.name}")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    layers TEXT NOT NULL,
    description TEXT NOT NULL,
    extra TEXT NOT NULL,
    created REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    created REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS variants (
    diff_id TEXT NOT NULL,
    compression TEXT NOT NULL,
    level INTEGER NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    PRIMARY KEY (diff_id, compression, level)
);
CREATE INDEX IF NOT EXISTS variants_by_digest ON variants(digest);
-- mason build --explain-cache: per step identity, the preimage of the last key built or hit
-- (and for a context COPY its per-file checksums, JSON). A new table: older roots get it on
-- open and simply have nothing to compare against yet.
CREATE TABLE IF NOT EXISTS step_keys (
    identity TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    preimage BLOB NOT NULL,
    files TEXT,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    chain_id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    last_used REAL NOT NULL
);
"""


def _enable_wal(conn: sqlite3.Connection, path: Path, attempts: int = 200) -> None:
    """Switch the database to WAL once. Changing the journal mode needs an exclusive lock and
    sqlite answers "database is locked" at once instead of waiting (the busy timeout does not
    apply), so two mason processes opening a new root at the same moment retry briefly."""
    for attempt in range(attempts):
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() == "wal":
                return
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise StateError(f"open metadata database {path}: {exc}") from exc
            time.sleep(0.05)


class Metadata:
    """sqlite3 metadata. One connection per thread; every write is a transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        # made 0600 before sqlite opens it: sqlite gives -wal and -shm the database's mode
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, _PRIVATE_FILE))
        # executescript commits on its own; the statements are idempotent.
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            _enable_wal(conn, self.path)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StateError(f"open metadata transaction in {self.path}: {exc}") from exc
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # step keys (--explain-cache) ---------------------------------------------

    #: At most this many step identities are kept; the least recently used go first.
    MAX_STEP_KEYS = 4096

    def put_step_keys(self, rows: list[tuple[str, str, bytes, str | None]]) -> None:
        """Keep (identity, key, preimage, files JSON) per step, replacing earlier ones."""
        if not rows:
            return
        now = time.time()
        with self._tx() as conn:
            conn.executemany("INSERT OR REPLACE INTO step_keys VALUES (?, ?, ?, ?, ?)",
                             [(i, k, p, f, now) for i, k, p, f in rows])
            conn.execute("DELETE FROM step_keys WHERE identity IN (SELECT identity FROM step_keys "
                         "ORDER BY last_used DESC LIMIT -1 OFFSET ?)", (self.MAX_STEP_KEYS,))

    def step_key(self, identity: str) -> tuple[str, bytes, str | None] | None:
        """(key, preimage, files JSON) last kept for ``identity``, or None."""
        row = self._conn().execute("SELECT key, preimage, files FROM step_keys WHERE identity = ?",
                                   (identity,)).fetchone()
        return None if row is None else (row[0], bytes(row[1]), row[2])

    def clear_step_keys(self) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM step_keys")

    # results -----------------------------------------------------------------

    def put_result(self, key: str, layers: tuple[LayerRef, ...], description: str, extra: dict[str, Any] | None = None) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO results(key, layers, description, extra, created, last_used) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(key) DO UPDATE SET layers=excluded.layers, description=excluded.description, "
                "extra=excluded.extra, last_used=excluded.last_used",
                (key, json.dumps([lr.to_json() for lr in layers]), description, json.dumps(extra or {}, sort_keys=True), now, now),
            )

    def get_result(self, key: str, touch: bool = True) -> CachedResult | None:
        row = self._conn().execute(
            "SELECT key, layers, description, extra, created, last_used FROM results WHERE key=?", (key,)
        ).fetchone()
        if row is None:
            return None
        if touch:
            with self._tx() as db:
                db.execute("UPDATE results SET last_used=? WHERE key=?", (time.time(), key))
        return _result_row(row)

    def results(self) -> list[CachedResult]:
        rows = self._conn().execute("SELECT key, layers, description, extra, created, last_used FROM results").fetchall()
        return [_result_row(r) for r in rows]

    def delete_results(self, keys: list[str]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM results WHERE key=?", [(k,) for k in keys])

    # blobs and compressed variants -------------------------------------------

    def put_blob(self, info: BlobInfo) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO blobs(digest, size, media_type, created, last_used) VALUES (?,?,?,?,?) "
                "ON CONFLICT(digest) DO UPDATE SET last_used=excluded.last_used",
                (info.digest, info.size, info.media_type, now, now),
            )

    def blob(self, digest: Digest) -> BlobInfo | None:
        row = self._conn().execute("SELECT digest, size, media_type FROM blobs WHERE digest=?", (digest,)).fetchone()
        return BlobInfo(Digest(row[0]), row[1], row[2]) if row else None

    def blobs(self) -> list[tuple[BlobInfo, float]]:
        rows = self._conn().execute("SELECT digest, size, media_type, last_used FROM blobs").fetchall()
        return [(BlobInfo(Digest(r[0]), r[1], r[2]), r[3]) for r in rows]

    def delete_blobs(self, digests: list[Digest]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM blobs WHERE digest=?", [(d,) for d in digests])
            db.executemany("DELETE FROM variants WHERE digest=?", [(d,) for d in digests])

    def put_variant(self, diff_id: Digest, compression: str, level: int | None, info: BlobInfo) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO variants(diff_id, compression, level, digest, size, media_type) VALUES (?,?,?,?,?,?)",
                (diff_id, compression, -1 if level is None else level, info.digest, info.size, info.media_type),
            )

    def variant(self, diff_id: Digest, compression: str, level: int | None) -> BlobInfo | None:
        row = self._conn().execute(
            "SELECT digest, size, media_type FROM variants WHERE diff_id=? AND compression=? AND level=?",
            (diff_id, compression, -1 if level is None else level),
        ).fetchone()
        return BlobInfo(Digest(row[0]), row[1], row[2]) if row else None

    def variants_of(self, diff_id: Digest) -> list[tuple[str, int, BlobInfo]]:
        rows = self._conn().execute(
            "SELECT compression, level, digest, size, media_type FROM variants WHERE diff_id=?", (diff_id,)
        ).fetchall()
        return [(r[0], r[1], BlobInfo(Digest(r[2]), r[3], r[4])) for r in rows]

    def diff_id_of(self, blob: Digest) -> Digest | None:
        row = self._conn().execute("SELECT diff_id FROM variants WHERE digest=? LIMIT 1", (blob,)).fetchone()
        return Digest(row[0]) if row else None

    # snapshots -----------------------------------------------------------------

    def put_snapshot(self, chain_id: str, path: str, size: int) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO snapshots(chain_id, path, size, created, last_used) VALUES (?,?,?,?,?)",
                (chain_id, path, size, now, now),
            )

    def snapshots(self) -> list[tuple[str, str, int, float]]:
        return [tuple(r) for r in self._conn().execute("SELECT chain_id, path, size, last_used FROM snapshots").fetchall()]

    def delete_snapshots(self, chain_ids: list[str]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM snapshots WHERE chain_id=?", [(c,) for c in chain_ids])

    def clear_variants(self) -> None:
        """Drop every variant row (and the pseudo-rows ``mason.build.blobs`` keys by blob)."""
        with self._tx() as db:
            db.execute("DELETE FROM variants")


def _result_row(r: Any) -> CachedResult:
    return CachedResult(
        key=r[0], layers=tuple(LayerRef.from_json(d) for d in json.loads(r[1])), description=r[2],
        created=r[4], last_used=r[5], extra=json.loads(r[3]),
    )


class StateRoot:
    """An opened ``$MASON_ROOT``. Use as a context manager: ``with StateRoot.open(p) as st``.

    Lock protocol: builds hold a *shared* fcntl lock for their whole run, so
    several builds can share a root (blobs are content-addressed and metadata
    writes are transactions); ``prune`` and the start-up cleanup of leftovers
    take it *exclusively*, so they never delete what a running build uses.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.exclusive = False
        self.tmp = path / "tmp"
        self.snapshots_dir = path / "snapshots"
        self.cachemounts_dir = path / "cachemounts"
        self.store = ContentStore(path / "blobs", self.tmp)
        self._lock_fd: int | None = None
        self._meta: Metadata | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, exclusive: bool = False, wait: bool = True) -> StateRoot:
        """Open (and create) a root. ``exclusive`` waits for running builds to finish, or with
        ``wait=False`` raises ``StateError`` (reference ``state-busy``) while one runs."""
        st = cls(Path(path))
        st._open(exclusive, wait)
        return st

    @property
    def meta(self) -> Metadata:
        if self._meta is None:
            raise StateError("state root is not open")
        return self._meta

    @property
    def private_dirs(self) -> tuple[Path, ...]:
        """mason's own directories in the root: created 0700, tightened to it when opened."""
        return (self.tmp, self.snapshots_dir, self.cachemounts_dir, self.path / "cachemount-locks",
                self.store.root, self.store.root / "sha256")

    def _open(self, exclusive: bool, wait: bool) -> None:
        try:
            self.path.mkdir(mode=_PRIVATE_DIR, parents=True, exist_ok=True)
            _tighten_root(self.path)
            for d in self.private_dirs:
                d.mkdir(mode=_PRIVATE_DIR, exist_ok=True)
                _tighten(d, _PRIVATE_DIR)
            self._lock_fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, _PRIVATE_FILE)
            for name in ("lock", "meta.db", "meta.db-wal", "meta.db-shm"):
                _tighten(self.path / name, _PRIVATE_FILE)
        except OSError as exc:
            # mkdir on a file says "File exists": name the real problem
            reason = "a file is in the way of a directory" if exc.errno in (errno.EEXIST, errno.ENOTDIR) else exc.strerror
            raise StateError(f"cannot use state directory {self.path}: {reason}",
                             context=[f"path: {exc.filename}"] if exc.filename else [],
                             hint="set MASON_ROOT to a writable directory") from exc
        # a killed build's secrets on tmpfs: their process is gone, whoever else holds the root
        remove_orphaned_secrets()
        # Opportunistic cleanup: if nobody else holds the root, leftovers of a killed
        # process (temp files) are garbage.
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._clean_leftovers()
            if not exclusive:
                fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if exclusive and not wait:
                self.close()
                raise StateError(f"state directory {self.path} is in use by a running build",
                                 reference="state-busy", hint="wait for the build to finish") from None
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        self.exclusive = exclusive
        self._meta = Metadata(self.path / "meta.db")

    def _clean_leftovers(self) -> None:
        # A killed build may have left overlay mounts under tmp/: unmount them first, so we
        # never delete through a mount.
        for mnt in _mounts_under(self.tmp):
            subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
        for entry in self.tmp.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                _force_rmtree(entry)
            else:
                entry.unlink(missing_ok=True)

    def temp_dir(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(dir=self.tmp, prefix=f"{os.getpid()}-{prefix}-"))

    def close(self) -> None:
        if self._meta is not None:
            self._meta.close()
            self._meta = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> StateRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # usage and pruning -----------------------------------------------------

    def usage(self) -> list[UsageEntry]:
        """Everything the root holds, with sizes (for ``mason du``): what the metadata tracks,
        plus content-store files without a row (e.g. base image configs; last used = mtime) and
        snapshot directories without a row (``untracked_snapshots``)."""
        entries: list[UsageEntry] = []
        tracked: set[str] = set()
        for info, last_used in self.meta.blobs():
            size = self.store.size(info.digest) if self.store.has(info.digest) else 0
            entries.append(UsageEntry("blob", info.digest, size, last_used, info.media_type))
            tracked.add(info.digest)
        for digest in self.store.iter_digests():
            if digest not in tracked:
                with contextlib.suppress(OSError):
                    st = self.store.path(digest).stat()
                    entries.append(UsageEntry("blob", digest, st.st_size, st.st_mtime, "untracked"))
        for chain_id, path, size, last_used in self.meta.snapshots():
            real = size or (_dir_size(Path(path)) if os.path.isdir(path) else 0)
            entries.append(UsageEntry("snapshot", chain_id, real, last_used, path))
        for d in self.untracked_snapshots():
            entries.append(UsageEntry("snapshot", d.name, _dir_size(d), d.lstat().st_mtime, str(d)))
        for d in sorted(self.cachemounts_dir.iterdir()):
            entries.append(UsageEntry("cache-mount", d.name, _dir_size(d), d.stat().st_mtime, ""))
        return entries

    def untracked_snapshots(self) -> list[Path]:
        """Entries of the snapshot directory no metadata row names: the flattened stacks
        ``mason.layer`` makes for chains too long for one overlay mount, and anything a
        lost row left behind. Nothing reaches them through the metadata, so prune always
        removes them (a flattened stack is made again when a long chain needs it)."""
        named = {Path(path).name for _chain, path, _size, _used in self.meta.snapshots()}
        return sorted(p for p in self.snapshots_dir.iterdir() if not p.name.startswith(".") and p.name not in named)

    def prune(self, keep_storage: int = 0, *, all_: bool = False) -> tuple[int, int]:
        """Delete least recently used entries until at most ``keep_storage`` bytes remain
        (``all_``: everything but the root's skeleton). Untracked snapshot directories are
        removed first in either case. Returns (entries removed, bytes freed).

        Needs the root opened ``exclusive``: no build is using what is deleted. Directories
        are renamed out of sight before they are deleted (snapshots through
        ``mason.layer.Snapshotter.remove``), so a crash mid-prune leaves garbage that the
        next open removes, never a snapshot that looks complete but is not."""
        if not self.exclusive:
            raise StateError(f"prune of {self.path} needs the state root opened exclusively",
                             hint="StateRoot.open(path, exclusive=True) waits for running builds")
        from mason.layer import LayerError
        from mason.layer import Snapshotter as LayerSnapshotter

        # Removing needs no overlay probe ("copy"); opening it also clears what an earlier
        # crashed prune or killed build left half-deleted.
        snapshots = LayerSnapshotter(str(self.snapshots_dir), mode="copy")

        def remove_snapshot(path: Path) -> None:
            with contextlib.suppress(LayerError):  # already gone (only a row left), or no meta.json
                snapshots.remove(path.name)
            if os.path.lexists(path) and path.parent == self.snapshots_dir:
                self._remove_dir(path)

        removed = freed = 0
        for orphan in self.untracked_snapshots():
            freed += _dir_size(orphan)
            remove_snapshot(orphan)
            removed += 1
        entries = self.usage()
        total = sum(e.size for e in entries)
        for e in sorted(entries, key=lambda e: e.last_used):
            if not all_ and total <= keep_storage:
                break
            if e.kind == "blob":
                self.meta.delete_blobs([Digest(e.ident)])
                self.store.delete(Digest(e.ident))
            elif e.kind == "snapshot":
                remove_snapshot(self.snapshots_dir / Path(e.description).name)
                self.meta.delete_snapshots([e.ident])
            else:
                self._remove_dir(self.cachemounts_dir / e.ident)
            total -= e.size
            freed += e.size
            removed += 1
        if all_:
            self.meta.delete_results([r.key for r in self.meta.results()])
            self.meta.clear_variants()  # every blob is gone: facts and locations of remote-only ones too
            self.meta.clear_step_keys()
        else:
            self._drop_dangling_results()
        return removed, freed

    def _remove_dir(self, path: Path) -> None:
        # Renamed into tmp/ first: a crash leaves a leftover there (removed on the next
        # exclusive open), not half a directory where it was.
        trash = self.temp_dir("rm")
        os.replace(path, trash / "d")
        _force_rmtree(trash)

    def _drop_dangling_results(self) -> None:
        # A result is only useful while every layer of its chain is in the store.
        gone = [r.key for r in self.meta.results()
                if any(lr.blob is None or not self.store.has(lr.blob) for lr in r.layers)]
        if gone:
            self.meta.delete_results(gone)


def _mounts_under(path: Path) -> list[str]:
    """Mount points below ``path`` (deepest first), from /proc/self/mountinfo."""
    prefix = str(path.resolve()) + "/"
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4:
                mp = fields[4].encode().decode("unicode_escape")
                if mp.startswith(prefix):
                    found.append(mp)
    return sorted(found, key=len, reverse=True)


def _dir_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _force_rmtree(path: Path) -> None:
    def onerror(func: Callable[..., Any], p: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
        with contextlib.suppress(OSError):
            func(p)

    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, onerror=onerror)
