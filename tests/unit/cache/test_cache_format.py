from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.unit.cache.cache_fakes import key

from mason.cache.format import (
    ZERO_TIME,
    CacheConfig,
    CacheFormatError,
    CacheInput,
    CacheLayer,
    CacheRecord,
    CacheResult,
    normalize_cache_config,
    parse_cache_config,
    rfc3339_nano,
    serialize_cache_config,
)
from mason.digest import Digest


def _buildkit_configs(data: Path) -> list[Path]:
    found = sorted(data.glob("registry-documents/*cacheconfig*.json"))
    for index in sorted(data.glob("compression/*/index.json")):
        for blob in sorted((index.parent / "blobs" / "sha256").iterdir()):
            if blob.read_bytes()[:10] == b'{"layers":':
                found.append(blob)
    return found


def test_every_buildkit_config_parses_and_reserialises_byte_for_byte(testdata: Path) -> None:
    paths = _buildkit_configs(testdata)
    assert len(paths) >= 9
    for path in paths:
        raw = path.read_bytes()
        config = parse_cache_config(raw)
        assert config.layers and config.records
        assert serialize_cache_config(config) == raw, path
        # BuildKit already sorted it: our normalisation agrees with its order
        assert serialize_cache_config(normalize_cache_config(config)) == raw, path


def test_buildkit_max_config_facts(testdata: Path) -> None:
    raw = (
        testdata / "registry-documents/buildkit-v0.11.6-cacheconfig-mode-max.cold.json"
    ).read_bytes()
    config = parse_cache_config(raw)
    doc = json.loads(raw)
    assert (len(config.layers), len(config.records)) == (10, 14)
    # an omitted parent means 0, -1 means none
    assert "parent" not in doc["layers"][1] and config.layers[1].parent == 0
    assert config.layers[3].parent == -1
    # several alternative links for one input, and selectors, survive
    multi = [r for r in config.records if any(len(inp) > 1 for inp in r.inputs)]
    assert multi
    assert any(link.selector for r in config.records for inp in r.inputs for link in inp)
    chains = [config.chain(r.results[0].layer) for r in config.records if r.results]
    assert all(config.layers[c[0]].parent == -1 for c in chains)


def test_reader_accepts_lowercase_createdat_and_ignores_unknown_fields() -> None:
    raw = json.dumps(
        {
            "layers": [{"blob": key("a"), "parent": -1}, {"blob": key("b")}],
            "records": [
                {"digest": key("r0"), "future": 1},
                {
                    "layers": [{"layer": 1, "createdat": "2021-07-02T17:08:09.095229615+01:00"}],
                    "digest": key("r1"),
                    "inputs": [[{"link": 0}]],
                },
            ],
            "somethingNew": True,
        }
    ).encode()
    config = parse_cache_config(raw)
    assert config.records[1].results == (CacheResult(1, "2021-07-02T17:08:09.095229615+01:00"),)
    assert config.chain(1) == (0, 1)
    out = serialize_cache_config(config)
    assert b'"createdAt"' in out and b"createdat" not in out and b"future" not in out


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"layers": [{"blob": "sha256:" + "a" * 64, "parent": 5}]}, "out of range"),
        ({"layers": [{"blob": "sha256:" + "a" * 64}]}, "looping parent chain"),  # parent 0 = itself
        ({"layers": [{"parent": -1}]}, "has no blob"),
        ({"records": [{"digest": "nope"}]}, "invalid digest"),
        ({"records": [{"digest": "sha256:" + "a" * 64, "inputs": [[]]}]}, "empty input list"),
        (
            {"records": [{"digest": "sha256:" + "a" * 64, "inputs": [[{"link": 0}]]}]},
            "looping record",
        ),
        ({"records": [{"digest": "sha256:" + "a" * 64, "layers": [{"layer": 0}]}]}, "out of range"),
        (
            {"records": [{"digest": "sha256:" + "a" * 64, "inputs": [[{"link": "0"}]]}]},
            "expected an integer",
        ),
        ([], "must be a JSON object"),
    ],
)
def test_invalid_configs_say_what_and_where(doc: object, fragment: str) -> None:
    with pytest.raises(CacheFormatError) as info:
        parse_cache_config(json.dumps(doc).encode())
    assert fragment in str(info.value)


def test_not_json() -> None:
    with pytest.raises(CacheFormatError, match="not valid JSON"):
        parse_cache_config(b"\x1f\x8b garbage")


def test_go_field_rules_on_write() -> None:
    config = CacheConfig(
        (CacheLayer(key("base"), -1), CacheLayer(key("top"), 0)),
        (
            CacheRecord(key("root")),
            CacheRecord(
                key("step"),
                (CacheResult(1, ZERO_TIME),),
                (),
                ((CacheInput(0, "sel"),), (CacheInput(0),)),
            ),
        ),
    )
    doc = json.loads(serialize_cache_config(config))
    assert doc["layers"][0] == {"blob": key("base"), "parent": -1}
    assert doc["layers"][1] == {"blob": key("top")}  # parent 0 omitted
    assert list(doc["records"][1]) == ["layers", "digest", "inputs"]
    assert doc["records"][1]["inputs"] == [[{"selector": "sel", "link": 0}], [{"link": 0}]]
    assert doc["records"][1]["layers"] == [{"layer": 1, "createdAt": "0001-01-01T00:00:00Z"}]
    assert doc["records"][0] == {"digest": key("root")}
    assert serialize_cache_config(CacheConfig()) == b"{}"


def test_normalise_is_independent_of_input_order() -> None:
    base, mid, top = key("base"), key("mid"), key("top")
    a = CacheConfig(
        (CacheLayer(base, -1), CacheLayer(mid, 0), CacheLayer(top, 1), CacheLayer(top, 0)),
        (
            CacheRecord(key("r-root")),
            CacheRecord(
                key("r-mid"), (CacheResult(1, "2025-01-01T00:00:00Z"),), (), ((CacheInput(0),),)
            ),
            CacheRecord(
                key("r-top"), (CacheResult(2, "2025-01-01T00:00:01Z"),), (), ((CacheInput(1),),)
            ),
            CacheRecord(
                key("r-other"), (CacheResult(3, "2025-01-01T00:00:02Z"),), (), ((CacheInput(0),),)
            ),
        ),
    )
    # the same content, listed in reverse
    rev_layers = tuple(reversed(a.layers))
    remap = {0: 3, 1: 2, 2: 1, 3: 0}
    rev_layers = tuple(
        CacheLayer(layer.blob, remap[layer.parent] if layer.parent != -1 else -1)
        for layer in rev_layers
    )
    rmap = {0: 3, 1: 2, 2: 1, 3: 0}
    rev_records = tuple(
        CacheRecord(
            r.digest,
            tuple(CacheResult(remap[x.layer], x.created_at) for x in r.results),
            (),
            tuple(
                tuple(CacheInput(rmap[link.link], link.selector) for link in inp)
                for inp in r.inputs
            ),
        )
        for r in reversed(a.records)
    )
    b = CacheConfig(rev_layers, rev_records)
    out_a = serialize_cache_config(normalize_cache_config(a))
    out_b = serialize_cache_config(normalize_cache_config(b))
    assert out_a == out_b
    normal = normalize_cache_config(a)
    assert [r.digest for r in normal.records] == sorted(r.digest for r in a.records)
    # the same blob with two parents stays two layers
    assert sum(1 for layer in normal.layers if layer.blob == top) == 2


def test_normalise_merges_duplicates_and_keeps_newest_result() -> None:
    blob = key("blob")
    config = CacheConfig(
        (CacheLayer(blob, -1), CacheLayer(blob, -1)),
        (
            CacheRecord(key("r"), (CacheResult(0, "2024-01-01T00:00:00Z"),)),
            CacheRecord(key("r"), (CacheResult(1, "2025-01-01T00:00:00Z"),)),
        ),
    )
    normal = normalize_cache_config(config)
    assert normal.layers == (CacheLayer(blob, -1),)
    assert normal.records == (CacheRecord(key("r"), (CacheResult(0, "2025-01-01T00:00:00Z"),)),)


def test_steps_extension_round_trips_and_buildkit_ignores_shape() -> None:
    config = CacheConfig(
        (CacheLayer(key("l"), -1),),
        (CacheRecord(key("r"), (CacheResult(0),)),),
        {key("r"): "[2/3] RUN make"},
    )
    raw = serialize_cache_config(config)
    assert json.loads(raw)["mason.steps"] == {key("r"): "[2/3] RUN make"}
    assert parse_cache_config(raw).steps == {key("r"): "[2/3] RUN make"}


def test_rfc3339_nano_matches_go() -> None:
    assert rfc3339_nano(0) == "1970-01-01T00:00:00Z"
    assert rfc3339_nano(1625245689_095229615) == "2021-07-02T17:08:09.095229615Z"
    assert rfc3339_nano(1625245689_500000000) == "2021-07-02T17:08:09.5Z"
    assert Digest(key("x")).startswith("sha256:")
