"""Golden tests: mason's reading of every case equals BuildKit v0.11.6's
``expected.json`` on the fields the corpus README lists under "What to compare"."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.support.testdata import TESTDATA

from mason.cli.main import main
from mason.dockerfile import render_debug

GOLDEN = TESTDATA / "dockerfile"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()) if GOLDEN.is_dir() else []

NODE_FIELDS = (
    "value", "original", "startLine", "endLine", "flags", "next", "attributes", "heredocs",
    "prevComment",
)  # fmt: skip


def test_golden_data_present() -> None:
    assert GOLDEN.is_dir(), f"golden data missing: {GOLDEN}"
    assert len(CASES) >= 100


def _nodes(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in children:
        n = {k: c[k] for k in NODE_FIELDS}
        n["value"] = n["value"].lower()  # compared case-insensitively
        n["next"] = [
            {"value": x["value"], "children": _nodes(x["children"])} if isinstance(x, dict) else x
            for x in n["next"]
        ]
        out.append(n)
    return out


def _compared(doc: dict[str, Any]) -> dict[str, Any]:
    parse = doc["parse"]
    return {
        "detectSyntax": doc["directives"]["detectSyntax"],
        "parse.error": parse["error"],
        "parse.escapeToken": parse["escapeToken"],
        "parse.warnings": parse["warnings"],
        "parse.children": _nodes(parse["children"]),
        "instructions": doc["instructions"],
        "expandedWithTestEnv": doc["expandedWithTestEnv"],
    }


@pytest.mark.parametrize("case", CASES)
def test_golden_case(case: str) -> None:
    expected = json.loads((GOLDEN / case / "expected.json").read_text(encoding="utf-8"))
    got = render_debug((GOLDEN / case / "Dockerfile").read_bytes())
    exp, act = _compared(expected), _compared(got)
    for key in exp:
        assert act[key] == exp[key], f"{case}: {key} differs"
    if case.startswith("err_"):
        sections = [s for s in ("parse", "instructions", "expandedWithTestEnv") if (got[s] or {}).get("error")]
        assert sections, f"{case}: no error reported"


def test_cli_prints_the_golden_shape(capsys: pytest.CaptureFixture[str]) -> None:
    path = GOLDEN / "run_mount_cache" / "Dockerfile"
    assert main(["debug", "parse-dockerfile", str(path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    expected = json.loads((GOLDEN / "run_mount_cache" / "expected.json").read_text(encoding="utf-8"))
    assert _compared(doc) == _compared(expected)


def test_cli_exits_2_on_dockerfile_errors(capsys: pytest.CaptureFixture[str]) -> None:
    path = GOLDEN / "err_unknown_instruction_suggestion" / "Dockerfile"
    assert main(["debug", "parse-dockerfile", str(path)]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["instructions"]["error"]["lines"] == [2]
    assert "did you mean RUN?" in captured.err
    assert ":2" in captured.err


def test_cli_exits_2_on_expansion_errors(capsys: pytest.CaptureFixture[str]) -> None:
    path = GOLDEN / "err_expansion_bad_substitution" / "Dockerfile"
    assert main(["debug", "parse-dockerfile", str(path)]) == 2
    assert "missing ':' in substitution" in capsys.readouterr().err
