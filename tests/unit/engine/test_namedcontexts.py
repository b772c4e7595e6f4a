"""``--build-context`` and ``--no-cache-filter`` parsing (mason.engine.namedcontexts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mason.engine.namedcontexts import (
    NamedContext,
    check_buildable,
    context_name,
    image_overrides,
    lookup,
    parse_build_context,
    parse_no_cache_filter,
)
from mason.errors import UsageError


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("alpine", "alpine"),
        ("alpine:latest", "alpine"),
        ("docker.io/library/alpine:latest", "alpine"),
        ("alpine:3.18", "alpine:3.18"),
        ("docker.io/me/app", "me/app"),
        ("localhost:5000/x:1", "localhost:5000/x:1"),
        ("build", "build"),
    ],
)
def test_names_are_compared_as_familiar_references(name: str, key: str) -> None:
    assert context_name(name) == key


def test_docker_image_value() -> None:
    c = parse_build_context("docker.io/library/alpine:3.18=docker-image://reg:5000/bb:1")
    assert c == NamedContext("alpine:3.18", "image", "reg:5000/bb:1")
    assert image_overrides([c, NamedContext("x", "dir", "/tmp")]) == {
        "alpine:3.18": "reg:5000/bb:1"
    }


def test_the_last_of_one_name_wins() -> None:
    cs = [parse_build_context("a=docker-image://one"), parse_build_context("a=docker-image://two")]
    assert image_overrides(cs) == {"a": "two"}


def test_lookup_normalises_the_name_and_ignores_non_references() -> None:
    over = {"alpine": "reg/bb"}
    assert lookup(over, "alpine:latest") == "reg/bb"
    assert lookup(over, "docker.io/library/alpine") == "reg/bb"
    assert lookup(over, "alpine:3") is None
    assert lookup(over, "0") is None
    assert lookup(over, "Not A Ref") is None
    assert lookup({}, "alpine") is None


def test_directory_and_oci_layout_values(tmp_path: Path) -> None:
    assert parse_build_context(f"src={tmp_path}") == NamedContext("src", "dir", str(tmp_path))
    c = parse_build_context("base=oci-layout:///l:v1")
    assert c == NamedContext("base", "oci-layout", "/l:v1")
    with pytest.raises(UsageError, match="not supported by mason yet"):
        check_buildable([c])
    check_buildable([NamedContext("a", "image", "x")])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("noequals", "expected NAME=VALUE"),
        ("=docker-image://x", "expected NAME=VALUE"),
        ("a=", "expected NAME=VALUE"),
        ("Bad=docker-image://x", "invalid --build-context name 'Bad'"),
        ("a=docker-image://x y", "invalid --build-context"),
        ("a=s3://bucket/x", "unsupported scheme 's3'"),
        ("a=target:base", "buildx bake only"),
        ("a=/no/such/dir", "is not a directory"),
    ],
)
def test_bad_values_are_usage_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        parse_build_context(text)
    assert info.value.exit_code == 2


def test_no_cache_filter_values() -> None:
    assert parse_no_cache_filter(["a", "B,c", " d , ,e"]) == ("a", "b", "c", "d", "e")
    assert parse_no_cache_filter([]) == ()
