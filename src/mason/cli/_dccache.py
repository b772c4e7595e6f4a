"""Start-up (issue 14): regular expressions compiled once per installation, not per run.

``re._compiler.compile`` is replaced (by ``install()``, called first thing by
``mason.cli.main.main``: ``re`` is loaded by then) with the same function that keeps what the
parse and code generation give (flags, code, groups, group names) in a table, keyed by the
pattern, its type, the flags and the regex engine's magic number, and hands it to
``_sre.compile`` as the original does: ~250 patterns, ~0.3 ms each, compiled at import.
The table is kept as Python keeps bytecode: beside this module's ``.pyc``
(``importlib.util.cache_from_source``, so ``-X pycache_prefix`` is honoured), marked with
the interpreter's bytecode magic number, loaded at the first pattern compiled after
``install()``, written atomically at exit when this run compiled something new and Python
writes bytecode (not under ``-B`` or ``PYTHONDONTWRITEBYTECODE``), and ignored when
unreadable, corrupt or from another Python. An entry holds the marshalled result, unmarshalled
only when used.

(The module's name is from its first half, gone: it also kept dataclasses' generated methods
compiled. mason's records are msgspec structs now, ``mason.structs``, which need no such help.)
"""

from __future__ import annotations

import atexit
import contextlib
import marshal
import os
import sys

TYPE_CHECKING = False  # typing is not imported at start-up; mypy takes this as true
if TYPE_CHECKING:
    from typing import Any

__all__ = ["compiled", "install"]

#: Patterns compiled by this process (not found in the table): a test reads it.
compiled = 0
#: Entries kept at most: beyond it a save keeps only what this run used (old versions' go).
_MAX_ENTRIES = 4096
_table: dict[bytes, bytes] = {}
_used: set[bytes] = set()
_installed = False
_path: str | None = None
_loaded = False


def _cache_path() -> str | None:
    from importlib._bootstrap_external import cache_from_source  # what importlib.util has

    try:
        return cache_from_source(__file__)[: -len(".pyc")] + ".regexes"
    except (NotImplementedError, ValueError):
        return None


def _magic() -> bytes:
    from importlib._bootstrap_external import MAGIC_NUMBER

    return MAGIC_NUMBER


def _load(path: str) -> dict[bytes, bytes]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return {}
    magic = _magic()
    if not data.startswith(magic):
        return {}
    try:
        table = marshal.loads(data[len(magic) :])
    except (EOFError, ValueError, TypeError):
        return {}
    if not isinstance(table, dict):
        return {}
    return {k: v for k, v in table.items() if type(k) is bytes and type(v) is bytes}


def _save(path: str) -> None:
    """Write the table when this run added to it (atomically: temp file, rename)."""
    if not compiled or sys.dont_write_bytecode:
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            kept = _table if len(_table) <= _MAX_ENTRIES else {k: _table[k] for k in _used}
            f.write(_magic() + marshal.dumps(dict(kept)))
        os.replace(tmp, path)
    except OSError:  # a read-only installation: the next run compiles again, as without it
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _entry(text: bytes) -> tuple[bytes, Any]:
    """The table's key for ``text`` and its unmarshalled entry (None when absent or bad)."""
    global _loaded
    # hashlib's own blake2b, without hashlib (it loads OpenSSL): argparse's patterns come
    # before `mason build`'s first request
    from _blake2 import blake2b

    if not _loaded and _path is not None:
        _loaded = True
        _table.update(_load(_path))
    key = blake2b(text, digest_size=16).digest()
    _used.add(key)
    data = _table.get(key)
    if data is not None:
        with contextlib.suppress(EOFError, ValueError, TypeError):
            return key, marshal.loads(data)
    return key, None


def _store(key: bytes, value: Any) -> None:
    global compiled
    _table[key] = marshal.dumps(value)
    compiled += 1


def _patch_re() -> None:
    """Replace ``re._compiler.compile`` with the same function that takes the compiled form (the
    parse and code generation: ~0.3 ms a pattern, ~250 patterns in a build) from the table."""
    import re

    compiler = re._compiler  # type: ignore[attr-defined]
    parser, sre, real = compiler._parser, compiler._sre, compiler.compile
    debug = compiler.SRE_FLAG_DEBUG
    magic = str(compiler.MAGIC).encode()

    def compile(p: Any, flags: int = 0) -> Any:
        # CPython 3.11's re._compiler.compile, line for line, but where the code comes from
        if not isinstance(p, str | bytes) or flags & debug:
            return real(p, flags)
        raw = p if isinstance(p, bytes) else p.encode("utf-8", "surrogatepass")
        key, args = _entry(b"re %s %d %d " % (magic, isinstance(p, bytes), flags) + raw)
        if type(args) is not tuple or len(args) != 5:
            parsed = parser.parse(p, flags)
            groupindex = parsed.state.groupdict
            indexgroup: list[str | None] = [None] * parsed.state.groups
            for k, i in groupindex.items():
                indexgroup[i] = k
            code = [int(c) for c in compiler._code(parsed, flags)]  # opcodes: int subclasses
            args = (int(flags | parsed.state.flags), code, parsed.state.groups - 1)
            args += (dict(groupindex), tuple(indexgroup))
            _store(key, args)
        return sre.compile(p, *args)

    compiler.compile = compile


def install() -> None:
    """Use the table for every pattern compiled from now on (once; a no-op on a Python
    other than 3.11 or without a cache path)."""
    global _installed, _path
    if _installed or sys.version_info[:2] != (3, 11):
        return
    _path = _cache_path()
    if _path is None:
        return
    _installed = True
    atexit.register(_save, _path)
    _patch_re()
