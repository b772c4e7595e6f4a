"""Golden tests: mason's reading of every case equals BuildKit v0.32.2's
``expected.json`` (Dockerfile frontend 1.26) on every field: directives, the
AST (its ``dump`` included), typed instructions, expansion, and error messages
with their lines. A failure lists each differing field by its JSON path."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.support.testdata import TESTDATA

from mason.cli.main import main
from mason.dockerfile import render_debug
from mason.dockerfile.render import BUILDKIT_VERSION

GOLDEN = TESTDATA / "dockerfile-v0.32.2"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()) if GOLDEN.is_dir() else []


def test_golden_data_present() -> None:
    assert GOLDEN.is_dir(), f"golden data missing: {GOLDEN}"
    assert len(CASES) == 110


def field_diffs(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Every leaf where ``actual`` differs from ``expected``, as ``path: exp != act``."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[str] = []
        for key in sorted(set(expected) | set(actual), key=str):
            sub = f"{path}.{key}"
            if key not in actual:
                out.append(f"{sub}: missing in mason's output")
            elif key not in expected:
                out.append(f"{sub}: not in BuildKit's output ({json.dumps(actual[key])[:200]})")
            else:
                out += field_diffs(expected[key], actual[key], sub)
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        out = []
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            out += field_diffs(e, a, f"{path}[{i}]")
        return out
    if expected != actual:
        return [f"{path}: expected {json.dumps(expected)[:300]}, got {json.dumps(actual)[:300]}"]
    return []


def _case(case: str) -> tuple[dict[str, Any], dict[str, Any]]:
    expected = json.loads((GOLDEN / case / "expected.json").read_text(encoding="utf-8"))
    return expected, render_debug((GOLDEN / case / "Dockerfile").read_bytes())


@pytest.mark.parametrize("case", CASES)
def test_golden_case(case: str) -> None:
    expected, got = _case(case)
    diffs = field_diffs(expected, got)
    assert not diffs, f"{case}: {len(diffs)} field(s) differ:\n  " + "\n  ".join(diffs)
    expected_errors = [s for s in _SECTIONS if (expected[s] or {}).get("error")]
    assert [s for s in _SECTIONS if (got[s] or {}).get("error")] == expected_errors


_SECTIONS = ("parse", "instructions", "expandedWithTestEnv")


def test_err_cases_fail_except_the_security_flag() -> None:
    """Every ``err_`` case fails somewhere, except ``RUN --security``: v0.11.6 refused
    the flag, frontend 1.26 accepts it."""
    passing = [
        c for c in CASES
        if c.startswith("err_") and not any((_case(c)[1][s] or {}).get("error") for s in _SECTIONS)
    ]  # fmt: skip
    assert passing == ["err_run_unknown_flag_security"]


def test_buildkit_version() -> None:
    assert BUILDKIT_VERSION == "v0.32.2"
    assert render_debug(b"FROM a\n")["buildkitVersion"] == "v0.32.2"


def test_cli_prints_the_golden_shape(capsys: pytest.CaptureFixture[str]) -> None:
    path = GOLDEN / "run_mount_cache" / "Dockerfile"
    assert main(["debug", "parse-dockerfile", str(path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    expected = json.loads(
        (GOLDEN / "run_mount_cache" / "expected.json").read_text(encoding="utf-8")
    )
    assert field_diffs(expected, doc) == []


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
    assert "unsupported modifier (\ufffd) in substitution" in capsys.readouterr().err
