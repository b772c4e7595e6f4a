"""Stage resolution, ARG/ENV scoping and ONBUILD triggers."""

from __future__ import annotations

import pytest

from mason.dockerfile import (
    ArgCommand,
    CopyCommand,
    DockerfileError,
    EnvCommand,
    RunCommand,
    WorkdirCommand,
    parse_dockerfile,
)
from mason.dockerfile.stages import StageScope, onbuild_triggers, plan_build

PLATFORM = {
    "TARGETPLATFORM": "linux/amd64", "TARGETOS": "linux", "TARGETARCH": "amd64",
    "TARGETVARIANT": "", "BUILDPLATFORM": "linux/arm64", "BUILDOS": "linux",
    "BUILDARCH": "arm64", "BUILDVARIANT": "",
}  # fmt: skip


def df(text: str) -> bytes:
    return text.encode()


def test_global_args_expand_in_from_lines() -> None:
    d = parse_dockerfile(
        df(
            "ARG BASE=alpine\nARG TAG=3.18\nFROM ${BASE}:${TAG} AS b\nFROM --platform=$BUILDPLATFORM b\n"
        )
    )
    plan = plan_build(d, predefined=PLATFORM)
    assert plan.all_stages[0].base_name == "alpine:3.18"
    assert plan.all_stages[1].platform == "linux/arm64"
    assert plan.all_stages[1].base.stage == 0


def test_build_args_override_meta_args_and_predefined() -> None:
    d = parse_dockerfile(df("ARG BASE=alpine\nARG REF=$BASE\nFROM $REF-$TARGETARCH\n"))
    plan = plan_build(
        d, build_args={"BASE": "debian", "TARGETARCH": "riscv64"}, predefined=PLATFORM
    )
    assert plan.all_stages[0].base_name == "debian-riscv64"


def test_blank_base_name_is_an_error() -> None:
    d = parse_dockerfile(df("ARG BASE\nFROM $BASE\n"))
    with pytest.raises(DockerfileError, match="should not be blank") as info:
        plan_build(d)
    assert info.value.lines == (2,)


def _scope_through(
    text: str, build_args: dict[str, str] | None = None, image_env: tuple[str, ...] = ()
) -> StageScope:
    d = parse_dockerfile(df(text))
    plan = plan_build(d, build_args=build_args or {}, predefined=PLATFORM)
    scope = StageScope.start(plan, image_env)
    for cmd in plan.all_stages[-1].stage.commands:
        scope = scope.apply(scope.expand(cmd))
    return scope


SCOPES = [
    # global ARGs are not visible in a stage unless re-declared
    ("ARG V=1\nFROM s\nENV X=${V:-unset}\n", {}, {"X": "unset"}),
    ("ARG V=1\nFROM s\nARG V\nENV X=$V\n", {}, {"V": "1", "X": "1"}),
    ("ARG V=1\nFROM s\nARG V\nENV X=$V\n", {"V": "2"}, {"V": "2", "X": "2"}),
    # ARG defaults and build-arg overrides
    ("FROM s\nARG A=def\nENV X=$A\n", {}, {"A": "def", "X": "def"}),
    ("FROM s\nARG A=def\nENV X=$A\n", {"A": "cli"}, {"A": "cli", "X": "cli"}),
    # declared but unset: expands to ""
    ("FROM s\nARG A\nENV X=[$A]\n", {}, {"X": "[]"}),
    # ENV after ARG wins
    ("FROM s\nARG A=arg\nENV A=env\nENV X=$A\n", {"A": "cli"}, {"A": "env", "X": "env"}),
    # a default refers to earlier values
    ("FROM s\nENV P=/opt\nARG D=$P/bin\nENV X=$D\n", {}, {"D": "/opt/bin"}),
    # predefined ARGs need a declaration inside a stage
    ("FROM s\nENV X=${TARGETARCH:-none}\n", {}, {"X": "none"}),
    ("FROM s\nARG TARGETARCH\nENV X=$TARGETARCH\n", {}, {"X": "amd64"}),
    # build args that were never declared stay invisible
    ("FROM s\nENV X=${SECRET:-no}\n", {"SECRET": "yes"}, {"X": "no"}),
]


@pytest.mark.parametrize(("text", "build_args", "expected"), SCOPES)
def test_stage_scope(text: str, build_args: dict[str, str], expected: dict[str, str]) -> None:
    env = _scope_through(text, build_args).run_env()
    for k, v in expected.items():
        assert env.get(k) == v, k
    if "X" in expected:
        assert env["X"] == expected["X"]


def test_image_env_is_the_starting_scope() -> None:
    env = _scope_through(
        "FROM s\nWORKDIR $HOME/app\nENV X=$PATH\n", image_env=("PATH=/bin", "HOME=/root")
    ).run_env()
    assert env["X"] == "/bin"


def test_expand_uses_scope_and_escape() -> None:
    d = parse_dockerfile(df("# escape=`\nFROM s\nENV D=/srv\nWORKDIR $D/`$x\n"))
    plan = plan_build(d)
    scope = StageScope.start(plan)
    cmds = plan.all_stages[0].stage.commands
    scope = scope.apply(scope.expand(cmds[0]))
    wd = scope.expand(cmds[1])
    assert isinstance(wd, WorkdirCommand)
    assert wd.path == "/srv/$x"


def test_proxy_args_reach_run_without_declaration() -> None:
    scope = _scope_through("FROM s\nRUN true\n", {"HTTP_PROXY": "http://p", "OTHER": "1"})
    assert scope.proxy_env() == {"HTTP_PROXY": "http://p"}
    assert "HTTP_PROXY" not in scope.run_env()
    assert scope.unused_build_args() == ["OTHER"]


def test_stage_names_are_case_insensitive() -> None:
    d = parse_dockerfile(
        df("FROM alpine AS Builder\nRUN x\nFROM builder\nCOPY --from=BUILDER /a /b\n")
    )
    plan = plan_build(d, target="BUILDER")
    assert plan.target == 0
    assert [s.index for s in plan.stages] == [0]
    full = plan_build(d)
    assert full.all_stages[1].base.stage == 0
    assert full.resolve_from("Builder").stage == 0


def test_copy_from_index_image_and_pruning() -> None:
    text = (
        "FROM alpine AS a\nRUN a\n"
        "FROM alpine AS unused\nRUN u\n"
        "FROM scratch\nCOPY --from=0 /x /x\nCOPY --from=nginx:latest /y /y\n"
        "RUN --mount=type=bind,from=c,target=/c true\n"
        "FROM busybox AS c\n"
    )
    plan = plan_build(parse_dockerfile(df(text)), target=None)
    assert plan.target == 3  # the last stage by default
    plan = plan_build(parse_dockerfile(df(text)), target="")
    assert plan.target == 3
    no_c = plan_build(parse_dockerfile(df(text.replace("FROM busybox AS c\n", ""))))
    assert no_c.resolve_from("c").image == "c"  # not a stage: an image
    assert [s.index for s in no_c.stages] == [0, 2]
    assert no_c.stages[1].deps == (0,)
    stages = plan_build(parse_dockerfile(df(text))).stages
    assert [s.index for s in stages] == [3]
    plan2 = plan_build(
        parse_dockerfile(
            df(text.replace("FROM busybox AS c\n", "FROM busybox AS c\nCOPY --from=A / /\n"))
        )
    )
    assert [s.index for s in plan2.stages] == [0, 3]
    assert [s.index for s in plan_build(plan2.dockerfile, target="c").stages] == [0, 3]
    with pytest.raises(DockerfileError, match="circular dependency"):
        plan_build(
            parse_dockerfile(
                df(text.replace("FROM busybox AS c\n", "FROM busybox AS c\nCOPY --from=2 / /\n"))
            )
        )
    assert plan2.resolve_from("nginx:latest").image == "nginx:latest"
    assert plan2.all_stages[2].base.is_scratch


def test_unknown_target() -> None:
    d = parse_dockerfile(df("FROM a AS build\nFROM b AS test\n"))
    with pytest.raises(DockerfileError, match="target stage buidl could not be found") as info:
        plan_build(d, target="buidl")
    assert info.value.hint == "did you mean build?"


def test_cycles_are_errors() -> None:
    d = parse_dockerfile(df("FROM a AS x\nCOPY --from=y / /\nFROM b AS y\nCOPY --from=x / /\n"))
    with pytest.raises(DockerfileError, match="circular dependency detected on stage: x"):
        plan_build(d)
    d = parse_dockerfile(df("FROM a AS x\nCOPY --from=x / /\n"))
    with pytest.raises(DockerfileError, match="circular dependency"):
        plan_build(d)


def test_bad_stage_index() -> None:
    d = parse_dockerfile(df("FROM a\nCOPY --from=5 / /\n"))
    with pytest.raises(DockerfileError, match="invalid stage index 5"):
        plan_build(d)


def test_from_a_later_stage_name_is_an_image() -> None:
    d = parse_dockerfile(df("FROM later\nFROM alpine AS later\n"))
    plan = plan_build(d, target="later")
    assert plan.all_stages[0].base.image == "later"


def test_onbuild_triggers() -> None:
    cmds = onbuild_triggers(["COPY . /app", "RUN make", "ENV A=1", "ARG B"])
    assert isinstance(cmds[0], CopyCommand) and cmds[0].dest == "/app"
    assert isinstance(cmds[1], RunCommand) and cmds[1].cmd_line == ("make",)
    assert isinstance(cmds[2], EnvCommand)
    assert isinstance(cmds[3], ArgCommand)


def test_onbuild_expression_round_trips_through_triggers() -> None:
    d = parse_dockerfile(df("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\n"))
    onb = d.stages[0].commands[0]
    (cmd,) = onbuild_triggers([onb.expression])  # type: ignore[union-attr]
    assert isinstance(cmd, RunCommand)
    assert cmd.files[0].data == "echo hi\n"


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        ("FROM x", "isn't allowed as an ONBUILD trigger"),
        ("ONBUILD RUN x", "isn't allowed"),
        ("RUN a\nRUN b", "single expression"),
        ("RUNN x", "unknown instruction"),
        ("", "file with no instructions"),
    ],
)
def test_bad_onbuild_triggers(trigger: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=message):
        onbuild_triggers([trigger])


def test_copy_or_mount_from_a_later_stage_fails_as_buildkit_dispatch() -> None:
    later = "FROM a AS first\n{cmd}\nFROM b AS later\nRUN true\n"
    with pytest.raises(DockerfileError) as info:
        plan_build(
            parse_dockerfile(df(later.format(cmd="COPY --from=later /x /x"))), target="first"
        )
    assert info.value.message == (
        'cannot copy from stage "later", it needs to be defined before current stage "first"'
    )
    assert info.value.lines == (2,)
    run = "RUN --mount=type=bind,from=later,target=/t --mount=type=tmpfs,target=/tmp true"
    with pytest.raises(DockerfileError) as info:
        plan_build(parse_dockerfile(df(later.format(cmd=run))), target="first")
    assert info.value.message == (
        'cannot mount from stage "later" to "/t", stage needs to be defined before current command'
    )
    cache = "RUN --mount=type=cache,from=1,dst=/c true"  # by index, and dst= spells target=
    with pytest.raises(DockerfileError, match='cannot mount from stage "1" to "/c"'):
        plan_build(parse_dockerfile(df(later.format(cmd=cache))), target="first")
    # a stage a named context replaces is ready before any stage (dockerui dispatches it first)
    plan = plan_build(
        parse_dockerfile(df(later.format(cmd=run))), target="first", replaced_stages=["later"]
    )
    assert [s.index for s in plan.stages] == [0, 1]
    # from an earlier stage, or an image that shares no stage's name: no error
    ok = "FROM b AS early\nFROM a AS first\nRUN --mount=from=early,target=/e --mount=from=img,target=/i true\n"
    assert plan_build(parse_dockerfile(df(ok))).target == 1
