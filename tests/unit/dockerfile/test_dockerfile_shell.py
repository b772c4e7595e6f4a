"""Table-driven tests of word expansion (BuildKit's shell lexer, v0.32.2 rules)."""

from __future__ import annotations

import pytest

from mason.dockerfile import ShellLexer, expand_word
from mason.dockerfile.shell import ShellLexError

ENV = {
    "FOO": "foo", "BAR": "bar baz", "EMPTY": "", "HOME": "/root", "X": "x",
    "VERSION": "v1.2.3", "PATHS": "/usr/local/bin/tool.tar.gz", "S": "a*b?c\\d",
}  # fmt: skip

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
    ('"it\'s"', "it's"),
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
    # frontend 1.26: defaults and alternatives without a colon (set but empty counts)
    ("${UNSET-def}", "def"),
    ("${EMPTY-def}", ""),
    ("${FOO-def}", "foo"),
    ("${UNSET+alt}", ""),
    ("${EMPTY+alt}", "alt"),
    ("${FOO+alt}", "alt"),
    ("${UNSET-$FOO}", "foo"),
    # prefix and suffix removal
    ("${VERSION#v}", "1.2.3"),
    ("${VERSION#x}", "v1.2.3"),
    ("${PATHS#*/}", "usr/local/bin/tool.tar.gz"),
    ("${PATHS##*/}", "tool.tar.gz"),
    ("${PATHS%.*}", "/usr/local/bin/tool.tar"),
    ("${PATHS%%.*}", "/usr/local/bin/tool"),
    ("${PATHS%/*}", "/usr/local/bin"),
    ("${PATHS%%/*}", ""),
    ("${VERSION#?}", "1.2.3"),
    ("${UNSET#x}", ""),
    ("${FOO#}", "foo"),
    ("${S#a\\*}", "b?c\\d"),
    ("${S%\\\\d}", "a*b?c"),
    ("${VERSION#${UNSET:-v}}", "1.2.3"),
    # replacement
    ("${VERSION/./-}", "v1-2.3"),
    ("${VERSION//./-}", "v1-2-3"),
    ("${VERSION//[.]/-}", "v1.2.3"),
    ("${PATHS/*\\//}", "tool.tar.gz"),
    ("${FOO/o/}", "fo"),
    ("${FOO//?/<$0>}", "<><><>"),  # $0 is a (unset) shell variable here
    ("${FOO//?/<\\$0>}", "<\\f><\\o><\\o>"),  # Go's ReplaceAllString expands the $0 it gets
    ("${FOO//o/$$}", "f"),
    ("${UNSET/a/b}", ""),
    ("${FOO//x*/y}", "foo"),
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
    ("${FOO", "unsupported modifier (\ufffd) in substitution"),
    ("${FOO!x}", "unsupported modifier (!) in substitution"),
    ("${FOO:#x}", "unsupported modifier (:#) in substitution"),
    ("${FOO:%x}", "unsupported modifier (:%) in substitution"),
    ("${FOO#x", "syntax error: missing '}'"),
    ("${FOO/x", "syntax error: missing '/' in ${}"),
    ("${FOO/x/y", "syntax error: missing '}'"),
    ("${FOO#\\x}", "invalid pattern (\\x) in substitution: invalid escape '\\x'"),
    ("${", "syntax error: missing '}'"),
    ("${}", "syntax error: bad substitution"),
    ("${:-x}", "syntax error: bad substitution"),
    ("${FOO:-x", "syntax error: missing '}'"),
    ("${FOO:=x}", "unsupported modifier (:=) in substitution"),
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
    # ``<<`` keeps the blanks after it in its word (a heredoc may be ``<< EOF``)
    ("cat << EOF", ["cat", "<< EOF"]),
    ("a <b", ["a", "<b"]),
    # BuildKit quirk: a nested ${...} restarts the unfinished word
    ("ab${X:-c}d e", ["xd", "e"]),
    ("ab${X}d e", ["abxd", "e"]),
]


@pytest.mark.parametrize(("word", "expected"), WORD_SPLITS)
def test_process_words(word: str, expected: list[str]) -> None:
    assert ShellLexer().process_words(word, ENV) == expected


def test_skip_unset_keeps_variables() -> None:
    lx = ShellLexer(skip_unset_env=True)
    assert (
        lx.process_word("$UNSET ${UNSET} ${UNSET:-d} $FOO", ENV)
        == "$UNSET ${UNSET} ${UNSET:-d} foo"
    )


def test_heredoc_body_mode_keeps_quotes() -> None:
    lx = ShellLexer(skip_process_quotes=True)
    assert lx.process_word("echo '$FOO' \"$X\"\n", ENV) == "echo 'foo' \"x\"\n"


def test_long_words_are_linear() -> None:
    word = "$FOO " * 20000
    assert expand_word(word, ENV) == "foo " * 20000
