"""The BuildKit v0.11.6 corpus (``tests/data/dockerfile``), kept for the cases
whose behaviour did not change in v0.32.2 (the cases that changed were removed;
``tests/data/dockerfile-v0.32.2`` holds all 110 inputs with today's answers).

mason prints v0.32.2's structures, so its output is first brought back to
v0.11.6's shape: ENV/LABEL AST nodes as pairs, no ``NoDelim``, ``security``,
``ExcludePatterns``, ``Parents``, ``Unpack``, mount ``Env`` or
``StartInterval``, ``DocComment`` named ``Comment``, an absent
``--keep-git-dir`` as false. Everything else must be equal."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.support.testdata import TESTDATA

from mason.dockerfile import render_debug

GOLDEN = TESTDATA / "dockerfile"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()) if GOLDEN.is_dir() else []

_NEW_FIELDS = frozenset({"NoDelim", "security", "ExcludePatterns", "Parents", "Unpack"})


def test_corpus_present() -> None:
    assert len(CASES) >= 90, f"v0.11.6 corpus missing or cut too much: {GOLDEN}"


def _old_command(c: dict[str, Any]) -> dict[str, Any]:
    c = {k: v for k, v in c.items() if k not in _NEW_FIELDS}
    if "KeepGitDir" in c:
        c["KeepGitDir"] = bool(c["KeepGitDir"])
    for key in ("Env", "Labels"):
        if c.get(key):
            c[key] = [{"Key": kv["Key"], "Value": kv["Value"]} for kv in c[key]]
    if c.get("Args"):
        c["Args"] = [
            {"Key": a["Key"], "Value": a["Value"], "Comment": a["DocComment"]} for a in c["Args"]
        ]
    if c.get("mounts"):
        c["mounts"] = [{k: v for k, v in m.items() if k != "Env"} for m in c["mounts"]]
    if c.get("Health"):
        c["Health"] = {k: v for k, v in c["Health"].items() if k != "StartInterval"}
    return c


def _old_node(n: dict[str, Any]) -> dict[str, Any]:
    n = dict(n)
    nxt = n["next"]
    if n["value"].lower() in ("env", "label") and all(isinstance(x, str) for x in nxt):
        nxt = [x for i, x in enumerate(nxt) if i % 3 != 2]  # drop the separators
    n["next"] = [
        {"value": x["value"], "children": [_old_node(c) for c in x["children"]]}
        if isinstance(x, dict)
        else x
        for x in nxt
    ]
    return n


def as_v0116(doc: dict[str, Any]) -> dict[str, Any]:
    """A v0.32.2-shaped document in v0.11.6's shape (see the module docstring)."""
    doc = json.loads(json.dumps(doc))
    doc.pop("buildkitVersion", None)
    if doc["parse"]:
        doc["parse"].pop("dump", None)
        doc["parse"]["children"] = [_old_node(n) for n in doc["parse"]["children"]]
    for sec in ("instructions", "expandedWithTestEnv"):
        s = doc.get(sec)
        if s:
            s["metaArgs"] = [_old_command(c) for c in s["metaArgs"]]
            for st in s["stages"]:
                st["commands"] = [_old_command(c) for c in st["commands"]]
    return doc


@pytest.mark.parametrize("case", CASES)
def test_unchanged_case(case: str) -> None:
    expected = json.loads((GOLDEN / case / "expected.json").read_text(encoding="utf-8"))
    expected.pop("buildkitVersion")
    if expected["parse"]:
        expected["parse"].pop("dump", None)
    got = as_v0116(render_debug((GOLDEN / case / "Dockerfile").read_bytes()))
    for key in expected:
        assert got[key] == expected[key], f"{case}: {key} differs"
