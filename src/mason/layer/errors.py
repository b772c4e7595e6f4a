"""The error every part of ``mason.layer`` raises."""

from __future__ import annotations

from mason.errors import DiagnosticError

__all__ = ["LayerError"]


class LayerError(DiagnosticError):
    """A layer tar, a snapshot or a diff could not be read, written or applied.

    The message names the tar entry (or snapshot) and the reason.
    """

    reference = "layer-error"
