"""Content addressing: digests and readers that verify as they stream.

A digest is kept as its canonical string ``algorithm:hex`` (``Digest``); only
sha256 and sha512 are accepted, as in the OCI image spec.
"""

from __future__ import annotations

import functools
import io
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any, BinaryIO, NewType

from mason.errors import DiagnosticError, DigestMismatchError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "Digest",
    "DigestError",
    "HashingWriter",
    "VerifyingReader",
    "canonical_json",
    "digest_of",
    "hasher_for",
    "new_sha256",
    "parse_digest",
    "sha256_bytes",
    "sha256_file",
    "verify_chunks",
]

Digest = NewType("Digest", str)

_DIGEST_PATTERN = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_CHUNK = 1 << 20


class DigestError(DiagnosticError):
    """A string that should be a digest is not one."""

    reference = "invalid-digest"
    exit_code = 2


def parse_digest(value: str) -> Digest:
    """Return ``value`` as a ``Digest`` or raise ``DigestError``."""
    if not _DIGEST_PATTERN.match(value):
        raise DigestError(
            f"invalid digest {value!r}",
            hint="a digest is sha256: followed by 64 lowercase hex digits",
        )
    return Digest(value)


#: Bytes the interpreter's own sha256/sha512 hash, in all, before OpenSSL's are loaded (issue
#: 14): loading ``hashlib`` (libcrypto) costs ~3 ms, most of what hashing costs a build that
#: hashes only documents and small files. OpenSSL's are ~7x faster per byte: a build that
#: hashes more (a layer) loads them anyway, having spent ~1 ms on what the built-in took first
#: (1 MiB made a cold build ~5 ms slower).
_BUILTIN_BYTES = 256 << 10
_builtin_left = _BUILTIN_BYTES


def _builtin_may_hash(n: int) -> bool:
    """Whether ``n`` more bytes go to the built-in hashes (taken from what is left of
    ``_BUILTIN_BYTES``); never once ``hashlib`` is loaded, whoever loaded it. Threads may
    race on the count: it only decides which implementation hashes."""
    global _builtin_left
    if n > _builtin_left or _openssl_loaded():
        _builtin_left = 0
        return False
    _builtin_left -= n
    return True


def _openssl_loaded() -> bool:
    return "hashlib" in sys.modules


@functools.cache
def _builtin(algorithm: str) -> Callable[[bytes], Any] | None:
    """The interpreter's own constructor (``_sha256``/``_sha512``; ``_sha2`` from 3.12),
    looked up once: every running hash asks (a context file's checksum makes one)."""
    try:
        if algorithm == "sha256":
            from _sha256 import sha256  # type: ignore[import-not-found]

            return sha256  # type: ignore[no-any-return]
        from _sha512 import sha512  # type: ignore[import-not-found]

        return sha512  # type: ignore[no-any-return]
    except ImportError:
        try:
            import _sha2  # type: ignore[import-not-found]

            return getattr(_sha2, algorithm)  # type: ignore[no-any-return]
        except ImportError:
            return None


def _openssl(algorithm: str, data: bytes | bytearray = b"") -> Any:
    import hashlib

    return hashlib.new(algorithm, data)


class _Hash:
    """A running sha256 or sha512 with hashlib's interface (``update``, ``digest``,
    ``hexdigest``, ``name``). What it is fed is kept while the built-in hashes may take it
    (``_builtin_may_hash``) and hashed by them when asked; past that it goes to OpenSSL's,
    kept bytes first. A caller never sees which one hashed."""

    __slots__ = ("_h", "_kept", "name")

    def __init__(self, algorithm: str, data: bytes = b"") -> None:
        if algorithm not in ("sha256", "sha512"):
            raise DigestError(
                f"unsupported digest algorithm {algorithm!r}", hint="use sha256 or sha512"
            )
        self.name = algorithm
        self._kept = bytearray()
        builtin = not _openssl_loaded() and _builtin(algorithm) is not None
        self._h: Any = None if builtin else _openssl(algorithm)
        if data:
            self.update(data)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._h is None:
            n = len(data) if isinstance(data, bytes | bytearray) else memoryview(data).nbytes
            if _builtin_may_hash(n):
                self._kept += data
                return
            self._h = _openssl(self.name, self._kept)
            self._kept = bytearray()
        self._h.update(data)

    def _hashed(self) -> Any:
        if self._h is not None:
            return self._h
        make = _builtin(self.name)
        assert make is not None  # else ``_h`` was made at once
        return make(bytes(self._kept))

    def digest(self) -> bytes:
        return self._hashed().digest()  # type: ignore[no-any-return]

    def hexdigest(self) -> str:
        return self._hashed().hexdigest()  # type: ignore[no-any-return]


def hasher_for(digest: Digest) -> _Hash:
    """A fresh running hash for the algorithm ``digest`` uses (sha256 or sha512)."""
    return _Hash(digest.split(":", 1)[0])


def new_sha256(data: bytes = b"") -> _Hash:
    """A running sha256 (``update``/``digest_of``): mason's one hash algorithm for what it makes."""
    return _Hash("sha256", data)


def digest_of(hasher: Any) -> Digest:
    """The ``Digest`` of a running hash (``new_sha256`` or ``hasher_for``)."""
    return Digest(f"{hasher.name}:{hasher.hexdigest()}")


def sha256_bytes(data: bytes) -> Digest:
    return Digest("sha256:" + new_sha256(data).hexdigest())


def sha256_file(path: str) -> tuple[Digest, int]:
    """Digest and size of a file, read in chunks."""
    h = new_sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return Digest("sha256:" + h.hexdigest()), size


class HashingWriter:
    """A write-only stream that hashes and counts what passes through it to ``inner``.

    ``inner=None`` only hashes (a diff ID of a tar nobody keeps). Read ``.digest``
    and ``.size`` once the writing is done. The one implementation for the content
    store, the layer tar writer and the eStargz writer.
    """

    def __init__(
        self, inner: IO[bytes] | BinaryIO | None = None, algorithm: str = "sha256"
    ) -> None:
        self._h = _Hash(algorithm)  # sha256 or sha512, else DigestError
        self._inner = inner
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._h.update(data)
        n = len(data) if isinstance(data, bytes | bytearray) else data.nbytes
        self.size += n
        if self._inner is not None:
            self._inner.write(data)
        return n

    def flush(self) -> None:
        if self._inner is not None:
            self._inner.flush()

    @property
    def digest(self) -> Digest:
        return digest_of(self._h)


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8. Used for cache keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _mismatch(what: str, expected: Digest, got: str, size: int, expected_size: int | None) -> None:
    size_note = (
        f" after {size} bytes" if expected_size is None else f" ({size} of {expected_size} bytes)"
    )
    raise DigestMismatchError(
        f"{what} failed verification{size_note}: expected {expected}, got {got}",
        hint="the source served different bytes than its digest promises; nothing was kept",
    )


class _Tally:
    """Hashes and counts bytes as they pass; fails as soon as they run past ``expected_size``
    and, at ``finish``, unless digest and size both match."""

    def __init__(self, expected: Digest, expected_size: int | None, what: str) -> None:
        self.expected = expected
        self.expected_size = expected_size
        self.what = what
        self.hasher = hasher_for(expected)
        self.size = 0

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self.expected_size is not None and self.size > self.expected_size:
            _mismatch(
                self.what, self.expected, "more data than announced", self.size, self.expected_size
            )
        self.hasher.update(data)

    def finish(self) -> None:
        got = f"{self.expected.split(':', 1)[0]}:{self.hasher.hexdigest()}"
        if got != self.expected or (
            self.expected_size is not None and self.size != self.expected_size
        ):
            _mismatch(self.what, self.expected, got, self.size, self.expected_size)


class VerifyingReader(io.RawIOBase):
    """Wraps a binary stream; raises ``DigestMismatchError`` at end of stream when
    the bytes read do not have ``expected`` digest or ``expected_size`` length.

    Reading past ``expected_size`` fails at once, so a hostile source cannot
    stream forever. It is a raw stream (``readinto``), so ``io.BufferedReader`` and the
    decompressors can sit on it directly. ``on_mismatch`` sees the error before it is
    raised (a content store deletes the bad file there).
    """

    def __init__(
        self,
        stream: IO[bytes] | io.RawIOBase,
        expected: Digest,
        expected_size: int | None = None,
        *,
        what: str = "blob",
        on_mismatch: Callable[[DigestMismatchError], None] | None = None,
    ) -> None:
        super().__init__()
        self._stream = stream
        self._tally = _Tally(expected, expected_size, what)
        self._on_mismatch = on_mismatch
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        data = self._stream.read(-1 if n is None else n) or b""
        try:
            if data:
                self._tally.add(data)
            elif not self._done:
                self._done = True
                self._tally.finish()
        except DigestMismatchError as exc:
            if self._on_mismatch is not None:
                self._on_mismatch(exc)
            raise
        return data

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def verify(self) -> None:
        """Check what was read so far as the whole content (for callers that stop at the size)."""
        self._tally.finish()

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


def verify_chunks(
    chunks: Iterable[bytes],
    expected: Digest,
    expected_size: int | None = None,
    *,
    what: str = "blob",
) -> Iterator[bytes]:
    """Pass ``chunks`` through, verifying digest and size when they end."""
    tally = _Tally(expected, expected_size, what)
    for chunk in chunks:
        tally.add(chunk)
        yield chunk
    tally.finish()
