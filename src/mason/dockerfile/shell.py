"""BuildKit's shell word lexer: quote removal, escapes and ``$VAR`` expansion.

This is the word processor BuildKit v0.32.2 applies to Dockerfile words
(``frontend/dockerfile/shell``, frontend 1.26), rebuilt from its behaviour:

* ``$NAME``, ``${NAME}``; ``${NAME-w}`` / ``${NAME:-w}`` (default when unset /
  unset or empty), ``${NAME+w}`` / ``${NAME:+w}`` (alternative),
  ``${NAME?w}`` / ``${NAME:?w}`` (required); ``${NAME#p}`` ``${NAME##p}``
  (remove the shortest / longest matching prefix), ``${NAME%p}``
  ``${NAME%%p}`` (suffix), ``${NAME/p/r}`` ``${NAME//p/r}`` (replace the first
  / every match). Patterns know ``*``, ``?`` and ``\\`` escapes (no brackets).
  ``$1`` style positional names and the special parameters
  ``$@ $* $# $? $- $$ $! $0`` are names too (normally unset).
* single quotes are literal; double quotes allow ``$`` and escape only
  ``"``, ``$`` and the escape character; outside quotes the escape character
  protects any character.
* ``<<`` and the blanks after it stay together in one word (``<< EOF`` is one
  heredoc word, as BuildKit splits it).
* an unset name expands to ``""`` (or is kept verbatim with ``skip_unset_env``).

BuildKit quirks kept on purpose: a nested ``${...}`` word starts a new word
buffer, so in :meth:`ShellLexer.process_words` the unfinished word before a
``${NAME:-w}`` is lost (``ab${X:-c}d`` gives ``["cd"]``); ``${NAME//p/r}``
expands ``$0`` / ``$$`` in ``r`` as Go's ``ReplaceAllString`` does.

Everything here is linear in the input: characters are collected in lists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mason.dockerfile._text import go_quote, is_go_space

__all__ = ["ShellLexError", "ShellLexer"]

_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_HEREDOC_BLANKS = frozenset("\t\r ")
_RUNE_ERROR = "\ufffd"  # Go's string(rune(-1)) / %c of EOF
_RE_GO_NAME = re.compile(r"[A-Za-z0-9_]+")


class ShellLexError(ValueError):
    """A word could not be processed; ``str()`` is BuildKit's message."""


class _Words:
    """``wordsStruct``: words of one ``processStopOn`` level; the word being
    built lives in the run's shared buffer (BuildKit shares it between levels)."""

    __slots__ = ("in_word", "run", "words")

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.words: list[str] = []
        self.in_word = False

    def _flush(self) -> None:
        run = self.run
        self.words.append("".join(run.buf))
        run.buf = []
        run.buf_len = 0
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if is_go_space(ch):
            if self.in_word and self.run.buf_len:
                self._flush()
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        run = self.run
        run.buf.append(ch)
        run.buf_len += 1
        self.in_word = True

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def add_raw_string(self, s: str) -> None:
        run = self.run
        run.buf.append(s)
        run.buf_len += len(s)
        self.in_word = True

    def get_words(self) -> list[str]:
        if self.run.buf_len:
            self._flush()
        return self.words


class _Run:
    """One pass over one source string."""

    __slots__ = ("buf", "buf_len", "env", "esc", "lexer", "n", "pos", "raw_escapes", "src")

    def __init__(self, lexer: ShellLexer, src: str, env: Mapping[str, str]) -> None:
        self.lexer = lexer
        self.esc = lexer.escape
        self.env = env
        self.raw_escapes = lexer.raw_escapes
        # text/scanner skips a byte order mark at the very start
        self.src = src[1:] if src.startswith("\ufeff") else src
        self.pos = 0
        self.n = len(self.src)
        self.buf: list[str] = []
        self.buf_len = 0

    def peek(self) -> str | None:
        return self.src[self.pos] if self.pos < self.n else None

    def next(self) -> str | None:
        if self.pos < self.n:
            ch = self.src[self.pos]
            self.pos += 1
            return ch
        return None

    def stop_on(self, stop: str | None, raw_escapes: bool) -> tuple[str, list[str]]:
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            return self._stop_on(stop)
        finally:
            self.raw_escapes = saved

    def _stop_on(self, stop: str | None) -> tuple[str, list[str]]:
        result: list[str] = []
        self.buf = []
        self.buf_len = 0
        words = _Words(self)
        quotes = not self.lexer.skip_process_quotes
        src = self.src
        while self.pos < self.n:
            ch = src[self.pos]
            if ch == stop:
                self.pos += 1
                return "".join(result), words.get_words()
            if ch == "$":
                tmp = self.dollar()
                result.append(tmp)
                words.add_string(tmp)
                continue
            if ch == "<":
                tmp = self.possible_heredoc()
                result.append(tmp)
                words.add_raw_string(tmp)
                continue
            if quotes and ch in ("'", '"'):
                tmp = self.single_quote() if ch == "'" else self.double_quote()
                result.append(tmp)
                words.add_raw_string(tmp)
                continue
            self.pos += 1
            if ch == self.esc:
                if self.raw_escapes:
                    words.add_raw_char(ch)
                    result.append(ch)
                if self.pos >= self.n:
                    break
                ch = src[self.pos]
                self.pos += 1
                words.add_raw_char(ch)
            else:
                words.add_char(ch)
            result.append(ch)
        if stop is not None:
            raise ShellLexError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get_words()

    def possible_heredoc(self) -> str:
        self.pos += 1  # "<"
        if self.peek() != "<":
            return "<"
        self.pos += 1
        start = self.pos
        while self.pos < self.n and self.src[self.pos] in _HEREDOC_BLANKS:
            self.pos += 1
        return "<<" + self.src[start : self.pos]

    def single_quote(self) -> str:
        raw = self.lexer.raw_quotes
        result: list[str] = []
        ch = self.next()  # the opening quote
        if raw and ch is not None:
            result.append(ch)
        while True:
            ch = self.next()
            if ch is None:
                raise ShellLexError(
                    "unexpected end of statement while looking for matching single-quote"
                )
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
                raise ShellLexError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if p == '"':
                self.pos += 1
                if lx.raw_quotes:
                    result.append(p)
                return "".join(result)
            if p == "$":
                result.append(self.dollar())
                continue
            self.pos += 1
            c = p
            if c == self.esc:
                if self.raw_escapes:
                    result.append(c)
                q = self.peek()
                if q is None:
                    continue
                if q in ('"', "$", self.esc):
                    self.pos += 1
                    c = q
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
        self.pos += 1  # "$"
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.lookup(name)
            if not found and self.lexer.skip_unset_env:
                return "$" + name
            return value
        self.pos += 1  # "{"
        p = self.peek()
        if p is None:
            raise ShellLexError("syntax error: missing '}'")
        if p in "{}:":
            raise ShellLexError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            value, found = self.lookup(name)
            if not found and self.lexer.skip_unset_env:
                return "${" + name + "}"
            return value
        if ch == ":":
            ch = self.next()
            return self._modifier(name, ch, ":" + (ch or _RUNE_ERROR), null_is_unset=True)
        if ch is not None and ch in "+-?#%":
            return self._modifier(name, ch, ch, null_is_unset=False)
        if ch == "/":
            return self._replace(name)
        raise ShellLexError(f"unsupported modifier ({ch or _RUNE_ERROR}) in substitution")

    def _braced(self, stop: str, raw_escapes: bool, missing: str) -> str:
        try:
            word, _ = self.stop_on(stop, raw_escapes)
        except ShellLexError:
            if self.peek() is None:
                raise ShellLexError(missing) from None
            raise
        return word

    def _modifier(self, name: str, ch: str | None, chs: str, *, null_is_unset: bool) -> str:
        trim = ch in ("#", "%")
        if null_is_unset and trim:
            raise ShellLexError(f"unsupported modifier ({chs}) in substitution")
        word = self._braced("}", trim, "syntax error: missing '}'")
        value, found = self.lookup(name)
        if not found and self.lexer.skip_unset_env:
            return "${" + name + chs + word + "}"
        empty = not found or (null_is_unset and value == "")
        if ch == "-":
            return word if empty else value
        if ch == "+":
            return "" if empty else word
        if ch == "?":
            if not found:
                raise ShellLexError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise ShellLexError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if ch == "%" or ch == "#":
            greedy = word[:1] == ch
            if greedy:
                word = word[1:]
            if ch == "%":
                return _trim_suffix(word, value, greedy)
            return _trim_prefix(word, value, greedy)
        raise ShellLexError(f"unsupported modifier ({chs}) in substitution")

    def _replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.pos += 1
        pattern = self._braced("/", True, "syntax error: missing '/' in ${}")
        replacement = self._braced("}", True, "syntax error: missing '}'")
        value, found = self.lookup(name)
        if not found and self.lexer.skip_unset_env:
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        rx = _pattern_regex(pattern, greedy=True, anchored=False)
        if replace_all:
            return _go_replace_all(rx, value, replacement)
        m = rx.search(value)
        if m is None:
            return value
        return value[: m.start()] + replacement + value[m.end() :]


# ---------------------------------------------------------------------------
# shell patterns (``#``, ``%``, ``/`` modifiers)


def _pattern_regex(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """``convertShellPatternToRegex``: ``*`` any string, ``?`` one character,
    ``\\`` escapes ``*``, ``?`` or ``\\`` (and is dropped before ``}`` and ``/``)."""
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    n = len(pattern)
    while i < n:
        tok = pattern[i]
        i += 1
        if tok == "*":
            if (
                not out or out[-1] != star
            ):  # ``**`` matches what ``*`` does, without the backtracking
                out.append(star)
            continue
        if tok == "?":
            out.append(".")
            continue
        if tok == "\\":
            if i < n and pattern[i] in "}/":
                continue
            if i >= n or pattern[i] not in "*?\\":
                bad = pattern[i] if i < n else _RUNE_ERROR
                raise ShellLexError(
                    f"invalid pattern ({pattern}) in substitution: invalid escape '\\{bad}'"
                )
            tok = pattern[i]
            i += 1
        out.append(re.escape(tok))
    return re.compile("".join(out))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    m = _pattern_regex(pattern, greedy=greedy, anchored=True).match(value)
    return value[m.end() :] if m is not None else value


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern keeping each escape before the character it escapes."""
    out = [""] * len(pattern)
    last = len(pattern) - 1
    i = 0
    while i <= last:
        tok = pattern[i]
        j = last - i
        if tok == "\\" and i != last:
            out[j - 1] = tok
            out[j] = pattern[i + 1]
            i += 2
        else:
            out[j] = tok
            i += 1
    return "".join(out)


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # the shortest rightmost match is the shortest leftmost one of the reversed strings
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


def _go_expand(template: str, match: str) -> str:
    """Go's ``Regexp.Expand`` for a pattern without groups: ``$0`` / ``${0}`` is
    the match, ``$$`` a dollar, any other ``$name`` empty, a malformed one literal."""
    if "$" not in template:
        return template
    out: list[str] = []
    i = 0
    n = len(template)
    while i < n:
        j = template.find("$", i)
        if j < 0:
            out.append(template[i:])
            break
        out.append(template[i:j])
        i = j + 1
        if i < n and template[i] == "$":
            out.append("$")
            i += 1
            continue
        name = ""
        if i < n and template[i] == "{":
            close = template.find("}", i + 1)
            m = _RE_GO_NAME.fullmatch(template, i + 1, close) if close > 0 else None
            if m is not None:
                name, i = m.group(0), close + 1
        else:
            m = _RE_GO_NAME.match(template, i)
            if m is not None:
                name, i = m.group(0), m.end()
        if not name:
            out.append("$")  # malformed: the dollar is text
            continue
        if name == "0":
            out.append(match)
    return "".join(out)


def _go_replace_all(rx: re.Pattern[str], src: str, template: str) -> str:
    """Go's ``ReplaceAllString``: an empty match right after a match is not replaced."""
    out: list[str] = []
    last = 0
    search = 0
    n = len(src)
    while search <= n:
        m = rx.search(src, search)
        if m is None:
            break
        a, b = m.span()
        out.append(src[last:a])
        if b > last or a == 0:
            out.append(_go_expand(template, m.group(0)))
        last = b
        search = search + 1 if search + 1 > b else b
    out.append(src[last:])
    return "".join(out)


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
        run = _Run(self, word, env)
        try:
            return run.stop_on(None, self.raw_escapes)
        except ShellLexError as exc:
            raise ShellLexError(f"failed to process {go_quote(word)}: {exc}") from None
        except RecursionError:
            # each ${...} level recurses once; Go's growable stacks take any depth, Python's
            # cannot, so absurd nesting is refused as a syntax error instead of crashing
            raise ShellLexError(
                f"failed to process {go_quote(word[:80])}...: variable substitutions nested too deeply"
            ) from None

    def _plain(self, word: str) -> bool:
        """True when expanding ``word`` cannot change it (no ``$``, quote or escape)."""
        if "$" in word or self.escape in word or word.startswith("\ufeff"):
            return False
        return self.skip_process_quotes or ("'" not in word and '"' not in word)

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """Expand ``word`` into one string (quotes removed, spaces kept)."""
        if self._plain(word):
            return word
        return self._process(word, env)[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Expand ``word`` and split it into words like a shell would."""
        return self._process(word, env)[1]
