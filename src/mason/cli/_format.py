"""Small text formatters shared by the CLI's commands."""

from __future__ import annotations

__all__ = ["binary_size"]


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
