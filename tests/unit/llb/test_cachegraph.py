"""Chain keys (mason.llb.cachegraph) against BuildKit v0.32.2's exported caches.

The chain keys mason derives for each golden build's steps -- record digests from the
cache maps, links from the ops' inputs, content roots for checksummed inputs, both keys of
an image source -- must be the chain keys rebuilt from the links of BuildKit's exported
cache config: that checks the record digests *and* the graph, as BuildKit's importer walks it.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from tests.unit.llb import golden

from mason.digest import Digest
from mason.llb import pb
from mason.llb.cachegraph import (
    MAX_KEYS_PER_RECORD,
    CacheGraphError,
    Link,
    Vertex,
    chain_key,
    chain_keys,
    graph_chain_keys,
    record_chain_keys,
)
from mason.llb.cachemap import CacheMap, Selector
from mason.llb.keys import (
    ContentRoot,
    content_key,
    http_source_key,
    image_source_keys,
    record_digest,
)

Keys = dict[tuple[str, int], set[Digest]]


def _source_keys(case: str, op: pb.Op) -> set[Digest]:
    src = op.source
    assert src is not None
    if src.identifier.startswith("docker-image://"):
        manifest = src.identifier.rsplit("@", 1)[1]
        diff_ids = golden._image_config(manifest)["rootfs"]["diff_ids"]
        maps = image_source_keys(manifest, op.platform or golden.PLATFORM, diff_ids)
    elif src.identifier.startswith(("http://", "https://")):
        attrs = src.attrs
        maps = (http_source_key(attrs["http.filename"], attrs["http.checksum"]),)
    else:
        return set()  # the local context: only ever read through content keys
    return {chain_key(record_digest(cm.digest, 0), []) for cm in maps}


def step_chain_keys(case: str, from_dockerfile: bool = False) -> Keys:
    """Every step output's chain keys, as mason computes them for the golden build's ops
    (llb.json's, or with ``from_dockerfile`` those ``plan_llb`` makes of the Dockerfile)."""
    steps, _ = golden.planned_steps(case) if from_dockerfile else golden.llb(case)

    def content_of(
        v: Vertex, index: int, selectors: tuple[Selector, ...], maps: Mapping[str, CacheMap]
    ) -> ContentRoot:
        src_id, out = v.inputs[index]
        src = steps[src_id].op.source
        if src is not None and src.identifier == "local://context":
            return content_key(golden.context_tree(case, src), selectors)
        return content_key(golden.output_tree(case, steps[src_id], dict(maps), out), selectors)

    vertices = [Vertex(s.id, s.op, s.inputs) for s in (steps[i] for i in _topological(steps))]
    outputs = {sid: golden._outputs(sid, steps) for sid in steps}
    return graph_chain_keys(
        vertices, outputs, golden.PLATFORM, lambda v: _source_keys(case, v.op), content_of
    )


def _topological(steps: dict[str, golden.Step]) -> list[str]:
    order: list[str] = []
    seen: set[str] = set()

    def visit(sid: str) -> None:
        if sid in seen:
            return
        seen.add(sid)
        for dep, _ in steps[sid].inputs:
            visit(dep)
        order.append(sid)

    for sid in steps:
        visit(sid)
    return order


@pytest.mark.parametrize("from_dockerfile", [False, True], ids=["llb.json", "plan_llb"])
@pytest.mark.parametrize("case", golden.model_cases())
def test_every_exported_result_is_reached_by_a_step(case: str, from_dockerfile: bool) -> None:
    config = golden.cache_config(case)
    exported = record_chain_keys(config)
    ours = step_chain_keys(case, from_dockerfile)
    mine = set().union(*ours.values())
    results = [i for i, r in enumerate(config["records"]) if r.get("layers") or r.get("results")]
    assert results
    unreached = [config["records"][i]["digest"] for i in results if not exported[i] & mine]
    assert unreached == []


@pytest.mark.parametrize("from_dockerfile", [False, True], ids=["llb.json", "plan_llb"])
@pytest.mark.parametrize("case", golden.model_cases())
def test_every_op_step_is_in_the_exported_graph(case: str, from_dockerfile: bool) -> None:
    steps, _ = golden.planned_steps(case) if from_dockerfile else golden.llb(case)
    exported = set().union(*record_chain_keys(golden.cache_config(case)))
    ours = step_chain_keys(case, from_dockerfile)
    missing = [
        (sid, out)
        for (sid, out), keys in ours.items()
        if steps[sid].op.source is None and not keys & exported
    ]
    assert missing == []


def test_alternatives_give_one_key_each_and_a_changed_link_another() -> None:
    a, b = chain_key("sha256:a", []), chain_key("sha256:b", [])
    config = {
        "records": [
            {"digest": "sha256:a"},
            {"digest": "sha256:b"},
            {"digest": "sha256:r", "inputs": [[{"link": 0}, {"link": 1, "selector": "sha256:s"}]]},
        ]
    }
    keys = record_chain_keys(config)
    assert keys[2] == {
        chain_key("sha256:r", [Link(0, "", a)]),
        chain_key("sha256:r", [Link(0, "sha256:s", b)]),
    }
    # The same record digest over another input, or another selector, is another key.
    assert chain_key("sha256:r", [Link(0, "sha256:s", a)]) not in keys[2]
    assert chain_key("sha256:r", []) not in keys[2]


def test_an_input_no_alternative_reaches_matches_nothing() -> None:
    assert chain_keys("sha256:r", [[("", set())]]) == set()


def test_many_alternatives_are_capped() -> None:
    many = [("", {chain_key(f"sha256:{i}", []) for i in range(40)})]
    assert len(chain_keys("sha256:r", [many, many])) == MAX_KEYS_PER_RECORD


@pytest.mark.parametrize(
    ("records", "what"),
    [
        ("x", "'records' is not a list"),
        ([{"inputs": []}], "record 0 has no digest"),
        ([{"digest": "sha256:a", "inputs": [[{"link": 0}]]}], "record 0 links to itself"),
        (
            [{"digest": "sha256:a", "inputs": [[{"link": 5}]]}],
            "record 0 input 0 links to no record",
        ),
        ([{"digest": "sha256:a", "inputs": [[{"link": True}]]}], "links to no record"),
        ([{"digest": "sha256:a", "inputs": ["x"]}], "record 0 input 0 is not a list"),
        (
            [
                {"digest": "sha256:a", "inputs": [[{"link": 1}]]},
                {"digest": "sha256:b", "inputs": [[{"link": 0}]]},
            ],
            "links to itself through its inputs",
        ),
    ],
)
def test_a_malformed_config_is_a_clear_error(records: object, what: str) -> None:
    with pytest.raises(CacheGraphError, match=what):
        record_chain_keys({"records": records})
