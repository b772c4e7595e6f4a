"""Start-up (issue 14): dataclass methods and regexes compiled once per installation, not per run.

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

Two more costs of every start go the same way. Regular expressions: ``re._compiler.compile``
is replaced (by ``install()``: ``re`` is loaded by then) with the same function that keeps
what the parse and code generation give (flags, code, groups, group names) in the table,
keyed by the pattern, its type, the flags and the regex engine's magic number, and hands it
to ``_sre.compile`` as the original does: ~250 patterns, ~0.3 ms each, compiled at import
(from the first dataclass on: that loads the table; argparse's few patterns before it do not).
A dataclass's generated docstring (``Name(signature)``, from ``inspect.signature``: a quarter
of the time creating a dataclass takes) is made when first read (``_LazyDoc``), not at import.
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


def _entry(text: bytes) -> tuple[bytes, Any]:
    """The table's key for ``text`` and its unmarshalled entry (None when absent or bad)."""
    global _loaded
    import hashlib

    if not _loaded and _path is not None:
        _loaded = True
        _table.update(_load(_path))
    key = hashlib.blake2b(text, digest_size=16).digest()
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


def _code(txt: str) -> CodeType:
    key, code = _entry(b"dc2 " + txt.encode())
    if type(code) is CodeType:
        return code
    # not this module's `from __future__ import annotations`: the methods' annotations are
    # the types, as dataclasses' own exec makes them (entries before "dc2" had strings)
    code = compile(txt, "<string>", "exec", dont_inherit=True)
    _store(key, code)
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
    _patch_doc(dataclasses)


class _LazyDoc:
    """The ``__doc__`` dataclasses gives a class without a docstring (its name and
    ``inspect.signature``, a quarter of the time a dataclass takes to create), made when
    first read (a class's ``__doc__`` honours a descriptor), then kept."""

    def __get__(self, obj: object, owner: type) -> str:
        import inspect

        try:
            text = str(inspect.signature(owner)).replace(" -> None", "")
        except (TypeError, ValueError):  # as dataclasses: no signature, no text
            text = ""
        owner.__doc__ = doc = owner.__name__ + text
        return doc


class _NoSignature:
    """Stands in for ``inspect`` inside dataclasses, which calls only ``signature``, for the
    class docstring: raising as for a class without one leaves the name, ``_LazyDoc`` the rest."""

    @staticmethod
    def signature(obj: object) -> Any:
        raise ValueError("computed when __doc__ is first read")


def _patch_doc(dataclasses: ModuleType) -> None:
    real = getattr(dataclasses, "_process_class", None)
    if not callable(real) or getattr(dataclasses, "inspect", None) is None:
        return

    def _process_class(cls: type, *args: Any) -> type:
        documented = bool(cls.__doc__)
        cls = real(cls, *args)
        if not documented:
            cls.__doc__ = _LazyDoc()  # type: ignore[assignment]
        return cls

    dataclasses.inspect = _NoSignature  # type: ignore[attr-defined]
    dataclasses._process_class = _process_class  # type: ignore[attr-defined]


def _patch_re() -> None:
    """Replace ``re._compiler.compile`` with the same function that takes the compiled form (the
    parse and code generation: ~0.3 ms a pattern, ~250 patterns in a build) from the table."""
    import re

    compiler = re._compiler  # type: ignore[attr-defined]
    parser, sre, real = compiler._parser, compiler._sre, compiler.compile
    debug = compiler.SRE_FLAG_DEBUG
    magic = str(compiler.MAGIC).encode()

    def compile(p: Any, flags: int = 0) -> Any:
        # CPython 3.11's re._compiler.compile, line for line, but where the code comes from;
        # until the first dataclass loads the table, as re does (the few patterns argparse
        # compiles do not load it before `mason build`'s first request)
        if not _loaded or not isinstance(p, str | bytes) or flags & debug:
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
    _patch_re()
    loaded = sys.modules.get("dataclasses")
    if loaded is not None:
        _patch(loaded)
    else:
        sys.meta_path.insert(0, _PatchOnImport)
