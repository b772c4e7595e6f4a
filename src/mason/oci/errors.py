"""Errors of the OCI model layer: bad references, documents and layouts."""

from __future__ import annotations

from mason.errors import DiagnosticError

__all__ = ["ConfigError", "InvalidReferenceError", "LayoutError", "ManifestError", "OCIError"]


class OCIError(DiagnosticError):
    """Base class of errors raised by ``mason.oci``."""

    reference = "oci-error"


class InvalidReferenceError(OCIError):
    """An image reference string does not parse (exit status 2: the user typed it)."""

    reference = "invalid-reference"
    exit_code = 2


class ManifestError(OCIError):
    """A manifest or index document is malformed or of an unknown media type."""

    reference = "invalid-manifest"


class ConfigError(OCIError):
    """An image config document is malformed."""

    reference = "invalid-image-config"


class LayoutError(OCIError):
    """An OCI image layout directory is missing, malformed or lacks a blob."""

    reference = "oci-layout-error"
