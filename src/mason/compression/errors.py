"""Errors of the compression layer."""

from __future__ import annotations

from mason.errors import DiagnosticError

__all__ = ["CompressionError", "EStargzError"]


class CompressionError(DiagnosticError):
    """Corrupt compressed data, an unknown compression or an invalid level."""

    reference = "compression-error"


class EStargzError(CompressionError):
    """An eStargz blob is malformed: bad footer, TOC, chunk digest or tar stream."""

    reference = "estargz-invalid"
