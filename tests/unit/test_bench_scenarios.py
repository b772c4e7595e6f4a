"""The bench's build shapes are builds mason plans: every Dockerfile parses and plans with a
base image, and the file its one-file phase changes is in the context and changed."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.bench_scenarios import ALL_SCENARIOS, MORE_SCENARIOS, SCENARIOS, scenario_context

from mason.dockerfile import parse_dockerfile
from mason.dockerfile.stages import plan_build


def test_the_two_sets_are_fifteen_shapes_each_with_no_name_shared() -> None:
    assert len(SCENARIOS) == len(MORE_SCENARIOS) == 15
    assert len(ALL_SCENARIOS) == 30  # no name of one set hides one of the other


@pytest.mark.parametrize("name", sorted(ALL_SCENARIOS))
def test_a_scenario_plans_on_a_base_and_its_change_file_changes(name: str, tmp_path: Path) -> None:
    context, changed = scenario_context(tmp_path, name)
    dockerfile = parse_dockerfile((context / "Dockerfile").read_bytes())
    plan = plan_build(dockerfile, build_args={"BASE": "registry.test/base/busybox:latest"})
    assert plan.stages
    assert all(s.base.image == "registry.test/base/busybox:latest" for s in plan.stages)
    change = ALL_SCENARIOS[name][1]
    assert (context / change).read_bytes() != (changed / change).read_bytes()
