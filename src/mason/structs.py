"""mason's records: ``msgspec.Struct`` classes, and the one place that imports msgspec.

Start-up (issue 14): creating a struct class costs ~0.04 ms, a dataclass ~0.5 ms (and
importing ``dataclasses`` pulls in ``inspect``, ``ast``, ``dis``); a build creates ~200 of
them. Modules take ``Struct``, ``field``, ``replace``, ``asdict`` and ``force_setattr`` from
here. They behave as their dataclass counterparts do, except that ``asdict`` is not
recursive and a frozen struct's ``__post_init__`` sets a field with ``force_setattr``.

msgspec is imported here with ``typing_extensions`` hidden, when nothing has imported it yet:
msgspec then takes ``get_type_hints`` from ``typing`` (its own fallback, the same function on
Python 3.11; mason never has msgspec encode or decode types) instead of importing
``typing_extensions``, which imports ``inspect`` (~10 ms of every start). And only its C core
is loaded: the package's ``__init__`` imports its JSON, MessagePack, TOML, YAML, JSON schema
and ``inspect`` modules too (~3 ms of every start, none of which mason uses). The package module
is made from its spec without running that ``__init__``, and runs it, once, when anything asks
the package for a name it does not hold yet (``_Package``): to its other users it is the
whole package.

A struct's ``__repr__``, ``__eq__`` and ``__hash__`` cover every field; a class with a field
that must not be shown (a secret, a lock) or compared (a callable, a cache) -- what
``dataclasses.field(repr=False)`` and ``field(compare=False)`` said -- says so in its body::

    __repr__ = repr_without("password")
    __eq__, __hash__ = eq_without("provider")
"""

from __future__ import annotations

import contextlib
import sys
import threading
import types

TYPE_CHECKING = False  # typing is not imported at start-up; mypy takes this as true
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any


@contextlib.contextmanager
def _typing_extensions_hidden() -> Iterator[None]:
    hide = "typing_extensions" not in sys.modules
    if hide:
        sys.modules["typing_extensions"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if hide and sys.modules.get("typing_extensions", 0) is None:
            del sys.modules["typing_extensions"]


#: one completion of the package, whichever threads ask (re-entered by the imports it makes)
_COMPLETING = threading.RLock()


class _Package(types.ModuleType):
    """The msgspec package before its ``__init__`` ran: the first name asked of it that it
    does not hold runs it (in this module's namespace, as an import would) and is answered."""

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("__"):
            with _COMPLETING:
                if not self.__dict__.get("_mason_completed"):
                    self._mason_completed = True
                    spec = self.__spec__
                    assert spec is not None and spec.loader is not None
                    with _typing_extensions_hidden():
                        spec.loader.exec_module(self)
            if name in self.__dict__:
                return self.__dict__[name]
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")


def _import_msgspec_core() -> None:
    """msgspec's C core, in a package module whose ``__init__`` runs when first needed."""
    import importlib
    import importlib.util

    if "msgspec" not in sys.modules:
        spec = importlib.util.find_spec("msgspec")
        if spec is not None and spec.loader is not None:
            package = importlib.util.module_from_spec(spec)
            package.__class__ = _Package
            sys.modules["msgspec"] = package
    with _typing_extensions_hidden():
        importlib.import_module("msgspec._core")


_import_msgspec_core()

if TYPE_CHECKING:
    from msgspec import Struct, field
    from msgspec.structs import asdict, force_setattr, replace
else:
    from msgspec._core import NODEFAULT as _NODEFAULT
    from msgspec._core import Field as _Field
    from msgspec._core import Struct, asdict, force_setattr, replace

    def field(*, default=_NODEFAULT, default_factory=_NODEFAULT, name=None):
        """``msgspec.field`` (its package's own wrapper of the core's ``Field``)."""
        return _Field(default=default, default_factory=default_factory, name=name)


__all__ = ["Struct", "asdict", "eq_without", "field", "force_setattr", "replace", "repr_without"]


def repr_without(*hidden: str) -> Callable[[Any], str]:
    """A ``__repr__`` of the struct's fields but ``hidden``, as a dataclass writes it."""

    def __repr__(self: Any) -> str:
        shown = [f"{n}={getattr(self, n)!r}" for n in self.__struct_fields__ if n not in hidden]
        return f"{type(self).__qualname__}({', '.join(shown)})"

    return __repr__


def eq_without(*ignored: str) -> tuple[Callable[[Any, object], bool], Callable[[Any], int]]:
    """``__eq__`` and ``__hash__`` over the struct's fields but ``ignored``: what a frozen
    dataclass had (equal when of the same type with equal compared fields)."""

    def compared(obj: Any) -> tuple[Any, ...]:
        return tuple(getattr(obj, n) for n in obj.__struct_fields__ if n not in ignored)

    def __eq__(self: Any, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return compared(self) == compared(other)

    def __hash__(self: Any) -> int:
        return hash(compared(self))

    return __eq__, __hash__
