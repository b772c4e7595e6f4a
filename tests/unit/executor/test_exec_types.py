"""ExecSpec validation and ExitStatus."""

from __future__ import annotations

from pathlib import Path

import pytest

from mason.executor import BindMount, ExecSpec, ExecutorError, ExitStatus


def test_exec_spec_normalises_lists_to_tuples() -> None:
    spec = ExecSpec(rootfs=Path("/r"), args=["sh", "-c", "true"], env=["A=1"])  # type: ignore[arg-type]
    assert spec.args == ("sh", "-c", "true")
    assert spec.env == ("A=1",)
    assert hash(spec) == hash(ExecSpec(rootfs=Path("/r"), args=("sh", "-c", "true"), env=("A=1",)))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"args": ()}, "at least one argument"),
        ({"env": ("NOEQUALS",)}, "without '='"),
        ({"cwd": "relative"}, "must be absolute"),
        ({"network": "bridge"}, "unknown network mode"),
        ({"mounts": (BindMount(Path("/x"), "rel"),)}, "mount target must be absolute"),
    ],
)
def test_exec_spec_rejects_bad_values(kwargs: dict[str, object], fragment: str) -> None:
    values: dict[str, object] = {"rootfs": Path("/r"), "args": ("true",)}
    values.update(kwargs)
    with pytest.raises(ExecutorError, match=fragment):
        ExecSpec(**values)  # type: ignore[arg-type]


def test_exit_status_describes_itself() -> None:
    assert ExitStatus(0).ok
    assert not ExitStatus(1).ok
    assert ExitStatus(1).describe() == "exit code 1"
    assert ExitStatus(137, signal=9).describe() == "killed by signal 9"
    failed = ExitStatus(1, error='exec: "x": not found')
    assert not failed.ok
    assert "could not start" in failed.describe()
