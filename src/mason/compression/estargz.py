"""eStargz layers (writer and verifier). In progress: see write_estargz."""

from __future__ import annotations

from typing import BinaryIO

from mason.compression.errors import CompressionError

__all__ = ["write_estargz"]


def write_estargz(src: BinaryIO, dst: BinaryIO, level: int | None = None) -> None:
    raise CompressionError("estargz compression is not implemented yet")
