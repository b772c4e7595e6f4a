"""Start-up (issue 14): dataclass methods compiled once per installation, not once per run.

Creating a dataclass compiles the source text of its generated methods (``__init__``,
``__repr__``, ``__eq__``, ``__hash__``, a frozen class's ``__setattr__``/``__delattr__``) on
every import; for mason's ~130 dataclasses that is about a third of the CPU its start-up
imports take. ``install()`` (called first thing by ``mason.cli.main.main``) replaces
CPython 3.11's ``dataclasses._create_fn`` with the same function that looks the text up
in a table of code objects first -- when ``dataclasses`` is imported, by whichever module
first needs it: a command that creates no dataclass (``build --help``) imports neither
``dataclasses`` nor the table. The table is kept as Python keeps bytecode: beside this
module's ``.pyc`` (``importlib.util.cache_from_source``, so ``-X pycache_prefix`` is honoured),
marked with the interpreter's bytecode magic number, written atomically at exit when this run
compiled something new and Python writes bytecode (not under ``-B`` or
``PYTHONDONTWRITEBYTECODE``), and ignored when unreadable, corrupt or from another Python.
An entry is keyed by a 128-bit BLAKE2 digest of the whole text it was compiled from, so a
changed class is a new entry, never a stale one, and holds the marshalled code, unmarshalled
only when used; running a code object compiled from a text is what ``exec(text)`` does.
"""

from __future__ import annotations

import atexit
import contextlib
import marshal
import os
import sys
from types import CodeType, ModuleType

TYPE_CHECKING = False  # typing is not imported at start-up; mypy takes this as true
if TYPE_CHECKING:
    from typing import Any

__all__ = ["compiled", "install"]

#: Texts compiled by this process (not found in the table): a test reads it.
compiled = 0
#: Entries kept at most: beyond it a save keeps only what this run used (old versions' classes go).
_MAX_ENTRIES = 4096
_table: dict[bytes, bytes] = {}
_used: set[bytes] = set()
_installed = False
_path: str | None = None
_loaded = False


def _cache_path() -> str | None:
    from importlib._bootstrap_external import cache_from_source  # what importlib.util has

    try:
        return cache_from_source(__file__)[: -len(".pyc")] + ".dataclasses"
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


def _code(txt: str) -> CodeType:
    global compiled, _loaded
    import hashlib

    if not _loaded and _path is not None:
        _loaded = True
        _table.update(_load(_path))
    key = hashlib.blake2b(txt.encode(), digest_size=16).digest()
    _used.add(key)
    data = _table.get(key)
    if data is not None:
        with contextlib.suppress(EOFError, ValueError, TypeError):
            code = marshal.loads(data)
            if type(code) is CodeType:
                return code
    code = compile(txt, "<string>", "exec")
    _table[key] = marshal.dumps(code)
    compiled += 1
    return code


def _patch(dataclasses: ModuleType) -> None:
    """Replace ``dataclasses._create_fn`` (a no-op if this Python has none)."""
    if not callable(getattr(dataclasses, "_create_fn", None)):
        return
    missing = dataclasses.MISSING

    def _create_fn(
        name: str,
        args: list[str],
        body: list[str],
        *,
        globals: dict[str, Any] | None = None,
        locals: dict[str, Any] | None = None,
        return_type: Any = missing,
    ) -> Any:
        # CPython 3.11's dataclasses._create_fn, line for line, but where the code comes from
        if locals is None:
            locals = {}
        return_annotation = ""
        if return_type is not missing:
            locals["_return_type"] = return_type
            return_annotation = "->_return_type"
        joined = ",".join(args)
        lines = "\n".join(f"  {b}" for b in body)
        txt = f" def {name}({joined}){return_annotation}:\n{lines}"
        local_vars = ", ".join(locals.keys())
        txt = f"def __create_fn__({local_vars}):\n{txt}\n return {name}"
        ns: dict[str, Any] = {}
        exec(_code(txt), globals, ns)
        return ns["__create_fn__"](**locals)

    dataclasses._create_fn = _create_fn  # type: ignore[attr-defined]


class _PatchOnImport:
    """A meta path finder for ``dataclasses`` alone: the stdlib's own spec, whose module is
    patched right after it runs (then this finder leaves ``sys.meta_path``)."""

    @classmethod
    def find_spec(cls, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "dataclasses":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(cls)
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            _patch(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Use the table for every dataclass created from now on (once; a no-op on a Python
    other than 3.11 or without a cache path). ``dataclasses`` is patched now if it is loaded,
    else when it is."""
    global _installed, _path
    if _installed or sys.version_info[:2] != (3, 11):
        return
    _path = _cache_path()
    if _path is None:
        return
    _installed = True
    atexit.register(_save, _path)
    loaded = sys.modules.get("dataclasses")
    if loaded is not None:
        _patch(loaded)
    else:
        sys.meta_path.insert(0, _PatchOnImport)
