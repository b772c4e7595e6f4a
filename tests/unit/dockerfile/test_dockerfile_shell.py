"""Table-driven tests of word expansion (BuildKit's shell lexer, v0.11.6 rules)."""

from __future__ import annotations

import pytest

from mason.dockerfile import ShellLexer, expand_word
from mason.dockerfile.shell import ShellLexError

ENV = {"FOO": "foo", "BAR": "bar baz", "EMPTY": "", "HOME": "/root", "X": "x"}

WORDS = [
    # plain variables
    ("$FOO", "foo"),
    ("${FOO}", "foo"),
    ("a${FOO}b", "afoob"),
    ("$FOO/bin", "foo/bin"),
    ("$UNSET", ""),
    ("${UNSET}", ""),
    ("$", "$"),
    ("$/x", "$/x"),
    ("$1", ""),
    ("$FOO_BAR", ""),
    ("${FOO}_BAR", "foo_BAR"),
    # defaults and alternatives
    ("${UNSET:-def}", "def"),
    ("${EMPTY:-def}", "def"),
    ("${FOO:-def}", "foo"),
    ("${FOO:+alt}", "alt"),
    ("${EMPTY:+alt}", ""),
    ("${UNSET:+alt}", ""),
    ("${UNSET:-$FOO}", "foo"),
    ("${UNSET:-${FOO:+nested}}", "nested"),
    ("${UNSET:-a b}", "a b"),
    ('${UNSET:-"q w"}', "q w"),
    # required
    ("${FOO?msg}", "foo"),
    ("${EMPTY?msg}", ""),
    ("${FOO:?msg}", "foo"),
    # quotes
    ("'$FOO'", "$FOO"),
    ('"$FOO"', "foo"),
    ('"a  b"', "a  b"),
    ("\"it's\"", "it's"),
    ("'say \"hi\"'", 'say "hi"'),
    ('"\\$FOO"', "$FOO"),
    ('"\\"x\\""', '"x"'),
    ('"a\\b"', "a\\b"),
    ('"\\\\"', "\\"),
    # escapes outside quotes
    ("\\$FOO", "$FOO"),
    ("a\\ b", "a b"),
    ("\\'", "'"),
    ("trailing\\", "trailing"),
]


@pytest.mark.parametrize(("word", "expected"), WORDS)
def test_expand_word(word: str, expected: str) -> None:
    assert expand_word(word, ENV) == expected


BACKTICK = [
    ("`$FOO", "$FOO"),
    ("a\\b", "a\\b"),
    ('"`"x`""', '"x"'),
    ("C:\\path\\$FOO", "C:\\path\\foo"),
]


@pytest.mark.parametrize(("word", "expected"), BACKTICK)
def test_expand_with_backtick_escape(word: str, expected: str) -> None:
    assert expand_word(word, ENV, "`") == expected


ERRORS = [
    ("${FOO", "missing ':' in substitution"),
    ("${FOO-x}", "missing ':' in substitution"),
    ("${FOO+x}", "missing ':' in substitution"),
    ("${", "syntax error: missing '}'"),
    ("${}", "syntax error: bad substitution"),
    ("${:-x}", "syntax error: bad substitution"),
    ("${FOO:-x", "syntax error: missing '}'"),
    ("${FOO:=x}", "unsupported modifier (=) in substitution"),
    ("${UNSET?}", "UNSET: is not allowed to be unset"),
    ("${UNSET?must set}", "UNSET: must set"),
    ("${UNSET:?}", "UNSET: is not allowed to be unset"),
    ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
    ("${EMPTY:?need it}", "EMPTY: need it"),
    ("'open", "unexpected end of statement while looking for matching single-quote"),
    ('"open', "unexpected end of statement while looking for matching double-quote"),
]


@pytest.mark.parametrize(("word", "message"), ERRORS)
def test_expansion_errors(word: str, message: str) -> None:
    with pytest.raises(ShellLexError) as info:
        expand_word(word, ENV)
    assert str(info.value).endswith(message)
    assert str(info.value).startswith("failed to process ")


WORD_SPLITS = [
    ("a b  c", ["a", "b", "c"]),
    ("$BAR", ["bar", "baz"]),
    ('"$BAR"', ["bar baz"]),
    ("x$BAR", ["xbar", "baz"]),
    ("'a b' c", ["a b", "c"]),
    ('a "" b', ["a", "b"]),
    ("\\  x", [" ", "x"]),
]


@pytest.mark.parametrize(("word", "expected"), WORD_SPLITS)
def test_process_words(word: str, expected: list[str]) -> None:
    assert ShellLexer().process_words(word, ENV) == expected


def test_skip_unset_keeps_variables() -> None:
    lx = ShellLexer(skip_unset_env=True)
    assert lx.process_word("$UNSET ${UNSET} ${UNSET:-d} $FOO", ENV) == "$UNSET ${UNSET} ${UNSET:-d} foo"


def test_heredoc_body_mode_keeps_quotes() -> None:
    lx = ShellLexer(skip_process_quotes=True)
    assert lx.process_word("echo '$FOO' \"$X\"\n", ENV) == "echo 'foo' \"x\"\n"


def test_long_words_are_linear() -> None:
    word = "$FOO " * 20000
    assert expand_word(word, ENV) == "foo " * 20000
