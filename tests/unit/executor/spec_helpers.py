"""Shared by tests: moved from test_exec_runtime_spec.py so that test modules never import each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mason.executor import (
    ExecSpec,
    ResolvedUser,
    build_runtime_config,
)

ROOT = ResolvedUser(0, 0, (10,), "/root", "root")


APP = ResolvedUser(1000, 1000, (10, 2000), "/home/app", "app")


def config_for(
    spec: ExecSpec, user: ResolvedUser = ROOT, env: tuple[str, ...] = ()
) -> dict[str, Any]:
    return build_runtime_config(
        spec,
        user,
        env or spec.env,
        hosts_file=Path("/bundle/hosts"),
        resolv_file=Path("/bundle/resolv.conf"),
        nofile=4096,
    )


def spec_with(**kwargs: Any) -> ExecSpec:
    values: dict[str, Any] = {"rootfs": Path("/snap/rootfs"), "args": ("sh", "-c", "make")}
    values.update(kwargs)
    return ExecSpec(**values)


def by_destination(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["destination"]: m for m in config["mounts"]}
