"""Platforms as containerd normalises and matches them (``platforms.Only``), and ``--platform``
lists as buildx reads them."""

from __future__ import annotations

import pytest

from mason.digest import sha256_bytes
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.manifest import build_index
from mason.oci.platform import Platform, PlatformError, parse_platforms, platform_vector


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/aarch64", "linux/arm64"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/armel", "linux/arm/v6"),
        ("linux/arm/6", "linux/arm/v6"),
        ("linux/amd64/v1", "linux/amd64"),
        ("linux/x86_64/v3", "linux/amd64/v3"),
        ("linux/i386", "linux/386"),
        ("arm64", "linux/arm64"),
    ],
)
def test_parse_normalises_as_containerd(text: str, want: str) -> None:
    assert str(Platform.parse(text)) == want


@pytest.mark.parametrize("text", ["x", "linux", "linux/", "a/b/c/d"])
def test_bad_platforms_are_refused(text: str) -> None:
    with pytest.raises(PlatformError):
        Platform.parse(text)


def test_vectors_are_containerds() -> None:
    def vec(t: str) -> list[str]:
        return [str(p) for p in platform_vector(Platform.parse(t))]

    assert vec("linux/amd64/v3") == ["linux/amd64/v3", "linux/amd64/v2", "linux/amd64", "linux/386"]
    assert vec("linux/arm/v7") == ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]
    assert vec("linux/arm64") == [
        "linux/arm64",
        "linux/arm/v8",
        "linux/arm/v7",
        "linux/arm/v6",
        "linux/arm/v5",
    ]
    assert vec("linux/arm64/v8.2")[:3] == ["linux/arm64/v8.2", "linux/arm64/v8.1", "linux/arm64"]


def _index(*platforms: Platform) -> object:
    entries = [
        Descriptor(mt.OCI_MANIFEST, sha256_bytes(str(p).encode()), 1, {}, p) for p in platforms
    ]
    return build_index(entries)


def _pick(index: object, want: str) -> str | None:
    entry = index.for_platform(Platform.parse(want))  # type: ignore[attr-defined]
    return str(entry.platform) if entry is not None else None


def test_an_index_entry_is_picked_by_preference_not_position() -> None:
    index = _index(
        Platform("linux", "arm", "v6"),
        Platform("linux", "arm", "v7"),
        Platform("linux", "arm64", "v8"),  # as written by some tools: arm64/v8 is arm64
        Platform("linux", "386"),
        Platform("linux", "amd64"),
    )
    assert _pick(index, "linux/arm64") == "linux/arm64/v8"
    assert _pick(index, "linux/arm64/v8") == "linux/arm64/v8"
    assert _pick(index, "linux/arm/v7") == "linux/arm/v7"
    assert _pick(index, "linux/arm") == "linux/arm/v7"
    assert _pick(index, "linux/amd64") == "linux/amd64"
    assert _pick(index, "linux/s390x") is None


def test_arm_v7_falls_back_to_v6_and_amd64_to_386() -> None:
    index = _index(Platform("linux", "arm", "v6"), Platform("linux", "386"))
    assert _pick(index, "linux/arm/v7") == "linux/arm/v6"
    assert _pick(index, "linux/arm64") == "linux/arm/v6"
    assert _pick(index, "linux/amd64") == "linux/386"
    assert _pick(index, "linux/arm/v5") is None


def test_platform_lists_are_comma_separated_repeated_and_deduplicated() -> None:
    got = parse_platforms(["linux/amd64,linux/arm64", "linux/arm64/v8", " linux/arm/v7 "])
    assert [str(p) for p in got] == ["linux/amd64", "linux/arm64", "linux/arm/v7"]
    assert [p.dir_name for p in got] == ["linux_amd64", "linux_arm64", "linux_arm_v7"]
