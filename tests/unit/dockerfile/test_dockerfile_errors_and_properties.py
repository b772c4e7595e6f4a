"""DockerfileError details, typed API spot checks, and hypothesis properties:
whatever the input, the only exception the frontend raises is DockerfileError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.dockerfile.strategies import _KEYWORDS, _LINES, CORPUS, PROPS

from mason.dockerfile import (
    DockerfileError,
    HealthcheckCommand,
    RunCommand,
    expand_command,
    parse_dockerfile,
    render_debug,
)
from mason.dockerfile.render import TEST_ENV
from mason.errors import DiagnosticError


def test_error_carries_location_line_and_hint() -> None:
    with pytest.raises(DockerfileError) as info:
        parse_dockerfile(b"FROM alpine\n  cOPYY a b\n", path="ctx/Dockerfile.dev")
    err = info.value
    assert isinstance(err, DiagnosticError)
    assert err.exit_code == 2
    assert (err.file, err.line, err.lines) == ("ctx/Dockerfile.dev", 2, (2,))
    assert err.source_line == "  cOPYY a b"
    assert err.hint == "did you mean copy?"  # mixed case: BuildKit suggests lowercase
    assert "ctx/Dockerfile.dev:2" in str(err)


def test_unknown_flag_suggests() -> None:
    with pytest.raises(DockerfileError, match=r"unknown flag: --chwon \(did you mean chown\?\)"):
        parse_dockerfile(b"FROM a\nCOPY --chwon=1 a b\n")


def test_typed_run_and_mounts() -> None:
    d = parse_dockerfile(
        b"FROM a\nRUN --network=none --mount=type=cache,target=/c,id=$ID,sharing=locked,mode=0700"
        b" --mount=type=secret,id=tok,required make\n"
    )
    run = d.stages[0].commands[0]
    assert isinstance(run, RunCommand)
    assert run.network == "none" and run.flags_used == ("mount", "network")
    expanded = expand_command(run, {"ID": "gomod"})
    assert isinstance(expanded, RunCommand) and expanded.mounts is not None
    cache, secret = expanded.mounts
    assert (cache.type, cache.target, cache.cache_id, cache.cache_sharing, cache.mode) == (
        "cache", "/c", "gomod", "locked", 0o700,
    )  # fmt: skip
    assert not cache.read_only
    assert (secret.type, secret.cache_id, secret.required, secret.read_only) == (
        "secret",
        "tok",
        True,
        True,
    )


def test_bad_network_and_mount_type() -> None:
    with pytest.raises(DockerfileError, match='invalid network mode "bridge"'):
        parse_dockerfile(b"FROM a\nRUN --network=bridge true\n")
    d = parse_dockerfile(b"FROM a\nRUN --mount=type=cahce,target=/x true\n")
    with pytest.raises(
        DockerfileError, match=r"unsupported mount type \"cahce\" \(did you mean cache\?\)"
    ):
        expand_command(d.stages[0].commands[0], {})


def test_healthcheck_options() -> None:
    d = parse_dockerfile(
        b'FROM a\nHEALTHCHECK --interval=1m30s --timeout=500ms --retries=2 CMD ["curl", "x"]\n'
    )
    hc = d.stages[0].commands[0]
    assert isinstance(hc, HealthcheckCommand)
    assert hc.test == ("CMD", "curl", "x")
    assert (hc.interval, hc.timeout, hc.retries) == (90_000_000_000, 500_000_000, 2)
    with pytest.raises(DockerfileError, match="cannot be less than 1ms"):
        parse_dockerfile(b"FROM a\nHEALTHCHECK --interval=10us CMD true\n")
    with pytest.raises(DockerfileError, match="invalid duration"):
        parse_dockerfile(b"FROM a\nHEALTHCHECK --timeout=soon CMD true\n")


def test_syntax_and_escape_directives() -> None:
    d = parse_dockerfile(b"# syntax=docker/dockerfile:1.4 --x\n# escape=`\nFROM a\nRUN a `\n  b\n")
    assert d.syntax is not None and d.syntax.syntax == "docker/dockerfile:1.4"
    assert d.escape == "`"
    assert d.stages[0].commands[0].code == "RUN a   b"


def test_line_too_long_is_an_error() -> None:
    with pytest.raises(DockerfileError, match="greater than max allowed size"):
        parse_dockerfile(b"FROM a\nRUN " + b"x" * 70000 + b"\n")


def _check(data: bytes) -> None:
    try:
        d = parse_dockerfile(data)
    except DockerfileError:
        return
    for s in d.stages:
        for c in s.commands:
            with contextlib.suppress(DockerfileError):
                expand_command(c, dict(TEST_ENV), d.escape)
    render_debug(data)


# The run is bounded by max_examples; the per-example deadline is generous because CI shares two
# cores with registry and runc tests. Parse speed itself is measured in bench/bench_parse.py.


@PROPS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_dockerfile_errors(data: bytes) -> None:
    _check(data)


@PROPS
@given(_LINES)
def test_dockerfile_like_text_raises_only_dockerfile_errors(text: str) -> None:
    _check(text.encode("utf-8", "surrogatepass"))


@PROPS
@given(st.data())
def test_mutated_corpus_files_raise_only_dockerfile_errors(data: st.DataObject) -> None:
    assert CORPUS, "golden corpus missing"
    base = bytearray(data.draw(st.sampled_from(CORPUS)))
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["insert", "delete", "replace", "splice"]))
        pos = data.draw(st.integers(0, len(base)))
        if op == "insert":
            base[pos:pos] = data.draw(_KEYWORDS).encode()
        elif op == "delete":
            del base[pos : pos + data.draw(st.integers(1, 20))]
        elif op == "replace" and pos < len(base):
            base[pos] = data.draw(st.integers(0, 255))
        else:
            other = data.draw(st.sampled_from(CORPUS))
            cut = data.draw(st.integers(0, len(other)))
            base[pos:pos] = other[cut : cut + 80]
    _check(bytes(base))


def test_the_same_bytes_parsed_again_give_the_first_result_and_others_a_new_one() -> None:
    # the early registry reads and the build parse one Dockerfile: the second parse is free
    from mason.dockerfile import parse_dockerfile

    data = b"FROM busybox AS base\nRUN echo hi\n"
    first = parse_dockerfile(data, "Dockerfile")
    assert parse_dockerfile(data, "Dockerfile") is first
    assert parse_dockerfile(data, "other.Dockerfile") is not first
    changed = parse_dockerfile(data + b"RUN echo more\n", "Dockerfile")
    assert len(changed.stages[0].commands) == 2
