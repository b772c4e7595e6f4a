"""Export on failure (docs/architecture.md §8, pain point 1.12): a build whose last RUN fails still exports
the steps that finished to --cache-to; the fixed build on a fresh root hits them and runs
from the failed step. Real registry, real runc, ``mason build`` as a subprocess."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tests.support.cachebuild import Build, Builder
from tests.support.cli import mason_cmd
from tests.support.registry_server import RegistryServer, free_port

pytestmark = pytest.mark.integration

# FIX is declared after the passing steps, so supplying it changes only the last step's key
DOCKERFILE = """\
ARG BASE
FROM ${BASE}
RUN echo one > /one
RUN echo two > /two
ARG FIX=
RUN if [ -n "$FIX" ]; then touch /fix; fi; test -f /fix || exit 3
"""
PASSING = {"RUN echo one > /one", "RUN echo two > /two"}
FAILING = "RUN if"


@pytest.fixture
def build(tmp_path: Path, busybox_image: str) -> Builder:
    return Builder(tmp_path, busybox_image)


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


def _titled(steps: set[str], needle: str) -> bool:
    return any(needle in t for t in steps)


def _check_failed(failed: Build) -> None:
    assert failed.returncode == 1, failed.output[-4000:]
    errors = [line for line in failed.output.splitlines() if line.startswith("ERROR: ")]
    # the step's error is the build's error, printed last (after the export vertex)
    assert (
        errors and errors[-1].startswith("ERROR: [4/4] RUN if") and "exit code 3" in errors[-1]
    ), failed.output[-4000:]
    assert all(_titled(failed.ran, p) for p in PASSING), failed.steps  # they executed
    assert "exporting cache to" in failed.output


def _check_resumed(warm: Build) -> None:
    warm.check()
    assert all(_titled(warm.cached, p) for p in PASSING), warm.steps
    assert _titled(warm.ran, FAILING), warm.steps
    assert not _titled(warm.cached, FAILING), warm.steps


def _inspect(target: str, *extra: str) -> dict[str, object]:
    out = subprocess.run(
        [*mason_cmd(), "cache", "inspect", "--format", "json", *extra, target],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    doc: dict[str, object] = json.loads(out)
    return doc


def _result_steps(doc: dict[str, object]) -> list[str]:
    return [str(r.get("step", "")) for r in doc["results"] if r["usable"]]  # type: ignore[attr-defined]


def test_failed_build_exports_finished_steps_to_registry_and_the_fix_resumes(
    build: Builder, context: Path, registry: RegistryServer
) -> None:
    ref = f"{registry.host}/export-on-failure/cache:latest"
    failed = build(context, "--cache-to", f"type=registry,ref={ref},mode=max")
    _check_failed(failed)
    steps = _result_steps(_inspect(ref, "--insecure", registry.host))
    assert all(_titled(set(steps), p) for p in PASSING), steps
    assert not _titled(set(steps), FAILING), steps

    warm = build(context, "--build-arg", "FIX=1", "--cache-from", f"type=registry,ref={ref}")
    _check_resumed(warm)


def test_failed_build_exports_min_mode_chain_to_a_local_cache(
    build: Builder, context: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "local-cache"
    failed = build(context, "--cache-to", f"type=local,dest={dest}")  # mode=min, the default
    _check_failed(failed)
    steps = _result_steps(_inspect(str(dest)))
    assert all(_titled(set(steps), p) for p in PASSING), steps

    warm = build(context, "--build-arg", "FIX=1", "--cache-from", f"type=local,src={dest}")
    _check_resumed(warm)


def test_unreachable_cache_registry_keeps_the_build_error_and_warns(
    build: Builder, context: Path
) -> None:
    dead = f"127.0.0.1:{free_port()}/nobody/cache"
    failed = build(context, "--cache-to", f"type=registry,ref={dead},mode=max")
    _check_failed(failed)
    export_warnings = [w for w in failed.warnings if dead.split("/")[0] in w]
    assert len(export_warnings) == 1, failed.warnings
