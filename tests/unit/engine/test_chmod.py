"""--chmod as BuildKit v0.32.2 reads and applies it (tonistiigi/dchapes-mode, BSD setmode)."""

from __future__ import annotations

import pytest

from mason.engine.chmod import ChmodError, parse_chmod


@pytest.mark.parametrize(
    ("text", "mode", "is_dir", "expected"),
    [
        ("0755", 0o600, False, 0o755),
        ("u+x", 0o644, False, 0o744),
        ("go=rx", 0o600, False, 0o655),
        ("a-w,u+s", 0o755, False, 0o4555),
        ("+X", 0o644, True, 0o755),  # X: directories
        ("+X", 0o644, False, 0o644),  # and files already executable by someone
        ("+X", 0o744, False, 0o755),
        ("g=u", 0o750, False, 0o770),
        ("o=", 0o777, False, 0o770),
        ("u=rwx,g=rx,o=", 0, False, 0o750),
        ("ug+rw-x", 0o711, False, 0o661),
        ("+t", 0o755, True, 0o1755),
        ("o+t", 0o755, True, 0o755),  # t only with u or g (or no who)
        ("a-X", 0o755, True, 0o644),
    ],
)
def test_modes(text: str, mode: int, is_dir: bool, expected: int) -> None:
    assert parse_chmod(text).apply(mode, is_dir) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("u+z", "invalid syntax"),
        ("u", "invalid syntax"),
        ("u+x,", "invalid syntax"),
        (
            "17777",
            "invalid chmod parameter: '17777'. it should be octal string and between 0 and 07777",
        ),
        (
            "0999",
            "invalid chmod parameter: '0999'. it should be octal string and between 0 and 07777",
        ),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(ChmodError) as info:
        parse_chmod(text)
    assert str(info.value) == message
