from __future__ import annotations

import pytest

from mason.oci.errors import InvalidReferenceError
from mason.oci.reference import Reference

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("alpine", "docker.io", "library/alpine", "latest", None),
        ("alpine:3.19", "docker.io", "library/alpine", "3.19", None),
        ("library/alpine", "docker.io", "library/alpine", "latest", None),
        ("user/app", "docker.io", "user/app", "latest", None),
        ("docker.io/alpine", "docker.io", "library/alpine", "latest", None),
        ("index.docker.io/user/app:v1", "docker.io", "user/app", "v1", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/app", "localhost:5000", "app", "latest", None),
        ("127.0.0.1:5001/base/busybox:latest", "127.0.0.1:5001", "base/busybox", "latest", None),
        ("ghcr.io/o/r/deep/path:t_1.2-x", "ghcr.io", "o/r/deep/path", "t_1.2-x", None),
        (f"ghcr.io/o/r@{D}", "ghcr.io", "o/r", None, D),
        (f"ghcr.io/o/r:v2@{D}", "ghcr.io", "o/r", "v2", D),
        (f"alpine@{D}", "docker.io", "library/alpine", None, D),
        (
            "registry.example.com:443/a__b/c-d.e:x",
            "registry.example.com:443",
            "a__b/c-d.e",
            "x",
            None,
        ),
        ("[::1]:5000/app:tag", "[::1]:5000", "app", "tag", None),
    ],
)
def test_parse_table(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    # str() is the fully qualified form and parses back to the same reference
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("Alpine", "lowercase"),
        ("alpine:", "invalid tag"),
        ("alpine:-x", "invalid tag"),
        ("alpine@sha256:abc", "invalid digest"),
        ("a//b", "empty path component"),
        ("https://ghcr.io/o/r", "scheme"),
        ("ghcr.io/o/r_", "invalid repository path component"),
        ("ghcr.io/o/-r", "invalid repository path component"),
        (" alpine", "whitespace"),
        ("ghcr.io/" + "a" * 300, "longer than"),
    ],
)
def test_invalid_references_say_why(text: str, why: str) -> None:
    with pytest.raises(InvalidReferenceError, match=why) as info:
        Reference.parse(text)
    assert repr(text) in str(info.value)
    assert info.value.exit_code == 2


def test_no_default_tag_when_asked() -> None:
    assert Reference.parse("ghcr.io/o/r", default_tag=False).tag is None


def test_helpers() -> None:
    ref = Reference.parse("alpine:3")
    assert ref.api_host == "registry-1.docker.io"
    assert ref.familiar == "alpine:3"
    assert ref.identifier == "3"
    assert str(ref.repository_ref) == "docker.io/library/alpine"
    pinned = ref.with_digest(D)
    assert pinned.identifier == D
    assert str(pinned) == f"docker.io/library/alpine:3@{D}"
    assert ref.with_tag("edge").tag == "edge"
    assert Reference.parse("localhost:5000/a").api_host == "localhost:5000"
    with pytest.raises(InvalidReferenceError):
        ref.with_tag("bad tag")
    with pytest.raises(InvalidReferenceError):
        ref.with_digest("sha256:nope")
