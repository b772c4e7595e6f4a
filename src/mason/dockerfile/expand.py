"""Word expansion of typed commands, as BuildKit performs it at build time.

What is expanded (with the file's escape character, BuildKit v0.32.2's
``Expand`` methods): ENV and LABEL keys and values; ARG names and defaults;
COPY/ADD sources, destination, ``--chown`` and ``--chmod`` (and ADD
``--checksum``); WORKDIR; USER; VOLUME; STOPSIGNAL; RUN ``--mount`` values
(which also parses them into :class:`Mount`). COPY/ADD heredoc bodies with
``expand`` are expanded with ``\\`` as escape and quotes left alone.
Never expanded: RUN/CMD/ENTRYPOINT command lines (the shell does it), RUN
heredoc files, EXPOSE (expanded and split by the builder, see
:func:`expand_ports`), SHELL, HEALTHCHECK, ONBUILD, MAINTAINER, ``--from``,
``--exclude`` and ``--device``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from mason.dockerfile.errors import DockerfileError
from mason.dockerfile.instructions import (
    AddCommand,
    ArgCommand,
    ArgSpec,
    Command,
    CopyCommand,
    EnvCommand,
    ExposeCommand,
    InstructionError,
    KeyValue,
    LabelCommand,
    RunCommand,
    SourceContent,
    StopSignalCommand,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
    parse_mount,
)
from mason.dockerfile.shell import ShellLexer, ShellLexError
from mason.structs import replace

__all__ = ["Expander", "expand_command", "expand_ports", "expand_word", "make_expander"]

Expander = Callable[[str], str]


def make_expander(env: Mapping[str, str], escape: str = "\\") -> Expander:
    """A single-word expander over ``env`` (raises ShellLexError)."""
    lexer = ShellLexer(escape)

    def expand(word: str) -> str:
        return lexer.process_word(word, env)

    return expand


def expand_word(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Expand one word (quotes removed, escapes resolved, ``$VAR`` substituted)."""
    return ShellLexer(escape).process_word(word, env)


def expand_ports(cmd: ExposeCommand, env: Mapping[str, str], escape: str = "\\") -> tuple[str, ...]:
    """EXPOSE's ports as the builder reads them: each word expanded and re-split."""
    lexer = ShellLexer(escape)
    out: list[str] = []
    try:
        for p in cmd.ports:
            out += lexer.process_words(p, env)
    except ShellLexError as exc:
        raise _error(cmd, str(exc)) from None
    return tuple(out)


def _error(cmd: Command, message: str, hint: str | None = None) -> DockerfileError:
    return DockerfileError(message, lines=cmd.lines, hint=hint, section="expand")


def expand_command(cmd: Command, env: Mapping[str, str], escape: str = "\\") -> Command:
    """``cmd`` with its expandable words expanded over ``env``.

    Raises DockerfileError (section ``expand``) on a bad substitution, a
    ``${V:?msg}`` of an unset variable, or an invalid RUN mount."""
    lexer = ShellLexer(escape)
    raw = ShellLexer("\\", skip_process_quotes=True)

    def ex(word: str) -> str:
        return lexer.process_word(word, env)

    try:
        return _expand(cmd, ex, lambda w: raw.process_word(w, env))
    except ShellLexError as exc:
        raise _error(cmd, str(exc)) from None
    except InstructionError as exc:
        raise _error(cmd, exc.message, exc.hint) from None


def _kv(items: tuple[KeyValue, ...], ex: Expander) -> tuple[KeyValue, ...]:
    return tuple(KeyValue(ex(kv.key), ex(kv.value), kv.no_delim) for kv in items)


def _contents(items: tuple[SourceContent, ...], raw: Expander) -> tuple[SourceContent, ...]:
    return tuple(replace(c, data=raw(c.data)) if c.expand else c for c in items)


def _expand(cmd: Command, ex: Expander, raw: Expander) -> Command:
    rep = replace
    if isinstance(cmd, EnvCommand):
        return rep(cmd, env=_kv(cmd.env, ex))
    if isinstance(cmd, LabelCommand):
        return rep(cmd, labels=_kv(cmd.labels, ex))
    if isinstance(cmd, ArgCommand):
        return rep(
            cmd,
            args=tuple(
                ArgSpec(ex(a.key), None if a.value is None else ex(a.value), a.comment)
                for a in cmd.args
            ),
        )
    if isinstance(cmd, CopyCommand):
        chown = ex(cmd.chown)
        chmod = ex(cmd.chmod)
        srcs = tuple(ex(s) for s in cmd.sources)
        dest = ex(cmd.dest)
        return rep(
            cmd, chown=chown, chmod=chmod, sources=srcs, dest=dest,
            contents=_contents(cmd.contents, raw),
        )  # fmt: skip
    if isinstance(cmd, AddCommand):
        chown = ex(cmd.chown)
        chmod = ex(cmd.chmod)
        checksum = ex(cmd.checksum)
        srcs = tuple(ex(s) for s in cmd.sources)
        dest = ex(cmd.dest)
        return rep(
            cmd, chown=chown, chmod=chmod, checksum=checksum, sources=srcs, dest=dest,
            contents=_contents(cmd.contents, raw),
        )  # fmt: skip
    if isinstance(cmd, WorkdirCommand):
        return rep(cmd, path=ex(cmd.path))
    if isinstance(cmd, UserCommand):
        return rep(cmd, user=ex(cmd.user))
    if isinstance(cmd, VolumeCommand):
        return rep(cmd, volumes=tuple(ex(v) for v in cmd.volumes))
    if isinstance(cmd, StopSignalCommand):
        return rep(cmd, signal=ex(cmd.signal))
    if isinstance(cmd, RunCommand):
        mounts = []
        for spec in cmd.mount_specs:
            m = parse_mount(spec, ex)
            assert m is not None
            mounts.append(m)
        return rep(cmd, mounts=tuple(mounts))
    return cmd
