"""``mason.structs``: msgspec structs with what ``dataclasses.field(repr=False)`` and
``field(compare=False)`` said, and msgspec imported without ``typing_extensions``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mason.solver.keys import CacheKey, DeferredKey
from mason.structs import Struct, eq_without, field, replace, repr_without


class _Login(Struct, frozen=True):
    user: str
    password: str = ""
    hook: object = None
    tags: tuple[str, ...] = ()

    __repr__ = repr_without("password")
    __eq__, __hash__ = eq_without("hook")


class _Other(Struct, frozen=True):
    user: str
    password: str = ""
    hook: object = None
    tags: tuple[str, ...] = ()


class _Box(Struct):
    items: list[int] = field(default_factory=list)


def test_repr_without_leaves_the_hidden_field_out() -> None:
    text = repr(_Login("ann", "s3cret", tags=("a",)))
    assert "s3cret" not in text and "password" not in text
    assert text == "_Login(user='ann', hook=None, tags=('a',))"


def test_eq_without_ignores_the_field_and_keeps_type_and_the_others() -> None:
    a, b = _Login("ann", "x", hook=len), _Login("ann", "x", hook=print)
    assert a == b and hash(a) == hash(b)
    assert a != _Login("ann", "y", hook=len)
    assert a != _Other("ann", "x", hook=len)  # another type, equal fields: not equal
    assert len({a, b, _Login("bob")}) == 2


def test_structs_keep_dataclass_semantics() -> None:
    login = _Login("ann")
    with pytest.raises(AttributeError):
        login.user = "bob"  # type: ignore[misc]
    assert replace(login, user="bob") == _Login("bob")
    first, second = _Box(), _Box()
    first.items.append(1)
    assert second.items == []  # default_factory: one list each
    with pytest.raises(TypeError):
        hash(first)  # mutable with equality: unhashable, as a dataclass


def test_a_deferred_key_makes_its_preimage_when_first_read() -> None:
    made: list[int] = []

    def make() -> CacheKey:
        made.append(1)
        return CacheKey("sha256:aa", b'{"v":1}', (), "content")  # type: ignore[arg-type]

    key = DeferredKey.of("sha256:aa", (), make)  # type: ignore[arg-type]
    assert made == [] and key.digest == "sha256:aa"
    assert key.preimage == b'{"v":1}' and key.content == "content" and made == [1]
    assert key.preimage == b'{"v":1}' and made == [1]  # made once
    assert "preimage" not in repr(key) and "_make" not in repr(key)
    assert key == DeferredKey.of("sha256:aa", (), make)  # type: ignore[arg-type]


def test_msgspec_is_imported_without_typing_extensions() -> None:
    code = "import sys, mason.structs; print(sorted({'typing_extensions', 'inspect'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_msgspec_loads_its_core_only_and_is_whole_when_asked() -> None:
    """mason.structs loads msgspec's C core without the package's __init__ (its JSON, YAML,
    schema and inspect modules); the package is whole for whoever asks it for more."""
    code = (
        "import sys, mason.structs\n"
        "print(sorted(m for m in sys.modules if m.startswith('msgspec.')))\n"
        "import msgspec\n"
        "from msgspec import Meta\n"
        "print(msgspec.json.decode(msgspec.json.encode({'a': [1]})), Meta.__module__)\n"
        "print(msgspec.Struct is mason.structs.Struct, msgspec.structs.replace is mason.structs.replace)\n"
        "print(sorted({'msgspec.inspect', 'msgspec.yaml'} - set(sys.modules)))\n"
        "try:\n"
        "    msgspec.no_such_name\n"
        "except AttributeError as exc:\n"
        "    print('AttributeError', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "['msgspec._core', 'msgspec._utils']"
    assert lines[1] == "{'a': [1]} msgspec"
    assert lines[2] == "True True"
    assert lines[3] == "[]"
    assert lines[4] == "AttributeError module 'msgspec' has no attribute 'no_such_name'"


def test_field_makes_msgspec_fields() -> None:
    box = _Box()
    box.items.append(1)
    assert _Box().items == [] and box.items == [1]  # a factory per instance

    class Named(Struct, frozen=True):
        value: int = field(default=3, name="Value")

    assert Named().value == 3 and Named.__struct_encode_fields__ == ("Value",)


def test_msgspec_is_completed_once_for_threads_asking_at_once() -> None:
    code = (
        "import sys, threading, mason.structs\n"
        "import msgspec\n"
        "got, start = [], threading.Barrier(8)\n"
        "def ask():\n"
        "    start.wait()\n"
        "    got.append((msgspec.json.encode([1]), msgspec.Meta.__name__))\n"
        "threads = [threading.Thread(target=ask) for _ in range(8)]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
        "print(len(got), sorted(set(got)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "8 [(b'[1]', 'Meta')]"
