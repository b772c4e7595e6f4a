"""Inputs at the edges of size and depth: the parser answers with DockerfileError, never a crash."""

from __future__ import annotations

import pytest

from mason.dockerfile import parse_dockerfile
from mason.dockerfile.errors import DockerfileError
from mason.dockerfile.expand import expand_word
from mason.dockerfile.instructions import suggest
from mason.dockerfile.shell import ShellLexError

_INSTRUCTIONS = ["ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "RUN"]


def test_suggestion_for_a_near_miss() -> None:
    assert suggest("RUNN", _INSTRUCTIONS, case_sensitive=False) == "RUN"


def test_no_suggestion_for_a_word_far_longer_than_every_option() -> None:
    assert suggest("X" * 50_000, _INSTRUCTIONS, case_sensitive=False) is None


def test_unknown_long_instruction_is_a_dockerfile_error() -> None:
    data = b"FROM alpine\nRUN echo x\r\n" + b"x" * 50_000 + b"\n"
    with pytest.raises(DockerfileError, match="unknown instruction"):
        parse_dockerfile(data)


def test_deeply_nested_substitution_is_a_lex_error_not_a_crash() -> None:
    word = "${B:-" * 3000 + "x" + "}" * 3000
    with pytest.raises(ShellLexError, match="nested too deeply"):
        expand_word(word, {})


def test_moderately_nested_substitution_still_expands() -> None:
    word = "${B:-" * 50 + "x" + "}" * 50
    assert expand_word(word, {}) == "x"


@pytest.mark.parametrize(
    "data",
    [
        b"FROM a\nCMD " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
        b"FROM a\nCMD [" + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"]\n",
        b'{"syntax": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\nFROM a\n",
        b"FROM a\nONBUILD ONBUILD RUN x\n",
        b"FROM a\x00\nRUN \x00\n",
        b"FROM a\nRUN --mount=" + b'"' * 10_001 + b" x\n",
        b"FROM a\nRUN " + b" ".join(b"<<E%d" % i for i in range(5000)) + b"\n",
    ],
    ids=[
        "deep-json-array",
        "deep-json-object",
        "deep-syntax-json",
        "onbuild-onbuild",
        "nul",
        "quotes",
        "many-heredocs",
    ],
)
def test_hostile_input_parses_or_fails_with_a_dockerfile_error(data: bytes) -> None:
    try:
        parse_dockerfile(data)
    except DockerfileError as exc:
        assert exc.message
