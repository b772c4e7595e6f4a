"""``mason.cli._dccache`` (issue 14): regexes compiled once and kept beside the bytecode; the
patterns behave as without it (a pattern's code is re's own), a bad table is ignored, ``-B``
writes nothing. Each case runs a fresh interpreter with its own ``-X pycache_prefix`` (a temp
directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_PROBE = """
import sys
if sys.argv[1] != "stock":
    import re
    _REAL = re._compiler.compile
    from mason.cli import _dccache
    _dccache.install()
    print("hashlib loaded by install:", "hashlib" in sys.modules)
import re
patterns = [(r"(?P<name>[a-z]+)-(\\d+)", 0), (rb"^\\x00(?i:ab)+$", 0), ("(?x) a # c\\n b+", re.I | re.M),
            ("[\\u00e9-\\u00ff]+", 0), ("", 0), (r"(a)(b)?(?P<z>c)", re.S)]
compiled = [re.compile(p, f) for p, f in patterns]
print([(c.pattern, c.flags, c.groups, dict(c.groupindex)) for c in compiled])
print([bool(c.search(s)) for c in compiled for s in ("ab-12", b"\\x00AbaB", "AbbB", "\\u00e9t\\u00e9", "ac")
       if isinstance(s, bytes) == isinstance(c.pattern, bytes)])
if sys.argv[1] != "stock":
    print("same code as re's own:", all(c == _REAL(p, f) for c, (p, f) in zip(compiled, patterns)))
    print("compiled", _dccache.compiled)
"""


def _run(tmp: Path, mode: str, *flags: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run(
        [sys.executable, *flags, "-X", f"pycache_prefix={tmp / 'pyc'}", "-c", _PROBE, mode],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    return proc.stdout.splitlines()


def _table(tmp: Path) -> list[Path]:
    return list((tmp / "pyc").rglob("_dccache.*.regexes"))


def test_patterns_are_the_same_and_the_second_run_compiles_nothing(tmp_path: Path) -> None:
    stock = _run(tmp_path, "stock")
    first = _run(tmp_path, "install")
    # the table's digest is hashlib's blake2b, taken without importing hashlib (OpenSSL)
    assert first[0] == "hashlib loaded by install: False"
    # the same regexes, and re's own code for each
    assert first[1:3] == stock and first[3] == "same code as re's own: True"
    assert int(first[4].split()[1]) > 0
    assert len(_table(tmp_path)) == 1
    second = _run(tmp_path, "install")
    assert second[1:4] == first[1:4] and second[4] == "compiled 0"


def test_a_corrupt_table_is_ignored_and_rewritten(tmp_path: Path) -> None:
    stock = _run(tmp_path, "stock")
    _run(tmp_path, "install")
    (table,) = _table(tmp_path)
    table.write_bytes(table.read_bytes()[:4] + b"\x00garbage")
    again = _run(tmp_path, "install")
    assert again[1:3] == stock and again[4] != "compiled 0"
    assert _run(tmp_path, "install")[4] == "compiled 0"


def test_no_bytecode_writing_means_no_table(tmp_path: Path) -> None:
    out = _run(tmp_path, "install", "-B")
    assert out[1:3] == _run(tmp_path, "stock", "-B")
    assert _table(tmp_path) == []
