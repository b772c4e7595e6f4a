from __future__ import annotations

import pytest

from mason.cli._format import binary_size


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (None, "?"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (5 * 1024**2, "5.0 MiB"),
        (3 * 1024**3, "3.0 GiB"),
        (5000 * 1024**3, "5000.0 GiB"),
    ],
)
def test_binary_size(size: int | None, text: str) -> None:
    assert binary_size(size) == text
