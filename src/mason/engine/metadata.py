"""The sqlite metadata of ``$MASON_ROOT`` (``meta.db``): results, blobs, compressed
variants, step keys (``--explain-cache``), snapshots and the context files' digests
(``mason.engine.filedigests``); one connection per thread, every write a transaction. A blob
row is written only after the blob is in the store."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mason.digest import Digest
from mason.engine.contentstore import PRIVATE_FILE, StateError
from mason.futures import in_daemon_thread
from mason.structs import Struct

__all__ = ["BlobInfo", "CachedResult", "LayerRef", "Metadata"]


class BlobInfo(Struct, frozen=True):
    digest: Digest
    size: int
    media_type: str


class LayerRef(Struct, frozen=True):
    """One layer of a result chain: its uncompressed diff ID and, when known, a blob
    that holds it (possibly only in a remote cache, not yet in the content store)."""

    diff_id: Digest
    blob: Digest | None = None
    blob_size: int = 0
    media_type: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "diff_id": self.diff_id,
            "blob": self.blob,
            "size": self.blob_size,
            "media_type": self.media_type,
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> LayerRef:
        blob = d.get("blob")
        return LayerRef(
            Digest(d["diff_id"]),
            Digest(blob) if blob else None,
            int(d.get("size", 0)),
            str(d.get("media_type", "")),
        )


class CachedResult(Struct, frozen=True):
    """What a cache key resolved to: the full layer chain of the step's filesystem,
    plus an opaque JSON ``extra`` (e.g. base image config digest)."""

    key: str
    layers: tuple[LayerRef, ...]
    description: str
    created: float
    last_used: float
    extra: dict[str, Any]


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
-- mason.engine.filedigests: per context directory, its files' digests with the stat each was
-- read under (one encoded blob: read in one go, replaced in one transaction). Only a cache:
-- any row may be dropped.
CREATE TABLE IF NOT EXISTS file_digests (
    root TEXT PRIMARY KEY,
    entries BLOB NOT NULL,
    written REAL NOT NULL
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

    def __init__(self, path: Path, *, handed_on: bool = False) -> None:
        """Open (create) the database. ``handed_on``: the connection that does so is kept for
        the first thread that needs one, whichever it is (``opening``)."""
        self.path = path
        self._local = threading.local()
        self._spare: sqlite3.Connection | None = None
        self._spare_lock = threading.Lock()
        # made 0600 before sqlite opens it: sqlite gives -wal and -shm the database's mode
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE))
        conn = self._connect(same_thread=not handed_on)
        # the statements are idempotent; one transaction: a new root's tables are written at
        # once, not each in its own (start-up, issue 14: 28 -> 16 ms for a fresh root)
        conn.executescript(f"BEGIN;{_SCHEMA}COMMIT;")
        if handed_on:
            self._spare = conn  # used by one thread at a time: the one that takes it
        else:
            self._local.conn = conn

    @classmethod
    def opening(cls, path: Path) -> Callable[[], Metadata]:
        """Open (create) the database in a thread, now; what is returned waits for it and
        raises what opening it raised. sqlite does its file work without the GIL, so a new
        root's tables are written while the build goes on (start-up, issue 14: 2-6 ms of a
        build on a fresh root, whose first use of the metadata comes tens of ms later)."""
        return in_daemon_thread(
            "metadata-open", functools.partial(cls, path, handed_on=True)
        ).result

    def _connect(self, *, same_thread: bool = True) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=60, isolation_level=None, check_same_thread=same_thread
        )
        conn.execute("PRAGMA synchronous=NORMAL")  # first: the switch to WAL syncs less
        _enable_wal(conn, self.path)
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._spare_lock:
                conn, self._spare = self._spare, None
            self._local.conn = conn = conn or self._connect()
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

    def put_step_keys(
        self, rows: list[tuple[str, str, bytes, str | None]], touched: Sequence[str] = ()
    ) -> None:
        """Keep (identity, key, preimage, files JSON) per step, replacing earlier ones; mark
        the ``touched`` identities (kept unchanged) used now."""
        if not rows and not touched:
            return
        now = time.time()
        with self._tx() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO step_keys VALUES (?, ?, ?, ?, ?)",
                [(i, k, p, f, now) for i, k, p, f in rows],
            )
            conn.executemany(
                "UPDATE step_keys SET last_used = ? WHERE identity = ?",
                [(now, i) for i in touched],
            )
            conn.execute(
                "DELETE FROM step_keys WHERE identity IN (SELECT identity FROM step_keys "
                "ORDER BY last_used DESC LIMIT -1 OFFSET ?)",
                (self.MAX_STEP_KEYS,),
            )

    def step_key(self, identity: str) -> tuple[str, bytes, str | None] | None:
        """(key, preimage, files JSON) last kept for ``identity``, or None."""
        row = (
            self._conn()
            .execute("SELECT key, preimage, files FROM step_keys WHERE identity = ?", (identity,))
            .fetchone()
        )
        return None if row is None else (row[0], bytes(row[1]), row[2])

    def step_key_digests(self, identities: Sequence[str]) -> dict[str, str]:
        """identity -> the key last kept for it, for those of ``identities`` kept at all."""
        out: dict[str, str] = {}
        conn = self._conn()
        for start in range(0, len(identities), 500):  # sqlite's bound-parameter limit
            chunk = identities[start : start + 500]
            marks = ",".join("?" * len(chunk))
            out.update(
                conn.execute(
                    f"SELECT identity, key FROM step_keys WHERE identity IN ({marks})", chunk
                ).fetchall()
            )
        return out

    def step_names(self) -> dict[str, str]:
        """Cache key -> the Dockerfile step last built with it (``[2/3] RUN make``), for ``du``."""
        rows = (
            self._conn()
            .execute("SELECT identity, key FROM step_keys ORDER BY last_used")
            .fetchall()
        )
        return {key: identity.rsplit("\0", 1)[-1] for identity, key in rows}

    def clear_step_keys(self) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM step_keys")

    # context file digests (mason.engine.filedigests) ------------------------

    #: At most this many context directories keep file digests; the least recently written go.
    MAX_FILE_DIGEST_ROOTS = 64

    def file_digests(self, root: str) -> bytes | None:
        """The encoded file digests kept for the context directory ``root``, or None."""
        row = (
            self._conn()
            .execute("SELECT entries FROM file_digests WHERE root = ?", (root,))
            .fetchone()
        )
        if row is None:
            return None
        return row[0] if isinstance(row[0], bytes) else b""  # b"": a row that does not decode

    def update_file_digests(self, root: str, update: Callable[[bytes | None], bytes]) -> None:
        """Replace ``root``'s entries by ``update(the entries kept now)``, in one transaction."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT entries FROM file_digests WHERE root = ?", (root,)
            ).fetchone()
            entries = update(None if row is None else row[0])
            conn.execute(
                "INSERT OR REPLACE INTO file_digests VALUES (?, ?, ?)", (root, entries, time.time())
            )
            conn.execute(
                "DELETE FROM file_digests WHERE root IN (SELECT root FROM file_digests "
                "ORDER BY written DESC LIMIT -1 OFFSET ?)",
                (self.MAX_FILE_DIGEST_ROOTS,),
            )

    def clear_file_digests(self) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM file_digests")

    # results -----------------------------------------------------------------

    def put_result(
        self,
        key: str,
        layers: tuple[LayerRef, ...],
        description: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO results(key, layers, description, extra, created, last_used) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(key) DO UPDATE SET layers=excluded.layers, description=excluded.description, "
                "extra=excluded.extra, last_used=excluded.last_used",
                (
                    key,
                    json.dumps([lr.to_json() for lr in layers]),
                    description,
                    json.dumps(extra or {}, sort_keys=True),
                    now,
                    now,
                ),
            )

    def get_result(self, key: str, touch: bool = True) -> CachedResult | None:
        row = (
            self._conn()
            .execute(
                "SELECT key, layers, description, extra, created, last_used FROM results WHERE key=?",
                (key,),
            )
            .fetchone()
        )
        if row is None:
            return None
        if touch:
            with self._tx() as db:
                db.execute("UPDATE results SET last_used=? WHERE key=?", (time.time(), key))
        return _result_row(row)

    def results(self) -> list[CachedResult]:
        rows = (
            self._conn()
            .execute("SELECT key, layers, description, extra, created, last_used FROM results")
            .fetchall()
        )
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
        row = (
            self._conn()
            .execute("SELECT digest, size, media_type FROM blobs WHERE digest=?", (digest,))
            .fetchone()
        )
        return BlobInfo(Digest(row[0]), row[1], row[2]) if row else None

    def blobs(self) -> list[tuple[BlobInfo, float]]:
        rows = (
            self._conn().execute("SELECT digest, size, media_type, last_used FROM blobs").fetchall()
        )
        return [(BlobInfo(Digest(r[0]), r[1], r[2]), r[3]) for r in rows]

    def delete_blobs(self, digests: list[Digest]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM blobs WHERE digest=?", [(d,) for d in digests])
            db.executemany("DELETE FROM variants WHERE digest=?", [(d,) for d in digests])

    def put_variant(
        self, diff_id: Digest, compression: str, level: int | None, info: BlobInfo
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO variants(diff_id, compression, level, digest, size, media_type) VALUES (?,?,?,?,?,?)",
                (
                    diff_id,
                    compression,
                    -1 if level is None else level,
                    info.digest,
                    info.size,
                    info.media_type,
                ),
            )

    def variant(self, diff_id: Digest, compression: str, level: int | None) -> BlobInfo | None:
        row = (
            self._conn()
            .execute(
                "SELECT digest, size, media_type FROM variants WHERE diff_id=? AND compression=? AND level=?",
                (diff_id, compression, -1 if level is None else level),
            )
            .fetchone()
        )
        return BlobInfo(Digest(row[0]), row[1], row[2]) if row else None

    def variants_of(self, diff_id: Digest) -> list[tuple[str, int, BlobInfo]]:
        rows = (
            self._conn()
            .execute(
                "SELECT compression, level, digest, size, media_type FROM variants WHERE diff_id=?",
                (diff_id,),
            )
            .fetchall()
        )
        return [(r[0], r[1], BlobInfo(Digest(r[2]), r[3], r[4])) for r in rows]

    def diff_id_of(self, blob: Digest) -> Digest | None:
        row = (
            self._conn()
            .execute("SELECT diff_id FROM variants WHERE digest=? LIMIT 1", (blob,))
            .fetchone()
        )
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
        return [
            tuple(r)
            for r in self._conn()
            .execute("SELECT chain_id, path, size, last_used FROM snapshots")
            .fetchall()
        ]

    def delete_snapshots(self, chain_ids: list[str]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM snapshots WHERE chain_id=?", [(c,) for c in chain_ids])

    def clear_variants(self) -> None:
        """Drop every variant row (and the pseudo-rows ``mason.engine.blobs`` keys by blob)."""
        with self._tx() as db:
            db.execute("DELETE FROM variants")


def _result_row(r: Any) -> CachedResult:
    return CachedResult(
        key=r[0],
        layers=tuple(LayerRef.from_json(d) for d in json.loads(r[1])),
        description=r[2],
        created=r[4],
        last_used=r[5],
        extra=json.loads(r[3]),
    )
