"""The blob store of ``$MASON_ROOT``: ``blobs/<algorithm>/<hex>``, written through
``mason.oci.cas`` (temp file in ``tmp/``, hashed while written, fsynced, verified, renamed)
and read back verified. ``StateError`` and the root's file modes live here, the bottom of
the three state modules (``contentstore`` < ``metadata`` < ``stateroot``)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from mason.digest import Digest, HashingWriter, VerifyingReader
from mason.errors import DiagnosticError, DigestMismatchError
from mason.oci.cas import blob_path, cas_writer

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "ContentStore", "StateError"]

_CHUNK = 1 << 20
#: everything mason keeps in a root is for its user only (cache mounts and metadata can hold
#: what a build fetched with credentials); a snapshot's content keeps the image's own modes,
#: behind its 0700 parent
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


class StateError(DiagnosticError):
    """``$MASON_ROOT`` is unusable or inconsistent."""

    reference = "state-error"


class ContentStore:
    """Blobs by digest under ``blobs/``. Writes are atomic and idempotent: a return
    without error means the content is stored at that digest (not necessarily by this call)."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.tmp = tmp

    def path(self, digest: Digest) -> Path:
        return blob_path(self.root, digest)

    def has(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: Digest) -> int:
        return self.path(digest).stat().st_size

    def open(self, digest: Digest, size: int | None = None) -> BinaryIO:
        """Open a blob for reading (a buffered binary stream); it verifies digest (and size) at EOF."""
        try:
            f = open(self.path(digest), "rb")  # noqa: SIM115 - handed to the reader
        except FileNotFoundError:
            raise StateError(
                f"blob {digest} is not in the content store", reference="blob-missing"
            ) from None
        raw = VerifyingReader(
            f,
            digest,
            size,
            what=f"local blob {digest}",
            on_mismatch=lambda exc: self._corrupt(digest, exc),
        )
        return io.BufferedReader(raw, _CHUNK)

    def _corrupt(self, digest: Digest, exc: DigestMismatchError) -> None:
        """A stored blob does not match its name (disk error, tampering): delete it so it is
        never used again (the next build fetches or rebuilds it) and say so."""
        path = self.path(digest)
        self.delete(digest)
        raise DigestMismatchError(
            exc.message,
            reference="corrupt-local-blob",
            context=[f"file: {path} (deleted)"],
            hint="run the build again: mason fetches or rebuilds the blob",
        ) from exc

    @contextlib.contextmanager
    def writer(
        self, expected: Digest | None = None, *, durable: bool = True
    ) -> Iterator[HashingWriter]:
        """The one way content gets in (``mason.oci.cas.cas_writer``): read ``.digest`` and
        ``.size`` after the block. On an error nothing is kept. ``durable=False``: not
        fsynced, for what a registry serves again (``open`` verifies every read)."""

        def mismatch(got: Digest, _size: int) -> StateError:
            return StateError(
                f"content does not match {expected} (got {got})", reference="digest-mismatch"
            )

        with cas_writer(
            self.root,
            expected=expected,
            tmp_dir=self.tmp,
            mode=PRIVATE_FILE,
            dir_mode=PRIVATE_DIR,
            mismatch=mismatch,
            durable=durable,
        ) as out:
            yield out

    def put_bytes(
        self, data: bytes, expected: Digest | None = None, *, durable: bool = True
    ) -> Digest:
        with self.writer(expected, durable=durable) as out:
            out.write(data)
        return out.digest

    def put_stream(
        self, src: BinaryIO | IO[bytes], expected: Digest | None = None, *, durable: bool = True
    ) -> tuple[Digest, int]:
        """Copy ``src`` into the store, hashing as it streams (``durable``: as ``writer``)."""
        with self.writer(expected, durable=durable) as out:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
        return out.digest, out.size

    def delete(self, digest: Digest) -> None:
        self.path(digest).unlink(missing_ok=True)

    def iter_digests(self) -> Iterator[Digest]:
        for algo_dir in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            for f in sorted(algo_dir.iterdir()):
                yield Digest(f"{algo_dir.name}:{f.name}")
