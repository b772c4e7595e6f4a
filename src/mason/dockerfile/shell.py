"""BuildKit's shell word lexer: quote removal, escapes and ``$VAR`` expansion.

This is the word processor BuildKit v0.11.6 applies to Dockerfile words
(``frontend/dockerfile/shell``), rebuilt from its documented behaviour:

* ``$NAME``, ``${NAME}``, ``${NAME:-word}``, ``${NAME:+word}``,
  ``${NAME?word}``, ``${NAME:?word}``; ``$1`` style positional names and the
  special parameters ``$@ $* $# $? $- $$ $! $0`` are names too (normally unset).
  ``${NAME-word}`` and ``${NAME+word}`` are errors ("missing ':' in
  substitution"), as in v0.11.6.
* single quotes are literal; double quotes allow ``$`` and escape only
  ``"``, ``$`` and the escape character; outside quotes the escape character
  protects any character.
* an unset name expands to ``""`` (or is kept verbatim with ``skip_unset_env``).

Everything here is linear in the input: characters are collected in lists.
"""

from __future__ import annotations

from collections.abc import Mapping

from mason.dockerfile._text import go_quote, is_go_space

__all__ = ["ShellLexError", "ShellLexer"]

_SPECIAL_PARAMS = frozenset("@*#?-$!0")


class ShellLexError(ValueError):
    """A word could not be processed; ``str()`` is BuildKit's message."""


class _Words:
    __slots__ = ("in_word", "size", "word", "words")

    def __init__(self) -> None:
        self.word: list[str] = []
        self.size = 0  # characters in ``word``
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if is_go_space(ch):
            if self.in_word and self.size:
                self.words.append("".join(self.word))
                self.word = []
                self.size = 0
                self.in_word = False
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.word.append(ch)
        self.size += 1
        self.in_word = True

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def add_raw_string(self, s: str) -> None:
        self.word.append(s)
        self.size += len(s)
        self.in_word = True

    def get_words(self) -> list[str]:
        if self.size:
            self.words.append("".join(self.word))
            self.word = []
            self.size = 0
            self.in_word = False
        return self.words


class _Run:
    """One pass over one source string."""

    __slots__ = ("env", "esc", "lexer", "n", "pos", "src")

    def __init__(self, lexer: ShellLexer, src: str, env: Mapping[str, str]) -> None:
        self.lexer = lexer
        self.esc = lexer.escape
        self.env = env
        # text/scanner skips a byte order mark at the very start
        self.src = src[1:] if src.startswith("\ufeff") else src
        self.pos = 0
        self.n = len(self.src)

    def peek(self) -> str | None:
        return self.src[self.pos] if self.pos < self.n else None

    def next(self) -> str | None:
        if self.pos < self.n:
            ch = self.src[self.pos]
            self.pos += 1
            return ch
        return None

    def stop_on(self, stop: str | None) -> tuple[str, list[str]]:
        lx = self.lexer
        result: list[str] = []
        words = _Words()
        quotes = not lx.skip_process_quotes
        while self.pos < self.n:
            ch: str | None = self.src[self.pos]
            if stop is not None and ch == stop:
                self.pos += 1
                return "".join(result), words.get_words()
            if ch == "$":
                tmp = self.dollar()
                result.append(tmp)
                words.add_string(tmp)
                continue
            if quotes and ch == "'":
                tmp = self.single_quote()
                result.append(tmp)
                words.add_raw_string(tmp)
                continue
            if quotes and ch == '"':
                tmp = self.double_quote()
                result.append(tmp)
                words.add_raw_string(tmp)
                continue
            ch = self.next()
            assert ch is not None
            if ch == self.esc:
                if lx.raw_escapes:
                    words.add_raw_char(ch)
                    result.append(ch)
                ch = self.next()
                if ch is None:
                    break
                words.add_raw_char(ch)
            else:
                words.add_char(ch)
            result.append(ch)
        if stop is not None:
            raise ShellLexError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get_words()

    def single_quote(self) -> str:
        raw = self.lexer.raw_quotes
        result: list[str] = []
        ch = self.next()  # the opening quote
        if raw and ch is not None:
            result.append(ch)
        while True:
            ch = self.next()
            if ch is None:
                raise ShellLexError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if raw:
                    result.append(ch)
                return "".join(result)
            result.append(ch)

    def double_quote(self) -> str:
        lx = self.lexer
        result: list[str] = []
        ch = self.next()
        if lx.raw_quotes and ch is not None:
            result.append(ch)
        while True:
            p = self.peek()
            if p is None:
                raise ShellLexError("unexpected end of statement while looking for matching double-quote")
            if p == '"':
                self.next()
                if lx.raw_quotes:
                    result.append(p)
                return "".join(result)
            if p == "$":
                result.append(self.dollar())
                continue
            c = self.next()
            assert c is not None
            if c == self.esc:
                if lx.raw_escapes:
                    result.append(c)
                q = self.peek()
                if q is None:
                    continue
                if q in ('"', "$", self.esc):
                    c = self.next()
                    assert c is not None
            result.append(c)

    def name(self) -> str:
        start = self.pos
        src = self.src
        if start < self.n:
            ch = src[start]
            if ch.isdecimal():
                while self.pos < self.n and src[self.pos].isdecimal():
                    self.pos += 1
                return src[start : self.pos]
            if ch in _SPECIAL_PARAMS:
                self.pos += 1
                return ch
        while self.pos < self.n:
            ch = src[self.pos]
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            self.pos += 1
        return src[start : self.pos]

    def lookup(self, name: str) -> tuple[str, bool]:
        v = self.env.get(name)
        if v is None:
            return "", False
        return v, True

    def dollar(self) -> str:
        skip_unset = self.lexer.skip_unset_env
        self.next()  # "$"
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.lookup(name)
            if not found and skip_unset:
                return "$" + name
            return value
        self.next()  # "{"
        p = self.peek()
        if p is None:
            raise ShellLexError("syntax error: missing '}'")
        if p in "{}:":
            raise ShellLexError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            value, found = self.lookup(name)
            if not found and skip_unset:
                return "${" + name + "}"
            return value
        if ch == "?":
            word = self._braced_word()
            value, found = self.lookup(name)
            if not found:
                if skip_unset:
                    return "${" + name + "?" + word + "}"
                raise ShellLexError(f"{name}: {word or 'is not allowed to be unset'}")
            return value
        if ch == ":":
            modifier = self.next()
            word = self._braced_word()
            value, found = self.lookup(name)
            if modifier in ("+", "-", "?") and not found and skip_unset:
                return "${" + name + ":" + modifier + word + "}"
            if modifier == "+":
                return word if value != "" else value
            if modifier == "-":
                return word if value == "" else value
            if modifier == "?":
                if not found:
                    raise ShellLexError(f"{name}: {word or 'is not allowed to be unset'}")
                if value == "":
                    raise ShellLexError(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            raise ShellLexError(f"unsupported modifier ({modifier or chr(0xFFFD)}) in substitution")
        raise ShellLexError("missing ':' in substitution")

    def _braced_word(self) -> str:
        try:
            word, _ = self.stop_on("}")
        except ShellLexError:
            if self.peek() is None:
                raise ShellLexError("syntax error: missing '}'") from None
            raise
        return word


class ShellLexer:
    """A configured word processor (``escape`` is ``\\`` or ```` ` ````).

    ``raw_quotes`` keeps quote characters, ``raw_escapes`` keeps escape
    characters, ``skip_process_quotes`` treats quotes as ordinary characters
    (heredoc bodies) and ``skip_unset_env`` leaves unset variables as written.
    """

    __slots__ = ("escape", "raw_escapes", "raw_quotes", "skip_process_quotes", "skip_unset_env")

    def __init__(
        self,
        escape: str = "\\",
        *,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_process_quotes: bool = False,
        skip_unset_env: bool = False,
    ) -> None:
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_process_quotes = skip_process_quotes
        self.skip_unset_env = skip_unset_env

    def _process(self, word: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
        try:
            return _Run(self, word, env).stop_on(None)
        except ShellLexError as exc:
            raise ShellLexError(f"failed to process {go_quote(word)}: {exc}") from None
        except RecursionError:
            # each ${...} level recurses once; Go's growable stacks take any depth, Python's
            # cannot, so absurd nesting is refused as a syntax error instead of crashing
            raise ShellLexError(
                f"failed to process {go_quote(word[:80])}...: variable substitutions nested too deeply"
            ) from None

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """Expand ``word`` into one string (quotes removed, spaces kept)."""
        return self._process(word, env)[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Expand ``word`` and split it into words like a shell would."""
        return self._process(word, env)[1]
