"""Shared by tests: moved from test_executor.py so that test modules never import each other."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mason.executor import (
    ChrootExecutor,
    ExecSpec,
    Executor,
    ExitStatus,
    RuncExecutor,
)

BUSYBOX = Path("/bin/busybox")


PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"


GROUP = "root:x:0:\napp:x:1000:\nbuilders:x:2000:app\nreaders:x:2001:app\n"


def make_executor(kind: str, state: Path, work: Path) -> Executor:
    if kind == "runc":
        if shutil.which("runc") is None:
            pytest.skip("runc is not installed")
        return RuncExecutor(state_dir=state, work_dir=work)
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    return ChrootExecutor(work_dir=work)


def sh(executor: Executor, rootfs: Path, script: str, **kwargs: object) -> tuple[ExitStatus, str]:
    chunks: list[bytes] = []
    values: dict[str, object] = {"env": ("PATH=/bin",)}
    values.update(kwargs)
    spec = ExecSpec(rootfs=rootfs, args=("/bin/sh", "-c", script), **values)  # type: ignore[arg-type]
    status = executor.run(spec, chunks.append)
    return status, b"".join(chunks).decode()
