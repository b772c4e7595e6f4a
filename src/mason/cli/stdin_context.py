"""``mason build -``: the build context (or the Dockerfile alone) on standard input, as
``docker build -`` takes it.

Standard input is either a tar archive of the context (plain, gzip, bzip2 or xz), which is
unpacked into a private temporary directory with the standard library's ``data`` extraction
filter (no absolute names, no ``..``, no links out of the directory, no devices), or a
Dockerfile, which is then built with an empty context. The directory is removed when mason
exits.
"""

from __future__ import annotations

import atexit
import bz2
import gzip
import io
import lzma
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO

from mason.errors import UsageError

__all__ = ["context_from_bytes", "read_stdin_context"]

_DECOMPRESSORS = (
    (b"\x1f\x8b", gzip.decompress),
    (b"BZh", bz2.decompress),
    (b"\xfd7zXZ\x00", lzma.decompress),
)


def read_stdin_context(
    dockerfile_flag: str | None, stdin: BinaryIO | None = None
) -> tuple[Path, bytes | None]:
    """(the context directory, the Dockerfile's bytes when stdin held a Dockerfile, else None)."""
    if dockerfile_flag == "-":
        raise UsageError(
            "the context and the Dockerfile cannot both come from stdin (- and -f -)",
            reference="invalid-argument",
        )
    return context_from_bytes((stdin or sys.stdin.buffer).read(), "stdin")


def context_from_bytes(data: bytes, where: str) -> tuple[Path, bytes | None]:
    """A context tar (plain or compressed) unpacked into a private directory removed at exit, or
    else ``data`` as the Dockerfile of an empty context. ``where``: stdin, or the URL."""
    for magic, decompress in _DECOMPRESSORS:
        if data.startswith(magic):
            data = decompress(data)
            break
    directory = Path(tempfile.mkdtemp(prefix="mason-context-"))
    atexit.register(shutil.rmtree, directory, True)
    if len(data) >= 262 and data[257:262] == b"ustar":
        _unpack(data, directory, where)
        return directory, None
    if not data.strip():
        raise UsageError(
            f"no context in {where}: expected a tar archive or a Dockerfile",
            reference="invalid-argument",
        )
    return directory, data


def _unpack(data: bytes, directory: Path, where: str) -> None:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            tf.extractall(directory, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise UsageError(
            f"the context tar in {where} cannot be unpacked: {exc}",
            reference="invalid-context",
            hint="give a tar of the context directory, e.g. tar -C DIR -c . | mason build -",
        ) from exc
