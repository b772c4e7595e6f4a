"""The Dockerfile parser: bytes to an AST of logical lines (BuildKit v0.32.2 grammar,
Dockerfile frontend 1.26).

Parser directives (``# syntax=``, ``# escape=``, ``# check=``) are read only at
the top of the file and are not comments of the first instruction; a logical line joins physical lines ending in the escape character
(comment lines and blank lines inside it are dropped, blank ones with a
warning); each instruction's arguments are split by that instruction's rule
(JSON or shell form, whitespace words, ``key=value`` words ...); heredoc
bodies follow RUN/COPY/ADD lines. See the golden data README for the exact
rules this module implements.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from mason.dockerfile._text import (
    RE_WHITESPACE,
    go_trim_left,
    go_trim_space,
    is_go_space,
    loads_json,
)
from mason.dockerfile.errors import DockerfileError
from mason.dockerfile.shell import ShellLexer, ShellLexError
from mason.structs import Struct, eq_without

__all__ = [
    "MAX_LINE_BYTES",
    "Directive",
    "Heredoc",
    "Node",
    "ParseResult",
    "SyntaxDirective",
    "Warning",
    "detect_syntax",
    "parse",
    "parse_directives",
    "parse_heredoc_word",
]

#: bufio.Scanner's limit: a physical line (without its newline) must be shorter.
MAX_LINE_BYTES = 65536

_BOM = b"\xef\xbb\xbf"
_RE_DIRECTIVE = re.compile(r"^([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z")
_RE_HEREDOC = re.compile(r"^([0-9]*)<<(-?)[\t\n\f\r ]*([^<]*)\Z", re.DOTALL)
_RE_GO_SPACES = re.compile(
    "[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"
)
_VALID_DIRECTIVES = frozenset({"syntax", "escape", "check"})
_EMPTY_CONTINUATION_URL = "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/"
_HEREDOC_INSTRUCTIONS = frozenset({"add", "copy", "run"})
_UINT64_MAX = 2**64 - 1


class Heredoc(Struct, frozen=True):
    """A heredoc attached to a RUN/COPY/ADD line (``content`` is the raw body)."""

    name: str
    file_descriptor: int = 0
    expand: bool = True
    chomp: bool = False
    content: str = ""


class Node(Struct, frozen=True):
    """One instruction (a logical line) of the AST.

    ``value`` is the keyword as written, ``args`` the split arguments (BuildKit's
    ``next``), ``child`` the trigger of an ONBUILD, ``json`` whether the
    arguments were a JSON array. Lines are 1-based physical lines; ``end_line``
    includes heredoc bodies.
    """

    value: str
    original: str
    start_line: int = 0
    end_line: int = 0
    flags: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    json: bool = False
    heredocs: tuple[Heredoc, ...] = ()
    prev_comment: tuple[str, ...] = ()
    child: Node | None = None

    @property
    def keyword(self) -> str:
        return self.value.lower()

    @property
    def lines(self) -> tuple[int, ...]:
        end = max(self.end_line, self.start_line)
        return tuple(range(self.start_line, end + 1))


class Warning(Struct, frozen=True):
    short: str
    detail: tuple[str, ...]
    url: str
    line: int


class Directive(Struct, frozen=True):
    name: str
    value: str
    line: int


class SyntaxDirective(Struct, frozen=True):
    """BuildKit's ``DetectSyntax``: the frontend image a file asks for."""

    syntax: str
    cmdline: str
    line: int


class ParseResult(Struct, frozen=True):
    nodes: tuple[Node, ...]
    escape: str
    warnings: tuple[Warning, ...] = ()
    directives: tuple[Directive, ...] = ()
    #: set when BuildKit returns an error *with* a partial AST (a line too long)
    error: DockerfileError | None = None

    __eq__, __hash__ = eq_without("error")


class _DirectiveParser:
    """``DirectiveParser``: ``# name=value`` lines until the first other line
    (``prefix`` is the comment marker: ``#``, or ``//`` for DetectSyntax)."""

    __slots__ = ("done", "line", "prefix", "seen")

    def __init__(self, prefix: str = "#", line: int = 0) -> None:
        self.line = line
        self.done = False
        self.seen: set[str] = set()
        self.prefix = prefix

    def parse_line(self, text: str) -> Directive | None:
        self.line += 1
        if self.done:
            return None
        if not text.startswith(self.prefix):
            self.done = True
            return None
        m = _RE_DIRECTIVE.match(go_trim_left(text[len(self.prefix) :]))
        if m is None:
            self.done = True
            return None
        key = m.group(1).lower()
        if key not in _VALID_DIRECTIVES:
            self.done = True
            return None
        if key in self.seen:
            raise _ParseFail(f"only one {key} parser directive can be used")
        self.seen.add(key)
        return Directive(key, m.group(2), self.line)


class _ParseFail(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _split_physical(data: bytes) -> list[bytes]:
    """bufio.Scanner with scanLines: each line keeps its ``\\n``."""
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _decode(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def parse_directives(data: bytes) -> tuple[list[Directive], DockerfileError | None]:
    """The directive view of the raw file (no BOM or indentation stripping)."""
    dp = _DirectiveParser()
    out: list[Directive] = []
    for raw in _split_physical(data):
        if dp.done:
            break
        text = _decode(raw[:-1] if raw.endswith(b"\n") else raw)
        if text.endswith("\r"):
            text = text[:-1]  # ScanLines drops one trailing CR
        try:
            d = dp.parse_line(text)
        except _ParseFail as exc:
            return out, DockerfileError(exc.message, section="directives")
        if d is not None:
            out.append(d)
    return out, None


def detect_syntax(data: bytes) -> SyntaxDirective | None:
    """Which frontend the file asks for: ``# syntax=``, ``// syntax=`` or ``{"syntax": ...}``."""
    line = 0
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    first, _sep, rest = data.partition(b"\n")
    if first.startswith(b"#!"):
        data = rest
        line = 1
    for prefix in ("#", "//"):
        dp = _DirectiveParser(prefix, line)
        for raw in _split_physical(data):
            if dp.done:
                break
            text = _decode(raw.rstrip(b"\n"))
            if text.endswith("\r"):
                text = text[:-1]
            try:
                d = dp.parse_line(text)
            except _ParseFail:
                break
            if d is not None and d.name == "syntax":
                return SyntaxDirective(d.value.split(" ", 1)[0], d.value, d.line)
    try:
        doc = json.loads(_decode(data))
    except (ValueError, RecursionError):
        return None
    if isinstance(doc, dict) and isinstance(doc.get("syntax"), str):
        return SyntaxDirective(doc["syntax"], doc["syntax"], line)
    return None


# ---------------------------------------------------------------------------
# splitting a logical line


def _extract_builder_flags(line: str, escape: str) -> tuple[str, list[str]]:
    """Leading ``--flag`` words. Works on bytes as BuildKit does (each byte is a
    rune); quotes are removed and the file's escape character escapes."""
    if line and line[0] != "-" and line[0] < "\x80" and not is_go_space(line[0]):
        return line, []  # fast path: no flags
    b = line.encode("utf-8", "surrogateescape")
    n = len(b)
    esc = ord(escape)
    words: list[str] = []
    word: list[str] = []
    blank_ok = False
    phase = 0  # 0 spaces, 1 word, 2 quote
    quote = 0
    pos = 0
    while pos <= n:
        ch = b[pos] if pos < n else -1
        if phase == 0:
            if pos == n:
                break
            if is_go_space(chr(ch)):
                pos += 1
                continue
            if ch != 0x2D or pos + 1 == n or b[pos + 1] != 0x2D:
                return _decode(b[pos:]), words
            phase = 1
        if pos == n:  # end of input inside a word or quote
            w = "".join(word)
            if w != "--" and (blank_ok or w):
                words.append(w)
            break
        if phase == 1:
            if is_go_space(chr(ch)):
                phase = 0
                w = "".join(word)
                if w == "--":
                    return _decode(b[pos:]), words
                if blank_ok or w:
                    words.append(w)
                word = []
                blank_ok = False
                pos += 1
                continue
            if ch in (0x27, 0x22):
                quote = ch
                blank_ok = True
                phase = 2
                pos += 1
                continue
            if ch == esc:
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = b[pos]
            word.append(chr(ch))
            pos += 1
            continue
        # phase == 2: inside a quote
        if ch == quote:
            phase = 1
            pos += 1
            continue
        if ch == esc:
            if pos + 1 == n:
                phase = 1
                pos += 1
                continue
            pos += 1
            ch = b[pos]
        word.append(chr(ch))
        pos += 1
    return "", words


def _split_command(line: str, escape: str) -> tuple[str, list[str], str]:
    parts = RE_WHITESPACE.split(go_trim_space(line), maxsplit=1)
    args = ""
    flags: list[str] = []
    if len(parts) == 2:
        args, flags = _extract_builder_flags(parts[1], escape)
    return parts[0], flags, go_trim_space(args)


def _parse_words(rest: str, escape: str) -> list[str]:
    """Words for ENV/LABEL/ARG: quotes do not split, quotes and escapes are kept."""
    if "'" not in rest and '"' not in rest and escape not in rest:
        return [w for w in _RE_GO_SPACES.split(rest) if w]  # fast path: plain words
    words: list[str] = []
    word: list[str] = []
    phase = 0
    quote = ""
    blank_ok = False
    n = len(rest)
    pos = 0
    while pos <= n:
        ch = rest[pos] if pos < n else ""
        if phase == 0:
            if pos == n:
                break
            if is_go_space(ch):
                pos += 1
                continue
            phase = 1
        if pos == n:
            if blank_ok or word:
                words.append("".join(word))
            break
        if phase == 1:
            if is_go_space(ch):
                phase = 0
                if blank_ok or word:
                    words.append("".join(word))
                word = []
                blank_ok = False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = 2
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue
                word.append(ch)
                pos += 1
                ch = rest[pos]
            word.append(ch)
            pos += 1
            continue
        # in quote
        if ch == quote:
            phase = 1
        if ch == escape and quote != "'":
            if pos + 1 == n:
                phase = 1
                pos += 1
                continue
            pos += 1
            word.append(ch)
            ch = rest[pos]
        word.append(ch)
        pos += 1
    return words


_NOT_STRINGS = "when using JSON array syntax, arrays must be comprised of strings only"

# (args, is_json, child) produced by each instruction's rule
_Parsed = tuple[tuple[str, ...], bool, "Node | None"]


def _parse_json(rest: str) -> tuple[str, ...] | None:
    """The elements of ``rest`` when all of it is a JSON array of strings
    (``json.Unmarshal``: text after the closing bracket makes it shell form)."""
    rest = go_trim_left(rest)
    if not rest.startswith("["):
        return None
    ok, value = loads_json(rest)
    if not ok or not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise _ParseFail(_NOT_STRINGS)
    return tuple(value)


def _p_ignore(rest: str, escape: str) -> _Parsed:
    return ("",), False, None


def _p_maybe_json(rest: str, escape: str) -> _Parsed:
    if rest == "":
        return (), False, None
    js = _parse_json(rest)
    if js is not None:
        return js, True, None
    return (rest,), False, None


def _p_whitespace(rest: str, escape: str) -> _Parsed:
    if rest == "":
        return (), False, None
    return tuple(RE_WHITESPACE.split(rest)), False, None


def _p_maybe_json_list(rest: str, escape: str) -> _Parsed:
    js = _parse_json(rest)
    if js is not None:
        return js, True, None
    return _p_whitespace(rest, escape)


def _p_string(rest: str, escape: str) -> _Parsed:
    if rest == "":
        return (), False, None
    return (rest,), False, None


def _p_name_or_name_val(rest: str, escape: str) -> _Parsed:
    return tuple(_parse_words(rest, escape)), False, None


def _name_val(key: str) -> Callable[[str, str], _Parsed]:
    def parse_name_val(rest: str, escape: str) -> _Parsed:
        words = _parse_words(rest, escape)
        if not words:
            return (), False, None
        if "=" not in words[0]:
            parts = RE_WHITESPACE.split(rest, maxsplit=1)
            if len(parts) < 2:
                raise _ParseFail(f"{key} must have two arguments")
            return (parts[0], parts[1], ""), False, None
        # key, value and separator: "=" here, "" for the legacy ``KEY value`` form
        out: list[str] = []
        for w in words:
            if "=" not in w:
                raise _ParseFail(
                    f"Syntax error - can't find = in {_go_q(w)}. Must be of the form: name=value"
                )
            k, _, v = w.partition("=")
            out += (k, v, "=")
        return tuple(out), False, None

    return parse_name_val


def _go_q(s: str) -> str:
    from mason.dockerfile._text import go_quote

    return go_quote(s)


def _p_health(rest: str, escape: str) -> _Parsed:
    b = rest.encode("utf-8", "surrogateescape")
    sep = 0
    while sep < len(b) and not is_go_space(chr(b[sep])):
        sep += 1
    nxt = sep
    while nxt < len(b) and is_go_space(chr(b[nxt])):
        nxt += 1
    if sep == 0:
        return (), False, None
    typ = _decode(b[:sep])
    args, is_json, _ = _p_maybe_json(_decode(b[nxt:]), escape)
    return (typ, *args), is_json, None


def _p_subcommand(rest: str, escape: str) -> _Parsed:
    if rest == "":
        return (), False, None
    child = _node_from_line(rest, escape, ())
    return (), False, child


_DISPATCH: dict[str, Callable[[str, str], _Parsed]] = {
    "add": _p_maybe_json_list,
    "arg": _p_name_or_name_val,
    "cmd": _p_maybe_json,
    "copy": _p_maybe_json_list,
    "entrypoint": _p_maybe_json,
    "env": _name_val("ENV"),
    "expose": _p_whitespace,
    "from": _p_whitespace,
    "healthcheck": _p_health,
    "label": _name_val("LABEL"),
    "maintainer": _p_string,
    "onbuild": _p_subcommand,
    "run": _p_maybe_json,
    "shell": _p_maybe_json,
    "stopsignal": _p_string,
    "user": _p_string,
    "volume": _p_maybe_json_list,
    "workdir": _p_string,
}


def _node_from_line(line: str, escape: str, comments: tuple[str, ...]) -> Node:
    cmd, flags, args = _split_command(line, escape)
    fn = _DISPATCH.get(cmd.lower(), _p_ignore)
    values, is_json, child = fn(args, escape)
    return Node(
        value=cmd,
        original=line,
        flags=tuple(flags),
        args=values,
        json=is_json,
        prev_comment=comments,
        child=child,
    )


def _can_contain_heredoc(node: Node) -> bool:
    if node.keyword == "onbuild" and node.child is not None:
        node = node.child
    return node.keyword in _HEREDOC_INSTRUCTIONS and not node.json


_HEREDOC_WORD_LEXER = ShellLexer("\\", skip_unset_env=True)
_HEREDOC_RAW_LEXER = ShellLexer("\\", raw_quotes=True, skip_unset_env=True)
_LINE_LEXER = ShellLexer("\\", raw_quotes=True, raw_escapes=True, skip_unset_env=True)


def parse_heredoc_word(word: str) -> Heredoc | None:
    """``ParseHeredoc``: the heredoc a word like ``<<-"EOF"`` opens, or None."""
    m = _RE_HEREDOC.match(word)
    if m is None:
        return None
    digits, dash, rest = m.groups()
    if not rest:
        return None
    try:
        words = _HEREDOC_WORD_LEXER.process_words(rest, {})
        if len(words) != 1:
            return None
        raw = _HEREDOC_RAW_LEXER.process_words(rest, {})
    except ShellLexError as exc:
        raise _ParseFail(str(exc)) from None
    if len(raw) != len(words):
        raise _ParseFail(f"internal lexing of heredoc produced inconsistent results: {rest}")
    name = words[0]
    quotes = name.count("'") + name.count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    fd = min(int(digits), _UINT64_MAX) if digits else 0
    return Heredoc(name=name, file_descriptor=fd, expand=quotes == raw_quotes, chomp=dash == "-")


def _heredocs_from_line(line: str) -> list[Heredoc]:
    if "<<" not in line:
        return []  # fast path: no word can open a heredoc
    try:
        words = _LINE_LEXER.process_words(line, {})
    except ShellLexError:
        words = []
    out: list[Heredoc] = []
    for w in words:
        h = parse_heredoc_word(w)
        if h is not None:
            out.append(h)
    return out


def _is_comment(text: str) -> bool:
    return go_trim_left(text.rstrip("\r\n")).startswith("#")


class _Lines:
    """Physical lines of the file, as bufio.Scanner yields them."""

    __slots__ = ("data", "error", "n", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.n = len(data)
        self.error = False

    def scan(self) -> str | None:
        if self.error or self.pos >= self.n:
            return None
        i = self.data.find(b"\n", self.pos)
        end = self.n if i < 0 else i
        if end - self.pos >= MAX_LINE_BYTES:
            self.error = True
            return None
        raw = self.data[self.pos : end + 1 if i >= 0 else end]
        self.pos = end + 1 if i >= 0 else end
        return _decode(raw)


class _Parser:
    """BuildKit's ``Parse`` loop: physical lines in, one node per logical line out."""

    def __init__(self, data: bytes) -> None:
        self.escape = "\\"
        self.cont_re = _continuation_re(self.escape)
        self.dp = _DirectiveParser()
        self.directives: list[Directive] = []
        self.current = 0
        self.nodes: list[Node] = []
        self.warnings: list[Warning] = []
        self.comments: list[str] = []
        self.scanner = _Lines(data)

    def process(self, text: str, strip_left: bool) -> tuple[str, bool]:
        """The line without its newline (and comment); whether it was a directive."""
        text = text.rstrip("\r\n")
        if strip_left:
            text = go_trim_left(text)
        try:
            d = self.dp.parse_line(text)
        except _ParseFail as exc:
            raise DockerfileError(exc.message, lines=(self.current,), section="parse") from None
        if d is not None:
            self.directives.append(d)
            if d.name == "escape":
                if d.value not in ("`", "\\"):
                    raise DockerfileError(
                        f"invalid escape token '{d.value}' does not match ` or \\",
                        lines=(self.current,),
                        section="parse",
                        hint="use `# escape=\\` or `# escape=``",
                    )
                self.escape = d.value
                self.cont_re = _continuation_re(self.escape)
        return ("" if text.startswith("#") else text), d is not None

    def logical_line(self, first: str) -> str:
        """The rest of a continued instruction whose first physical line was ``first``."""
        parts = [first]
        has_empty = False
        eol = False
        while not eol:
            raw = self.scanner.scan()
            if raw is None:
                break
            text, _directive = self.process(raw, False)
            self.current += 1
            if _is_comment(raw):
                continue
            if go_trim_left(text.rstrip("\r\n")) == "":
                has_empty = True
                continue
            part, eol = _trim_continuation(text, self.cont_re)
            parts.append(part)
        line = "".join(parts)
        if has_empty:
            self.warnings.append(
                Warning(
                    short="Empty continuation line found in: " + line,
                    detail=("Empty continuation lines will become errors in a future release",),
                    url=_EMPTY_CONTINUATION_URL,
                    line=self.current,
                )
            )
        return line

    def heredoc_bodies(self, heredocs: list[Heredoc], start: int) -> tuple[Heredoc, ...]:
        bodies: list[Heredoc] = []
        for h in heredocs:
            body: list[str] = []
            terminated = False
            while (hraw := self.scanner.scan()) is not None:
                self.current += 1
                candidate = hraw.rstrip("\r\n")
                if h.chomp:
                    candidate = candidate.lstrip("\t")
                if candidate == h.name:
                    terminated = True
                    break
                body.append(hraw)
            if not terminated:
                raise DockerfileError(
                    "unterminated heredoc",
                    lines=_range(start, self.current),
                    section="parse",
                    hint=f"end the heredoc with a line holding only {h.name!r}",
                )
            bodies.append(Heredoc(h.name, h.file_descriptor, h.expand, h.chomp, "".join(body)))
        return tuple(bodies)

    def instruction(self, raw: str) -> None:
        """Read the instruction starting with physical line ``raw`` (if it is one)."""
        if self.current == 0 and raw.startswith("\ufeff"):
            raw = raw[1:]
        if _is_comment(raw):
            comment = go_trim_space(raw[1:])
            if comment == "":
                self.comments = []
            else:
                self.comments.append(comment)
        text, directive = self.process(raw, True)
        if directive:
            self.comments.pop()  # a directive is not a comment of the first instruction
        self.current += 1
        start = self.current
        first, eol = _trim_continuation(text, self.cont_re)
        if eol and first == "":
            return
        line = first if eol else self.logical_line(first)
        try:
            node = _node_from_line(line, self.escape, tuple(self.comments))
            heredocs = _heredocs_from_line(line) if _can_contain_heredoc(node) else []
        except _ParseFail as exc:
            raise DockerfileError(
                exc.message, lines=_range(start, self.current), section="parse"
            ) from None
        bodies = self.heredoc_bodies(heredocs, start)
        located = Node(
            value=node.value, original=node.original, start_line=start, end_line=self.current,
            flags=node.flags, args=node.args, json=node.json, heredocs=bodies,
            prev_comment=node.prev_comment, child=node.child,
        )  # fmt: skip
        self.nodes.append(located)
        self.comments = []

    def result(self) -> ParseResult:
        if not self.nodes:
            raise DockerfileError(
                "file with no instructions", lines=(self.current,), section="parse"
            )
        err = None
        if self.scanner.error:
            err = DockerfileError(
                f"dockerfile line greater than max allowed size of {MAX_LINE_BYTES - 1}",
                lines=(self.current,),
                section="parse",
            )
        return ParseResult(
            tuple(self.nodes), self.escape, tuple(self.warnings), tuple(self.directives), err
        )


def parse(data: bytes) -> ParseResult:
    """Parse a Dockerfile into its AST. Raises DockerfileError (section ``parse``)."""
    p = _Parser(data)
    while (raw := p.scanner.scan()) is not None:
        p.instruction(raw)
    return p.result()


def _range(start: int, end: int) -> tuple[int, ...]:
    return tuple(range(start, max(start, end) + 1))


def _continuation_re(escape: str) -> re.Pattern[str]:
    e = re.escape(escape)
    return re.compile(r"([^" + e + r"])" + e + r"[ \t]*\Z|^" + e + r"[ \t]*\Z", re.DOTALL)


def _trim_continuation(line: str, cont_re: re.Pattern[str]) -> tuple[str, bool]:
    m = cont_re.search(line)
    if m is None:
        return line, True
    return line[: m.start()] + (m.group(1) or ""), False
