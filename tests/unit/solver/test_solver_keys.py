"""Cache keys: the docs/architecture.md §4 formula, stability, sensitivity, preimages and lazy content."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from tests.unit.solver.fakes import FakeOp, Handle, vertex

from mason.digest import Digest, sha256_bytes
from mason.solver import (
    KEY_VERSION,
    CacheMap,
    InvalidCacheMapError,
    SolveError,
    Solver,
    Vertex,
    compute_key,
    key_differences,
)


def _keys(*outputs: Vertex[Handle]) -> dict[str, Digest]:
    graph = Solver[Handle](max_workers=2).solve(list(outputs))
    return {sv.name: sv.key.digest for sv in graph}


def test_key_is_sha256_of_the_documented_canonical_json() -> None:
    """A key is sha256 of {"v", "op", "inputs", "content"} as sorted, compact JSON (docs/architecture.md §4)."""
    op = {"type": "mason.exec.v0", "args": ["sh", "-c", "echo é"], "env": ["A=1"]}
    inputs = [Digest("sha256:" + "a" * 64)]
    key = compute_key(CacheMap(op), inputs, "sha256:" + "c" * 64)
    expected = json.dumps(
        {"v": "mason.v1", "op": op, "inputs": inputs, "content": "sha256:" + "c" * 64},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    assert key.preimage == expected
    assert key.digest == sha256_bytes(expected)
    assert KEY_VERSION == "mason.v1"
    assert key.version == KEY_VERSION
    assert key.op == op
    assert key.inputs == tuple(inputs)


def test_root_without_content_has_null_content_and_no_inputs() -> None:
    """A root op's preimage has an empty input list and content null."""
    key = compute_key(
        CacheMap({"type": "mason.source.v0", "digest": "sha256:" + "1" * 64}), [], None
    )
    decoded = json.loads(key.preimage)
    assert decoded["inputs"] == []
    assert decoded["content"] is None


def _graph(
    base_def: str = "alpine", copy_content: str = "files-1", run_cmd: str = "make", side: str = "x"
) -> dict[str, Vertex[Handle]]:
    base = vertex("base", definition={"type": "test.src.v0", "ref": base_def})
    copy = vertex(
        "copy", base, definition={"type": "test.copy.v0", "dest": "/app"}, content=copy_content
    )
    run = vertex("run", copy, definition={"type": "test.exec.v0", "args": [run_cmd]})
    sibling = vertex("sibling", base, definition={"type": "test.exec.v0", "args": [side]})
    top = vertex("top", run, sibling)
    return {"base": base, "copy": copy, "run": run, "sibling": sibling, "top": top}


def test_same_graph_built_twice_gives_the_same_keys() -> None:
    """Keys depend on definitions only, not on object identity or solve order."""
    assert _keys(_graph()["top"]) == _keys(_graph()["top"])


@pytest.mark.parametrize(
    ("change", "changed"),
    [
        ({"base_def": "debian"}, {"base", "copy", "run", "sibling", "top"}),
        ({"copy_content": "files-2"}, {"copy", "run", "top"}),
        ({"run_cmd": "make test"}, {"run", "top"}),
        ({"side": "y"}, {"sibling", "top"}),
    ],
)
def test_a_change_changes_its_key_and_downstream_keys_only(
    change: dict[str, str], changed: set[str]
) -> None:
    """Changing one vertex's definition or content changes exactly it and its dependents."""
    before = _keys(_graph()["top"])
    after = _keys(_graph(**change)["top"])
    assert {name for name in before if before[name] != after[name]} == changed


def test_input_order_is_part_of_the_key() -> None:
    """Swapping two inputs gives a different key (ops consume inputs by position)."""
    a, b = vertex("a"), vertex("b")
    one = vertex("m", a, b, definition={"type": "test.merge.v0"})
    two = vertex("m", b, a, definition={"type": "test.merge.v0"})
    assert _keys(one)["m"] != _keys(two)["m"]


def test_solved_vertex_input_keys_are_its_inputs_keys() -> None:
    """Each solved vertex's input_keys are the keys of its inputs, in order (the record links)."""
    graph = Solver[Handle](max_workers=2).solve([_graph()["top"]])
    for sv in graph:
        assert sv.input_keys == tuple(i.key.digest for i in sv.inputs)
    top = graph.outputs[0]
    assert [i.name for i in top.inputs] == ["run", "sibling"]


@pytest.mark.parametrize(
    "definition",
    [
        {"args": ["x"]},  # no type
        {"type": 3},
        {"type": "t.v0", "ratio": 0.5},
        {"type": "t.v0", "paths": {"a", "b"}},
        {"type": "t.v0", 1: "x"},
    ],
)
def test_definitions_that_cannot_be_hashed_canonically_are_refused(
    definition: dict[Any, Any],
) -> None:
    """An untyped definition, a float, a set or a non-string key is an error naming the vertex."""
    with pytest.raises(InvalidCacheMapError):
        compute_key(CacheMap(definition), [], None)
    with pytest.raises(SolveError, match="bad op: InvalidCacheMapError"):
        Solver[Handle](max_workers=1).solve([vertex("bad op", definition=definition)])


def test_key_differences_name_the_first_changed_inputs() -> None:
    """A miss is explained by the op fields, inputs and content that differ."""
    in1, in2 = Digest("sha256:" + "1" * 64), Digest("sha256:" + "2" * 64)
    old = compute_key(CacheMap({"type": "t.v0", "env": ["A=1"], "user": "root"}), [in1], "c1")
    new = compute_key(CacheMap({"type": "t.v0", "env": ["A=2"], "workdir": "/"}), [in2], "c2")
    reasons = key_differences(old, new)
    assert reasons == (
        'op.env: ["A=1"] -> ["A=2"]',
        'op.user: removed "root"',
        'op.workdir: added "/"',
        f"input 0: {in1} -> {in2}",
        "content: c1 -> c2",
    )
    assert key_differences(old, old) == ()


def test_content_is_computed_lazily_once_and_after_input_keys() -> None:
    """The content checksum is not computed while building the graph, only for reachable vertices,
    once per vertex however many dependents it has, and only after its inputs have keys."""
    events: list[str] = []
    base_op = FakeOp("base", content="b")
    copy_op = FakeOp("copy", content="files")
    unused_op = FakeOp("unused", content="u")
    for op in (base_op, copy_op, unused_op):
        op.events = events
    base = Vertex(base_op, (), "base")
    copy = Vertex(copy_op, (base,), "copy")
    Vertex(unused_op, (base,), "unused")
    users = [vertex(f"user{i}", copy) for i in range(5)]
    assert events == []  # building the graph computes nothing
    Solver[Handle](max_workers=4).solve(users)
    assert copy_op.content_calls == 1
    assert unused_op.content_calls == 0
    assert (
        events.index("content base") < events.index("cache_map copy") < events.index("content copy")
    )


def test_content_is_not_computed_when_an_input_key_fails() -> None:
    """If a vertex's input cannot get a key, the (expensive) content checksum is never computed."""

    def boom() -> None:
        raise LookupError("no such image")

    base = vertex("base", on_cache_map=boom)
    copy = vertex("copy", base, content="files")
    with pytest.raises(SolveError):
        Solver[Handle](max_workers=2).solve([copy])
    assert copy.op.content_calls == 0  # type: ignore[attr-defined]


def test_content_checksums_of_independent_vertices_run_in_parallel() -> None:
    """Hashing two contexts happens on the pool at the same time, not one after the other."""
    barrier = threading.Barrier(2, timeout=10)

    class HashingOp(FakeOp):
        def cache_map(self, input_keys: Any) -> CacheMap:
            def content() -> str:
                barrier.wait()  # both must be inside content() at once to pass
                return self.name

            return CacheMap(self.definition, content)

    a = Vertex(HashingOp("a"), (), "a")
    b = Vertex(HashingOp("b"), (), "b")
    graph = Solver[Handle](max_workers=2).solve([a, b])
    assert {sv.key.content for sv in graph} == {"a", "b"}
