"""mason.llb.gojson writes what Go's encoding/json writes."""

from __future__ import annotations

import json
from collections.abc import Iterable

import pytest
from tests.unit.llb import golden

from mason.llb.gojson import go_json


class _Ordered:
    """A JSON object as a Go struct whose fields are in the order given (nothing omitted)."""

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        self.pairs = pairs

    def go_json_fields(self) -> Iterable[tuple[str, object, bool]]:
        return ((k, v, False) for k, v in self.pairs)


@pytest.mark.parametrize("case", golden.CASES)
def test_every_json_preimage_round_trips(case: str) -> None:
    for entry in golden.keys(case).values():
        if entry.type != "json":
            continue
        value = json.loads(entry.data, object_pairs_hook=_Ordered)
        assert go_json(value) == entry.data


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a<b>&c", b'"a\\u003cb\\u003e\\u0026c"'),
        ("\u2028\u2029", b'"\\u2028\\u2029"'),
        (
            "tab\t nl\n cr\r bs\b ff\f nul\x00 us\x1f",
            b'"tab\\t nl\\n cr\\r bs\\b ff\\f nul\\u0000 us\\u001f"',
        ),
        ('q"\\', b'"q\\"\\\\"'),
        ("é✓", '"é✓"'.encode()),
        (b"\x00\xff", b'"AP8="'),
        (None, b"null"),
        ([], b"[]"),
        ({"b": 1, "a": [True, False]}, b'{"a":[true,false],"b":1}'),
        (-1, b"-1"),
        (1.5, b"1.5"),
        (1e21, b"1e+21"),
        (1e20, b"100000000000000000000"),
        (1e-7, b"1e-7"),
        (0.000001, b"0.000001"),
        (-0.0, b"-0"),
    ],
)
def test_go_json_values(value: object, expected: bytes) -> None:
    assert go_json(value) == expected


def test_omitempty_keeps_a_present_empty_struct() -> None:
    from mason.llb import pb

    mount = pb.Mount(
        input=-1, dest="/c", output=-1, mount_type=pb.MountType.CACHE, cache_opt=pb.CacheOpt()
    )
    assert go_json(mount) == b'{"input":-1,"dest":"/c","output":-1,"mountType":3,"cacheOpt":{}}'
    assert go_json(pb.UserOpt(by_id=0)) == b'{"User":{}}'
