"""Small text formatters shared by the CLI's commands."""

from __future__ import annotations

from mason.errors import DiagnosticError

__all__ = ["binary_size", "error_lines"]


def error_lines(exc: BaseException) -> list[str]:
    """How every command prints an error: ``ERROR: message``, the context lines as they are
    (a Dockerfile excerpt reads as BuildKit prints it), then ``hint: …``."""
    if not isinstance(exc, DiagnosticError):
        return [f"ERROR: {exc}"]
    return [f"ERROR: {exc.message}", *exc.context, *([f"hint: {exc.hint}"] if exc.hint else [])]


def binary_size(size: int | None) -> str:
    """``size`` in binary units as `imagetools` and `cache inspect` print it: ``512 B``, ``1.5 KiB``."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
