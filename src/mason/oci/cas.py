"""The one writer of content-addressed blobs (``<root>/<algorithm>/<hex>``), used by the
builder's content store (``$MASON_ROOT/blobs``) and by OCI layouts (``<dir>/blobs``).

A temp file is hashed as it is written, fsynced, checked against the expected digest and
size, then renamed into place and its directory fsynced; on any error nothing is kept.
``durable=False`` skips both fsyncs, for content the caller can fetch again and whose
every read verifies it (a crash may then leave it torn, found so when read).
Writing content that is already there keeps the existing file (same name, same bytes), so
concurrent writers of one blob are harmless.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from mason.digest import Digest, HashingWriter, parse_digest
from mason.errors import DigestMismatchError
from mason.oci.atomic import fsync_dir, temp_file

__all__ = ["blob_path", "cas_writer"]


def blob_path(root: str | os.PathLike[str], digest: Digest | str) -> Path:
    """Where ``digest`` lives under ``root``."""
    algorithm, _, hexpart = parse_digest(digest).partition(":")
    return Path(root, algorithm, hexpart)


def _mismatch(
    expected: Digest | None, size: int | None, got: Digest, written: int
) -> BaseException:
    return DigestMismatchError(
        f"content failed verification: expected {expected}{f' ({size} bytes)' if size is not None else ''}, "
        f"got {got} ({written} bytes)",
        hint="the source does not hold the content its digest names; nothing was kept",
    )


@contextlib.contextmanager
def cas_writer(
    root: str | os.PathLike[str],
    *,
    expected: Digest | None = None,
    size: int | None = None,
    tmp_dir: str | os.PathLike[str] | None = None,
    mode: int = 0o600,
    dir_mode: int = 0o700,
    mismatch: Callable[[Digest, int], BaseException] | None = None,
    durable: bool = True,
) -> Iterator[HashingWriter]:
    """Yield a stream to write one blob into; after the block read ``.digest`` and ``.size``.

    ``tmp_dir`` (default: the algorithm's directory under ``root``) must be on the same
    filesystem. A digest other than ``expected`` or a size other than ``size`` raises
    ``mismatch(got, written)`` (default: a ``DigestMismatchError``) and keeps nothing."""
    algorithm = expected.split(":", 1)[0] if expected is not None else "sha256"
    blob_dir = Path(root, algorithm)
    parent = Path(tmp_dir) if tmp_dir is not None else blob_dir
    parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    fd, tmp = temp_file(parent, f".tmp-{os.getpid()}-")
    try:
        with os.fdopen(fd, "wb") as f:
            out = HashingWriter(f, algorithm)
            yield out
            f.flush()
            if durable:
                os.fsync(f.fileno())
        if (expected is not None and out.digest != expected) or (
            size is not None and out.size != size
        ):
            raise (
                mismatch(out.digest, out.size)
                if mismatch is not None
                else _mismatch(expected, size, out.digest, out.size)
            )
        dest = blob_dir / out.digest.split(":", 1)[1]
        if not dest.is_file():
            blob_dir.mkdir(mode=dir_mode, parents=True, exist_ok=True)
            os.chmod(tmp, mode)
            os.replace(tmp, dest)
            if durable:
                with contextlib.suppress(OSError):  # a filesystem without directory fsync
                    fsync_dir(str(blob_dir))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
