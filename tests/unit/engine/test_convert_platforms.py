"""One conversion per target platform (issue 16): the stage's platform is in every RUN's key,
a ``FROM --platform=$BUILDPLATFORM`` stage has the same keys for every target (so the solver
runs it once), and step names carry the platform as BuildKit's multi-platform names do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mason.digest import sha256_bytes
from mason.dockerfile import parse_dockerfile
from mason.dockerfile.stages import plan_build
from mason.engine.context import DockerIgnore
from mason.engine.convert import ResolvedImage, convert_plan
from mason.engine.ops import BuildEnv
from mason.oci import Reference
from mason.solver import Vertex, compute_key

DOCKERFILE = """\
FROM --platform=$BUILDPLATFORM scratch AS tools
ARG TARGETARCH
RUN build-for $TARGETARCH
RUN same-everywhere

FROM base
COPY --from=tools /out /out
RUN uname -m
"""


def _resolver(ref: str, platform: str) -> ResolvedImage:
    # a per-platform manifest digest, as an index resolves to
    return ResolvedImage(Reference.parse(ref), sha256_bytes(f"{ref}@{platform}".encode()), {}, ())


def _convert(tmp_path: Path, target: str, text: str = DOCKERFILE) -> Any:
    env = BuildEnv(
        state=None,  # type: ignore[arg-type]
        blobs=None,  # type: ignore[arg-type]
        snapshots=None,  # type: ignore[arg-type]
        executor=None,
        context=tmp_path,
        ignore=DockerIgnore([]),
        secrets={},
        source_date_epoch=None,
    )
    predefined = {
        "TARGETPLATFORM": target,
        "TARGETARCH": target.split("/")[1],
        "BUILDPLATFORM": "linux/amd64",
    }
    plan = plan_build(parse_dockerfile(text.encode()), predefined=predefined)
    return convert_plan(env, plan, _resolver, platform=target, prefix_platform=True)


def _keys(v: Vertex[Any], out: dict[str, str]) -> str:
    inputs = [_keys(i, out) for i in v.inputs]
    key = compute_key(v.op.cache_map(inputs), inputs, None).digest
    out[v.name] = key
    return key


def test_platform_enters_run_keys_and_build_platform_stages_are_shared(tmp_path: Path) -> None:
    amd: dict[str, str] = {}
    arm: dict[str, str] = {}
    for plat, keys in (("linux/amd64", amd), ("linux/arm64", arm)):
        conv = _convert(tmp_path, plat)
        _keys(conv.stages[0].vertex, keys)
        _keys(conv.target.vertex, keys)
    # after ARG TARGETARCH every step of the stage is named for its target, as BuildKit's
    # "->arm64"; this one's input, the TARGETARCH step, differs, and so does its key
    assert "[linux/amd64->arm64 tools 2/3] RUN build-for $TARGETARCH" in arm
    assert "[linux/amd64 tools 2/3] RUN build-for $TARGETARCH" in amd
    same = "tools 3/3] RUN same-everywhere"
    assert arm[f"[linux/amd64->arm64 {same}"] != amd[f"[linux/amd64 {same}"]
    # the target stage: same command, other platform, other key
    run = "stage-1 3/3] RUN uname -m"
    assert amd[f"[linux/amd64 {run}"] != arm[f"[linux/arm64 {run}"]


def test_a_stage_without_target_args_has_one_key_for_every_target(tmp_path: Path) -> None:
    text = (
        "FROM --platform=$BUILDPLATFORM scratch AS gen\nRUN generate\n"
        "FROM base\nCOPY --from=gen /out /out\n"
    )
    gen = []
    for plat in ("linux/amd64", "linux/arm64"):
        keys: dict[str, str] = {}
        _keys(_convert(tmp_path, plat, text).target.vertex, keys)
        gen.append({k: v for k, v in keys.items() if " gen " in k})
    assert list(gen[0]) == [
        "[linux/amd64 gen 1/2] FROM scratch",
        "[linux/amd64 gen 2/2] RUN generate",
    ]
    assert gen[0] == gen[1]  # one key: the solver runs the step once for both images


def test_the_exec_key_names_the_platform(tmp_path: Path) -> None:
    conv = _convert(tmp_path, "linux/arm64")
    op = conv.target.vertex.op
    assert op.cache_map([]).op["platform"] == "linux/arm64"
    assert conv.stages[0].vertex.op.cache_map([]).op["platform"] == "linux/amd64"
