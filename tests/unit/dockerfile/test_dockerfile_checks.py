"""Build checks (mason.dockerfile.checks): BuildKit v0.32.2's rules, one positive and one negative
case each, with BuildKit's wording and lines; the check configuration (directive, per-instruction
comment, BUILDKIT_DOCKERFILE_CHECK, error mode); --check's output; hostile input."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.dockerfile.strategies import (
    _KEYWORDS,
    _LINES,
    CORPUS,
    PROPS,
)

from mason.dockerfile import DockerfileError, parse_dockerfile
from mason.dockerfile.checks import (
    RULES,
    CheckReport,
    check_config,
    format_check_output,
    run_checks,
)
from mason.dockerfile.dockerignore import IgnoreMatcher
from mason.dockerfile.stages import PlannedStage, plan_build

PREDEFINED = {
    "TARGETPLATFORM": "linux/amd64",
    "TARGETOS": "linux",
    "TARGETARCH": "amd64",
    "TARGETVARIANT": "",
    "BUILDPLATFORM": "linux/amd64",
    "BUILDOS": "linux",
    "BUILDARCH": "amd64",
    "BUILDVARIANT": "",
}
IMAGE = {"os": "linux", "architecture": "amd64", "config": {"Env": ["PATH=/bin", "HOME=/root"]}}


class _Ignore:
    def __init__(self, *patterns: str) -> None:
        self.m = IgnoreMatcher(patterns)

    def ignored(self, rel: str) -> bool:
        return self.m.excluded(rel)

    @property
    def empty(self) -> bool:
        return not self.m.patterns

    @property
    def has_exceptions(self) -> bool:
        return self.m.has_exclusions


def lint(
    text: str,
    *,
    build_args: Mapping[str, str] | None = None,
    image: Mapping[str, Any] | None = IMAGE,
    ignore: _Ignore | None = None,
    all_stages: bool = True,
    target: str | None = None,
) -> CheckReport:
    df = parse_dockerfile(text.encode())
    plan = plan_build(df, build_args=build_args or {}, predefined=PREDEFINED, target=target)

    def base_config(ps: PlannedStage) -> Mapping[str, Any] | None:
        return image

    return run_checks(
        plan,
        stages=plan.all_stages if all_stages else plan.stages,
        predefined=PREDEFINED,
        base_config=base_config,
        ignore=ignore,
        platform="linux/amd64",
    )


def shorts(report: CheckReport, rule: str | None = None) -> list[str]:
    return [w.short for w in report.warnings if rule is None or w.rule == rule]


# ---------------------------------------------------------------------------
# one test per rule: (rule, Dockerfile that fires it, expected short text, Dockerfile that does not)

CASES: list[tuple[str, str, list[str], str]] = [
    (
        "StageNameCasing",
        "FROM alpine AS Build\n",
        ["StageNameCasing: Stage name 'Build' should be lowercase (line 1)"],
        "FROM alpine AS build\n",
    ),
    (
        "FromAsCasing",
        "FROM alpine as build\n",
        ["FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)"],
        "from alpine as build\nFROM alpine AS b2\n",
    ),
    (
        "NoEmptyContinuation",
        "FROM alpine\nRUN echo a \\\n\n  b\n",
        ["NoEmptyContinuation: Empty continuation line (line 4)"],
        "FROM alpine\nRUN echo a \\\n  b\n",
    ),
    (
        "ConsistentInstructionCasing",
        "FROM alpine\nRUN true\nrun true\nWorkdir /x\n",
        [
            "ConsistentInstructionCasing: Command 'run' should match the case of the command majority (uppercase) "
            "(line 3)",
            "ConsistentInstructionCasing: Command 'Workdir' should match the case of the command majority (uppercase) "
            "(line 4)",
        ],
        "from alpine\nrun true\n",
    ),
    (
        "DuplicateStageName",
        "FROM alpine AS a\nFROM alpine AS a\n",
        ['DuplicateStageName: Duplicate stage name "a", stage names should be unique (line 2)'],
        "FROM alpine AS a\nFROM alpine AS b\n",
    ),
    (
        "ReservedStageName",
        "FROM alpine AS scratch\n",
        [
            'ReservedStageName: Stage name should not use the same name as reserved stage "scratch" (line 1)'
        ],
        "FROM alpine AS scratchy\n",
    ),
    (
        "JSONArgsRecommended",
        "FROM alpine\nCMD echo hi\nENTRYPOINT my-app\n",
        [
            "JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS "
            "signals (line 2)",
            "JSONArgsRecommended: JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to "
            "OS signals (line 3)",
        ],
        'FROM alpine\nCMD ["echo", "hi"]\nFROM alpine\nSHELL ["/bin/sh", "-c"]\nCMD echo hi\n',
    ),
    (
        "MaintainerDeprecated",
        "FROM alpine\nMAINTAINER me@example.com\n",
        [
            "MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 2)"
        ],
        'FROM alpine\nLABEL org.opencontainers.image.authors="me@example.com"\n',
    ),
    (
        "UndefinedArgInFrom",
        "ARG VERSION=1\nFROM alpine:$VERSIO\n",
        [
            "UndefinedArgInFrom: FROM argument 'VERSIO' is not declared (did you mean VERSION?) (line 2)"
        ],
        "ARG VERSION=1\nFROM alpine:$VERSION\nFROM --platform=$BUILDPLATFORM alpine\n",
    ),
    (
        "WorkdirRelativePath",
        "FROM alpine\nWORKDIR app\n",
        [
            'WorkdirRelativePath: Relative workdir "app" can have unexpected results if the base image changes '
            "(line 2)"
        ],
        "FROM alpine AS base\nWORKDIR /app\nWORKDIR sub\nFROM base\nWORKDIR more\n",
    ),
    (
        "UndefinedVar",
        "FROM alpine\nARG FOO\nCOPY $FOO $BAR /x/\nENV P=$PTH\n",
        [
            "UndefinedVar: Usage of undefined variable '$BAR' (line 3)",
            "UndefinedVar: Usage of undefined variable '$PTH' (did you mean $PATH?) (line 4)",
        ],
        "FROM alpine\nARG FOO\nENV A=1\nCOPY $FOO $A $HOME /x/\nRUN echo $NOT_CHECKED\n",
    ),
    (
        "MultipleInstructionsDisallowed",
        'FROM alpine\nCMD ["a"]\nHEALTHCHECK CMD true\nCMD ["b"]\nHEALTHCHECK NONE\n',
        [
            "MultipleInstructionsDisallowed: Multiple CMD instructions should not be used in the same stage because "
            "only the last one will be used (line 2)",
            "MultipleInstructionsDisallowed: Multiple HEALTHCHECK instructions should not be used in the same stage "
            "because only the last one will be used (line 3)",
        ],
        'FROM alpine AS a\nCMD ["a"]\nFROM a\nCMD ["b"]\nENTRYPOINT ["c"]\n',
    ),
    (
        "LegacyKeyValueFormat",
        "FROM alpine\nENV A 1\nLABEL k v\n",
        [
            'LegacyKeyValueFormat: "ENV key=value" should be used instead of legacy "ENV key value" format (line 2)',
            'LegacyKeyValueFormat: "LABEL key=value" should be used instead of legacy "LABEL key value" format '
            "(line 3)",
        ],
        "FROM alpine\nENV A=1\nLABEL k=v\n",
    ),
    (
        "RedundantTargetPlatform",
        "FROM --platform=$TARGETPLATFORM alpine\n",
        [
            "RedundantTargetPlatform: Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is "
            "the default behavior (line 1)"
        ],
        "FROM --platform=$BUILDPLATFORM alpine\nFROM --platform=${TARGETOS}/${TARGETARCH} alpine\n",
    ),
    (
        "SecretsUsedInArgOrEnv",
        "FROM alpine\nARG GITHUB_TOKEN\nENV DB_PASSWORD=x\n",
        [
            'SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ARG "GITHUB_TOKEN") '
            "(line 2)",
            'SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ENV "DB_PASSWORD") '
            "(line 3)",
        ],
        "FROM alpine\nARG PUBLIC_KEY\nENV KEY_FILE=/k TOKENIZER=x MONKEY=1\n",
    ),
    (
        "InvalidDefaultArgInFrom",
        "ARG TAG\nFROM alpine:${TAG}\n",
        [
            "InvalidDefaultArgInFrom: Default value for ARG alpine:${TAG} results in empty or invalid base image name "
            "(line 2)"
        ],
        "ARG TAG=3.20\nARG IMG=busybox\nFROM alpine:${TAG}\nFROM ${IMG}\n",
    ),
    (
        "FromPlatformFlagConstDisallowed",
        "FROM --platform=linux/arm64 alpine AS build\n",
        [
            'FromPlatformFlagConstDisallowed: FROM --platform flag should not use constant value "linux/arm64" '
            "(line 1)"
        ],
        "FROM --platform=linux/arm64 alpine AS build-arm64\nFROM --platform=$BUILDPLATFORM alpine\n",
    ),
    (
        "ExposeProtoCasing",
        "FROM alpine\nEXPOSE 80/TCP\n",
        [
            "ExposeProtoCasing: Defined protocol '80/TCP' in EXPOSE instruction should be lowercase (line 2)"
        ],
        "FROM alpine\nEXPOSE 80/tcp 53/udp 8080\n",
    ),
    (
        "ExposeInvalidFormat",
        "FROM alpine\nEXPOSE 127.0.0.1:80:80 8080:80\n",
        [
            "ExposeInvalidFormat: EXPOSE instruction should not define an IP address or host-port mapping, found "
            "'127.0.0.1:80:80' (line 2)",
            "ExposeInvalidFormat: EXPOSE instruction should not define an IP address or host-port mapping, found "
            "'8080:80' (line 2)",
        ],
        "FROM alpine\nEXPOSE 80 443/tcp 8000-8010\n",
    ),
]


@pytest.mark.parametrize(("rule", "bad", "expected", "good"), CASES, ids=[c[0] for c in CASES])
def test_rule_fires_with_buildkits_wording_and_lines(
    rule: str, bad: str, expected: list[str], good: str
) -> None:
    assert shorts(lint(bad), rule) == expected
    assert shorts(lint(good), rule) == []


def test_every_non_experimental_rule_is_known_with_its_docs_url() -> None:
    assert len(RULES) == 21
    assert (
        RULES["JSONArgsRecommended"].url
        == "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
    )
    assert RULES["FromPlatformFlagConstDisallowed"].url.endswith(
        "/from-platform-flag-const-disallowed/"
    )
    assert RULES["InvalidBaseImagePlatform"].url == ""  # BuildKit gives it no page
    tested = {c[0] for c in CASES} | {"InvalidBaseImagePlatform", "CopyIgnoredFile"}
    assert tested == set(RULES)


def test_invalid_base_image_platform_uses_the_builders_facts() -> None:
    arm = {"os": "linux", "architecture": "arm64", "variant": "v8", "config": {}}
    report = lint("FROM alpine\n", image=arm)
    assert shorts(report, "InvalidBaseImagePlatform") == [
        'InvalidBaseImagePlatform: Base image alpine was pulled with platform "linux/arm64", expected '
        '"linux/amd64" for current build (line 1)'
    ]
    assert report.warnings[0].url == ""
    assert shorts(lint("FROM alpine\n"), "InvalidBaseImagePlatform") == []
    assert (
        shorts(lint("FROM alpine\n", image=None), "InvalidBaseImagePlatform") == []
    )  # unknown: no guess


def test_copy_ignored_file() -> None:
    text = "FROM alpine\nCOPY secret.txt dir/ /x/\nADD ./dir/sub https://example.com/a.txt /y/\nCOPY . /z/\n"
    assert shorts(lint(text, ignore=_Ignore("secret.txt", "dir")), "CopyIgnoredFile") == [
        'CopyIgnoredFile: Attempting to Copy file "secret.txt" that is excluded by .dockerignore (line 2)',
        'CopyIgnoredFile: Attempting to Copy file "dir" that is excluded by .dockerignore (line 2)',
        'CopyIgnoredFile: Attempting to Add file "dir/sub" that is excluded by .dockerignore (line 3)',
    ]
    assert shorts(lint(text, ignore=_Ignore("*")), "CopyIgnoredFile")[-1] == (
        'CopyIgnoredFile: Attempting to Copy file "." that is excluded by .dockerignore (line 4)'
    )
    # no rules, '!' exceptions (BuildKit does not guess), or COPY --from: nothing
    assert shorts(lint(text, ignore=_Ignore()), "CopyIgnoredFile") == []
    assert shorts(lint(text, ignore=_Ignore("dir", "!dir/keep")), "CopyIgnoredFile") == []
    assert (
        shorts(
            lint(
                "FROM alpine AS a\nFROM alpine\nCOPY --from=a secret.txt /\n",
                ignore=_Ignore("secret.txt"),
            ),
            "CopyIgnoredFile",
        )
        == []
    )


def test_undefined_var_sees_the_base_image_and_parent_stage() -> None:
    text = "FROM alpine AS a\nENV FROM_A=1\nARG DECL\nFROM a\nCOPY $FROM_A $DECL $HOME /x/\n"
    assert shorts(lint(text), "UndefinedVar") == []
    # an image the builder could not resolve: no guess about its environment
    assert shorts(lint("FROM alpine\nCOPY $MAYBE /x\n", image=None), "UndefinedVar") == []
    # scratch has only the default PATH
    assert shorts(lint("FROM scratch\nCOPY $HOME$PATH /x\n"), "UndefinedVar") == [
        "UndefinedVar: Usage of undefined variable '$HOME' (line 2)"
    ]


def test_a_build_checks_only_the_stages_it_runs() -> None:
    text = "FROM alpine AS unused\nCMD echo a\nFROM alpine\nCMD echo b\n"
    assert [w.line for w in lint(text, all_stages=False).warnings] == [4]
    assert [w.line for w in lint(text).warnings] == [2, 4]


# ---------------------------------------------------------------------------
# configuration


def test_skip_directive() -> None:
    text = "# check=skip=JSONArgsRecommended,StageNameCasing\nFROM alpine AS Build\nCMD echo\nENV A 1\n"
    assert [w.rule for w in lint(text).warnings] == ["LegacyKeyValueFormat"]
    assert lint("# check=skip=all\nFROM alpine AS Build\nCMD echo\n").warnings == ()


def test_inline_check_comment_skips_for_one_instruction() -> None:
    text = "FROM alpine\n# check=skip=JSONArgsRecommended\nCMD echo a\nENTRYPOINT echo b\n"
    assert [w.line for w in lint(text).warnings if w.rule == "JSONArgsRecommended"] == [4]
    text = "# check=skip=JSONArgsRecommended\nFROM alpine AS Build\n# a comment\n# check=skip=all\nENV A 1\n"
    assert [w.rule for w in lint(text).warnings] == ["StageNameCasing"]


def test_build_arg_replaces_the_directive() -> None:
    text = "# check=skip=all\nFROM alpine\nCMD echo a\n"
    report = lint(text, build_args={"BUILDKIT_DOCKERFILE_CHECK": "skip=StageNameCasing;error=true"})
    assert [w.rule for w in report.warnings] == ["JSONArgsRecommended"]
    assert report.config.error
    assert lint(text, build_args={"BUILDKIT_DOCKERFILE_CHECK": ""}).warnings != ()


def test_error_mode_names_the_rules() -> None:
    report = lint("# check=error=true\nFROM alpine AS Build\nCMD echo\nCMD echo\n")
    assert report.error_message == (
        "lint violation found for rules: StageNameCasing, JSONArgsRecommended, "
        "MultipleInstructionsDisallowed"
    )
    assert lint("FROM alpine\nCMD echo\n").error_message is None  # warnings only
    assert lint("# check=error=true\nFROM alpine\n").error_message is None  # nothing fired
    # the comment above an instruction can skip, never switch error mode on
    assert lint("FROM alpine\n# check=error=true\nCMD echo\n").error_message is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("skip", 'invalid check option "skip"'),
        ("foo=bar", 'invalid check option "foo"'),
        (
            "error=maybe",
            'failed to parse check option "error=maybe": strconv.ParseBool: parsing "maybe": invalid syntax',
        ),
    ],
)
def test_bad_check_options_fail_the_build(value: str, message: str) -> None:
    df = parse_dockerfile(f"# check={value}\nFROM alpine\n".encode())
    with pytest.raises(DockerfileError, match="failed to parse check options: ") as info:
        check_config(df, {})
    assert info.value.message.endswith(message)
    assert info.value.line == 1
    with pytest.raises(
        DockerfileError, match="failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: "
    ):
        check_config(parse_dockerfile(b"FROM alpine\n"), {"BUILDKIT_DOCKERFILE_CHECK": value})


def test_directive_value_is_its_first_word_after_a_shebang() -> None:
    df = parse_dockerfile(b"#!/usr/bin/env mason\n# check=skip=all error=true\nFROM alpine\n")
    cfg = check_config(df, {})
    assert cfg.skip_all and not cfg.error


# ---------------------------------------------------------------------------
# docker buildx build --check output


def test_check_output_is_buildx_shape() -> None:
    text = "FROM alpine\nRUN true\nCMD echo hi\nLABEL a=b\n"
    df = parse_dockerfile(text.encode())
    out = format_check_output(lint(text), df)
    assert out == (
        "Check complete, 1 warning has been found!\n"
        "\n"
        "WARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\n"
        "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals\n"
        "Dockerfile:3\n"
        "--------------------\n"
        "   1 |     FROM alpine\n"
        "   2 |     RUN true\n"
        "   3 | >>> CMD echo hi\n"
        "   4 |     LABEL a=b\n"
        "   5 |     \n"
        "--------------------\n"
    )
    assert format_check_output(lint("FROM alpine\n"), df) == "Check complete, no warnings found.\n"
    two = lint("FROM alpine\nCMD a\nENV A 1\n")
    assert format_check_output(two, df).startswith("Check complete, 2 warnings have been found!\n")


# ---------------------------------------------------------------------------
# item 1 leftovers: COPY --from


def test_copy_from_variable_is_refused() -> None:
    df = parse_dockerfile(b"ARG SRC=a\nFROM alpine AS a\nFROM alpine\nCOPY --from=$SRC /x /x\n")
    with pytest.raises(DockerfileError) as info:
        plan_build(df)
    assert info.value.message == (
        "variable expansion is not supported for --from, define a new stage with FROM "
        "using ARG from global scope as a workaround"
    )
    assert info.value.line == 4


def test_copy_from_a_later_stage_is_refused() -> None:
    df = parse_dockerfile(
        b"FROM alpine AS first\nCOPY --from=Second /x /x\nFROM alpine AS second\nRUN true\n"
    )
    with pytest.raises(DockerfileError) as info:
        plan_build(df, target="first")
    assert info.value.message == (
        'cannot copy from stage "Second", it needs to be defined before current stage "first"'
    )
    assert info.value.line == 2
    df = parse_dockerfile(
        b"FROM alpine\nCOPY --from=1 /x /x\nFROM alpine AS later\nFROM alpine\nCOPY --from=0 / /\n"
    )
    with pytest.raises(
        DockerfileError, match=r'cannot copy from stage "1", .* current stage "stage-0"'
    ):
        plan_build(df)
    # a stage that is not built is not checked; an earlier stage is fine
    plan_build(
        parse_dockerfile(
            b"FROM alpine AS a\nCOPY --from=b /x /x\nFROM alpine AS b\nFROM alpine AS c\n"
        ),
        target="c",
    )
    plan_build(parse_dockerfile(b"FROM alpine AS a\nFROM alpine\nCOPY --from=a /x /x\n"))


# ---------------------------------------------------------------------------
# hostile input: the linter raises nothing but DockerfileError


def _lint_bytes(data: bytes) -> None:
    try:
        df = parse_dockerfile(data)
        plan = plan_build(df, predefined=PREDEFINED)
    except DockerfileError:
        return
    try:
        report = run_checks(
            plan, stages=plan.all_stages, base_config=lambda ps: IMAGE, ignore=_Ignore("*.txt")
        )
    except DockerfileError:
        return
    format_check_output(report, df)


@PROPS
@given(st.binary(max_size=300))
def test_linter_on_arbitrary_bytes(data: bytes) -> None:
    _lint_bytes(data)


@PROPS
@given(_LINES)
def test_linter_on_dockerfile_like_text(text: str) -> None:
    _lint_bytes(text.encode("utf-8", "surrogatepass"))


@PROPS
@given(st.data())
def test_linter_on_mutated_corpus_files(data: st.DataObject) -> None:
    base = bytearray(data.draw(st.sampled_from(CORPUS)))
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(base)))
        base[pos:pos] = data.draw(_KEYWORDS).encode()
    _lint_bytes(bytes(base))
