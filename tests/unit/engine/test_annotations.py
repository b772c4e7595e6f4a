"""--annotation and annotation*.KEY output attributes (mason.engine.annotations), as buildx/BuildKit."""

from __future__ import annotations

import pytest

from mason.engine.annotations import Annotation, parse_annotation_flag, resolve_annotations
from mason.engine.options import outputs_for, parse_output
from mason.errors import UsageError
from mason.oci.platform import Platform

AMD64 = Platform("linux", "amd64")


def test_flag_forms() -> None:
    assert parse_annotation_flag("k=v=w") == [Annotation("manifest", None, "k", "v=w")]
    got = parse_annotation_flag("manifest[linux/amd64,linux/arm64],manifest-descriptor:k=v")
    assert [(a.level, str(a.platform) if a.platform else None) for a in got] == [
        ("manifest", "linux/amd64"),
        ("manifest", "linux/arm64"),
        ("manifest-descriptor", None),
    ]


@pytest.mark.parametrize("text", ["novalue", "=v", "bogus:k=v", "manifest:=v", "manifest[x]:k=v"])
def test_bad_flags_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_annotation_flag(text)


def test_output_attributes_and_flags_resolve_later_wins() -> None:
    out = parse_output("type=oci,dest=x.tar,annotation.a=1,annotation-manifest-descriptor.d=2")
    (out,) = outputs_for((), False, [out], parse_annotation_flag("a=3"))
    got = resolve_annotations(out.annotations, AMD64, oci=True, where="w")
    assert (got.manifest, got.descriptor) == ({"a": "3"}, {"d": "2"})
    with pytest.raises(UsageError, match="unknown attribute"):
        parse_output("type=local,dest=d,annotation.a=1")
    with pytest.raises(UsageError, match="unrecognized annotation type"):
        parse_output("type=oci,dest=x.tar,annotation-bogus.a=1")


@pytest.mark.parametrize(
    ("text", "oci", "why"),
    [
        ("index:a=1", True, "single platform"),
        ("index-descriptor:a=1", True, "single platform"),
        ("manifest[linux/s390x]:a=1", True, "no platform linux/s390x"),
        ("manifest-descriptor:a=1", False, "oci-mediatypes=false"),
    ],
)
def test_what_one_platform_export_cannot_write_is_refused(text: str, oci: bool, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        resolve_annotations(parse_annotation_flag(text), AMD64, oci=oci, where="w")


def test_several_platforms_take_index_annotations_and_pick_their_own() -> None:
    amd, arm = Platform("linux", "amd64"), Platform("linux", "arm64")
    notes = parse_annotation_flag("index:org.x=idx") + parse_annotation_flag(
        "manifest[linux/arm64]:org.y=arm"
    )
    notes += parse_annotation_flag("index-descriptor:org.z=d")
    got_arm = resolve_annotations(notes, arm, oci=True, where="-o", built=(amd, arm))
    got_amd = resolve_annotations(notes, amd, oci=True, where="-o", built=(amd, arm))
    assert got_arm.manifest == {"org.y": "arm"} and got_amd.manifest == {}
    assert got_arm.index == {"org.x": "idx"} and got_arm.index_descriptor == {"org.z": "d"}
    with pytest.raises(UsageError, match="oci-mediatypes=false"):
        resolve_annotations(notes, amd, oci=False, where="-o", built=(amd, arm))
    with pytest.raises(UsageError, match="no platform linux/s390x"):
        resolve_annotations(
            parse_annotation_flag("manifest[linux/s390x]:a=1"),
            amd,
            oci=True,
            where="-o",
            built=(amd, arm),
        )
