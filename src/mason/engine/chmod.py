"""``COPY/ADD --chmod``: an octal mode, or a symbolic one (``u+x``, ``go=rx``, ``a-w,u+s``)
applied to each copied entry's own mode, as BuildKit v0.32.2 does.

The symbolic grammar and its application are a port of ``github.com/tonistiigi/dchapes-mode``
(BSD's ``setmode(3)``), the package BuildKit's frontend validates with and its file op
applies: clauses ``[ugoa]*[-+=]([rwxXst]*|[ugo])...`` separated by commas, a missing *who*
meaning every bit (BuildKit parses with umask 0), ``X`` adding execute only to directories and
entries that already have an execute bit.
"""

from __future__ import annotations

from mason.structs import Struct

__all__ = ["ChmodError", "ModeSet", "parse_chmod"]

_UID, _GID, _TXT = 0o4000, 0o2000, 0o1000
_RWXU, _RWXG, _RWXO = 0o700, 0o070, 0o007
_R, _W, _X = 0o444, 0o222, 0o111
_STANDARD = _UID | _GID | _RWXU | _RWXG | _RWXO
_CLEAR, _SET, _GBITS, _OBITS, _UBITS = 1, 2, 4, 8, 16


class ChmodError(ValueError):
    """An invalid ``--chmod`` value; the message is BuildKit's."""


class _Cmd(Struct, frozen=True):
    cmd: str
    bits: int
    cmd2: int = 0


class ModeSet(Struct, frozen=True):
    """A parsed ``--chmod``: ``octal`` for a numeric mode, else symbolic commands."""

    octal: int | None
    cmds: tuple[_Cmd, ...] = ()

    def apply(self, mode: int, is_dir: bool) -> int:
        """The permission bits (with setuid/setgid/sticky) ``mode`` becomes."""
        if self.octal is not None:
            return self.octal
        old = mode & 0o7777
        new = old
        for c in self.cmds:
            if c.cmd in "ugo":
                shift = {"u": 6, "g": 3, "o": 0}[c.cmd]
                new = _copy_bits(c, new, (new >> shift) & 0o7)
            elif c.cmd == "+":
                new |= c.bits
            elif c.cmd == "-":
                new &= ~c.bits
            elif c.cmd == "X" and (old & _X or is_dir):
                new |= c.bits
        return new & 0o7777


def _copy_bits(c: _Cmd, new: int, value: int) -> int:
    if c.cmd2 & _CLEAR:
        clr = _RWXO if c.cmd2 & _SET else value
        for flag, shift in ((_UBITS, 6), (_GBITS, 3), (_OBITS, 0)):
            if c.cmd2 & flag:
                new &= ~((clr << shift) & c.bits)
    if c.cmd2 & _SET:
        for flag, shift in ((_UBITS, 6), (_GBITS, 3), (_OBITS, 0)):
            if c.cmd2 & flag:
                new |= (value << shift) & c.bits
    return new


def parse_chmod(text: str) -> ModeSet:
    """``--chmod``'s value as BuildKit reads it: octal up to 07777, else symbolic.

    Raises ChmodError with BuildKit's message."""
    non_octal = (
        f"invalid chmod parameter: '{text}'. it should be octal string and between 0 and 07777"
    )
    try:
        value = int(text, 8) if text and text.isascii() and text.isdigit() else None
    except ValueError:
        value = None
    if value is not None:
        if value > 0o7777:
            raise ChmodError(non_octal)
        return ModeSet(value)
    if text[:1].isdigit():  # numeric-looking but not octal: BuildKit keeps its old message
        raise ChmodError(non_octal)
    return ModeSet(None, _compress(_parse_symbolic(text)))


def _parse_symbolic(s: str) -> list[_Cmd]:
    if not s:
        raise ChmodError("invalid syntax")
    cmds: list[_Cmd] = []
    mask = 0xFFFF  # umask 0
    i = 0
    while True:
        who = 0
        while i < len(s) and s[i] in "augo":
            who |= {"a": _STANDARD, "u": _UID | _RWXU, "g": _GID | _RWXG, "o": _RWXO}[s[i]]
            i += 1
        if i >= len(s):
            raise ChmodError("invalid syntax")
        while True:  # one or more operations on this who
            op = s[i]
            i += 1
            if op not in "+-=":
                raise ChmodError("invalid syntax")
            equal_done = False
            who &= ~_TXT
            perm = perm_x = 0
            while True:
                b = s[i] if i < len(s) else ""
                if b and b in "rstwXx":
                    who, perm, perm_x = _perm_char(b, op, who, perm, perm_x)
                elif b in ("u", "g", "o"):
                    if perm:
                        _addcmd(cmds, op, who, perm, mask)
                        perm = 0
                    if op == "=":
                        equal_done = True
                    if perm_x:
                        _addcmd(cmds, "X", who, perm_x, mask)
                        perm_x = 0
                    _addcmd(cmds, b, who, ord(op), mask)
                else:
                    if perm or (op == "=" and not equal_done):
                        if op == "=":
                            equal_done = True
                        _addcmd(cmds, op, who, perm, mask)
                    if perm_x:
                        _addcmd(cmds, "X", who, perm_x, mask)
                    break
                i += 1
            if i >= len(s):
                return cmds
            if s[i] == ",":
                i += 1
                break


def _perm_char(b: str, op: str, who: int, perm: int, perm_x: int) -> tuple[int, int, int]:
    """One of ``rstwXx`` after an operator: the new (who, perm, perm_x)."""
    if b == "r":
        perm |= _R
    elif b in "st":
        if who == 0 or who & ~_RWXO:
            if b == "s":
                perm |= _UID | _GID
            else:
                who |= _TXT
                perm |= _TXT
    elif b == "w":
        perm |= _W
    elif b == "X" and op != "-":
        perm_x = _X
    else:  # x, or X with "-"
        perm |= _X
    return who, perm, perm_x


def _addcmd(cmds: list[_Cmd], op: str, who: int, oparg: int, mask: int) -> None:
    if op == "=":
        cmds.append(_Cmd("-", who if who else _STANDARD))
        op = "+"
    if op in "+-X":
        cmds.append(_Cmd(op, (who & oparg) if who else (mask & oparg)))
        return
    cmd2 = 0
    if who:
        cmd2 |= _UBITS if who & 0o400 else 0
        cmd2 |= _GBITS if who & 0o040 else 0
        cmd2 |= _OBITS if who & 0o004 else 0
        bits = 0xFFFF
    else:
        cmd2 = _UBITS | _GBITS | _OBITS
        bits = mask
    cmd2 |= {"+": _SET, "-": _CLEAR, "=": _SET | _CLEAR}[chr(oparg)]
    cmds.append(_Cmd(op, bits, cmd2))


def _compress(cmds: list[_Cmd]) -> tuple[_Cmd, ...]:
    """setmode's compress: runs of +, - and X become at most one of each (same result)."""
    out: list[_Cmd] = []
    i = 0
    while i < len(cmds):
        if cmds[i].cmd not in "+-X":
            out.append(cmds[i])
            i += 1
            continue
        setbits = clrbits = xbits = 0
        while i < len(cmds) and cmds[i].cmd in "+-X":
            c = cmds[i]
            if c.cmd == "-":
                clrbits |= c.bits
                setbits &= ~c.bits
                xbits &= ~c.bits
            elif c.cmd == "+":
                setbits |= c.bits
                clrbits &= ~c.bits
                xbits &= ~c.bits
            else:
                xbits |= c.bits & ~setbits
            i += 1
        out.extend(_Cmd(k, v) for k, v in (("-", clrbits), ("+", setbits), ("X", xbits)) if v)
    return tuple(out)
