"""``AutoExecutor`` (``--runtime auto``, issue 14): runc runs the first RUN without a probe
container; the probe runs only when runc could not start one, and then decides between the
RUN's own failure and the chroot fallback (which re-runs the RUN that never started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mason.executor import choose as choose_mod
from mason.executor.choose import AutoExecutor
from mason.executor.types import ExecSpec, ExecutorError, ExitStatus


class _Fake:
    def __init__(self, *results: ExitStatus | Exception) -> None:
        self.results = list(results)
        self.runs: list[ExecSpec] = []

    def run(self, spec: ExecSpec, on_output: Any, **kw: Any) -> ExitStatus:
        self.runs.append(spec)
        result = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if isinstance(result, Exception):
            raise result
        return result


OK = ExitStatus(0)
FAILED = ExitStatus(1)
NOT_STARTED = ExitStatus(1, error="exec: cannot start")


def _auto(
    monkeypatch: pytest.MonkeyPatch, runc: _Fake, chroot: _Fake, probe: str | None
) -> tuple[AutoExecutor, list[int]]:
    probes: list[int] = []

    def fake_probe(_executor: Any) -> str | None:
        probes.append(1)
        return probe

    monkeypatch.setattr(choose_mod, "probe_runc", fake_probe)
    return AutoExecutor(runc, lambda: chroot), probes  # type: ignore[arg-type]


def _spec(name: str) -> ExecSpec:
    return ExecSpec(rootfs=Path("/nonexistent"), args=(name,))


def test_a_started_process_settles_runc_without_a_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    runc, chroot = _Fake(FAILED, OK), _Fake(OK)
    auto, probes = _auto(monkeypatch, runc, chroot, probe="broken")
    assert auto.run(_spec("a"), lambda _: None) is FAILED  # the command ran and failed
    assert auto.run(_spec("b"), lambda _: None) is OK
    assert probes == [] and len(runc.runs) == 2 and chroot.runs == []
    assert auto.chosen is runc


def test_a_command_that_cannot_start_under_a_working_runc_is_the_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runc, chroot = _Fake(NOT_STARTED), _Fake(OK)
    auto, probes = _auto(monkeypatch, runc, chroot, probe=None)
    assert auto.run(_spec("missing"), lambda _: None) is NOT_STARTED
    assert probes == [1] and chroot.runs == [] and auto.chosen is runc


def test_a_runc_that_cannot_run_here_falls_back_and_reruns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runc, chroot = _Fake(NOT_STARTED), _Fake(OK)
    auto, probes = _auto(monkeypatch, runc, chroot, probe="no cgroups")
    assert auto.run(_spec("a"), lambda _: None) is OK
    assert auto.run(_spec("b"), lambda _: None) is OK
    assert probes == [1] and [s.args for s in chroot.runs] == [("a",), ("b",)]
    assert len(runc.runs) == 1


def test_an_executor_error_is_raised_when_runc_works_and_falls_back_when_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runc, chroot = _Fake(ExecutorError("bundle")), _Fake(OK)
    auto, _ = _auto(monkeypatch, runc, chroot, probe=None)
    with pytest.raises(ExecutorError):
        auto.run(_spec("a"), lambda _: None)
    runc, chroot = _Fake(ExecutorError("runc broken")), _Fake(OK)
    auto, _ = _auto(monkeypatch, runc, chroot, probe="broken")
    assert auto.run(_spec("a"), lambda _: None) is OK and len(chroot.runs) == 1
