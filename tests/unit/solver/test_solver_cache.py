"""Cache lookups: source order, hit attribution, lazy hits, --no-cache, the solved graph."""

from __future__ import annotations

import threading

from tests.unit.solver.fakes import CountingSource, Handle, RecordingProgress, vertex

from mason.digest import Digest
from mason.solver import CacheKey, CacheSource, MemoryStore, Solver, Vertex, VertexState


def _stage() -> dict[str, Vertex[Handle]]:
    base = vertex("[1/4] FROM busybox")
    copy = vertex("[2/4] COPY . /src", base, content="ctx")
    build = vertex("[3/4] RUN make", copy)
    final = vertex("[4/4] RUN make install", build)
    return {"base": base, "copy": copy, "build": build, "final": final}


def _keys() -> dict[str, Digest]:
    """Keys of a fresh _stage(), by short name, from a solve with no caches."""
    stage = _stage()
    graph = Solver[Handle](max_workers=2).solve([stage["final"]])
    return {name: graph.get(v).key.digest for name, v in stage.items()}


def _handles(keys: dict[str, Digest], tag: str, *names: str) -> dict[Digest, Handle]:
    return {keys[n]: Handle(f"{tag}:{n}") for n in names}


def test_sources_are_asked_in_order_and_the_first_hit_wins() -> None:
    """Local first, then each import in order; the hit names the source that served it."""
    keys = _keys()
    local: MemoryStore[Handle] = MemoryStore()
    first = CountingSource()  # misses everything
    second = CountingSource(_handles(keys, "second", "final"))
    third = CountingSource(_handles(keys, "third", "final"))
    progress = RecordingProgress()
    stage = _stage()
    graph = Solver[Handle](
        local=local,
        sources=[
            CacheSource("reg/a", first),
            CacheSource("reg/b", second),
            CacheSource("reg/c", third),
        ],
        progress=progress,
        max_workers=2,
    ).solve([stage["final"]])
    assert graph.get(stage["final"]).source == "reg/b"
    assert graph.result_of(stage["final"]).value == "second:final"
    assert keys["final"] in first.lookups
    assert keys["final"] not in third.lookups  # not asked once an earlier source hit
    assert ("[4/4] RUN make install", "reg/b") in progress.of("cached")


def test_the_local_store_is_preferred_over_imports() -> None:
    """A key found locally is never looked up in an imported cache."""
    keys = _keys()
    local: MemoryStore[Handle] = MemoryStore()
    for digest, handle in _handles(keys, "local", "final").items():
        local.record(_solved_key(digest), handle)
    remote = CountingSource(_handles(keys, "remote", "final"))
    stage = _stage()
    graph = Solver[Handle](
        local=local, sources=[CacheSource("remote", remote)], max_workers=2
    ).solve([stage["final"]])
    assert graph.get(stage["final"]).source == "local"
    assert keys["final"] not in remote.lookups


def _solved_key(digest: Digest) -> CacheKey:
    """A CacheKey with a given digest (stores only look at .digest)."""
    return CacheKey(digest=digest, preimage=b"{}", inputs=(), content=None)


def test_each_hit_is_attributed_to_its_own_source() -> None:
    """Different steps may be served by different sources; progress says which served each."""
    keys = _keys()
    local: MemoryStore[Handle] = MemoryStore()
    a = CountingSource(_handles(keys, "a", "base", "copy"))
    b = CountingSource(_handles(keys, "b", "build"))
    progress = RecordingProgress()
    stage = _stage()
    graph = Solver[Handle](
        local=local,
        sources=[CacheSource("a", a), CacheSource("b", b)],
        progress=progress,
        max_workers=2,
    ).solve([stage["final"]])
    assert dict(progress.of("cached")) == {
        "[1/4] FROM busybox": "a",
        "[2/4] COPY . /src": "a",
        "[3/4] RUN make": "b",
    }
    assert progress.names("started") == ["[4/4] RUN make install"]
    assert graph.get(stage["final"]).state is VertexState.EXECUTED
    assert graph.result_of(stage["final"]).value == "[4/4] RUN make install(b:build)"


def test_a_hit_on_the_output_materialises_and_runs_nothing() -> None:
    """When the last step hits, no op runs and no handle anywhere is materialised."""
    keys = _keys()
    handles = _handles(keys, "remote", "base", "copy", "build", "final")
    remote = CountingSource(handles)
    progress = RecordingProgress()
    stage = _stage()
    graph = Solver[Handle](
        sources=[CacheSource("remote", remote)], progress=progress, max_workers=2
    ).solve([stage["final"]])
    assert sum(v.op.calls for v in stage.values()) == 0  # type: ignore[attr-defined]
    assert all(h.materialised == 0 for h in handles.values())
    # Every step still shows CACHED, and exporters get every handle (mode=max).
    assert len(progress.of("cached")) == 4
    assert all(sv.state is VertexState.CACHED and sv.result is not None for sv in graph)


def test_a_miss_on_top_of_a_hit_materialises_only_that_hit() -> None:
    """Only the hit a running op consumes is materialised (by the op); hits below it are not."""
    keys = _keys()
    handles = _handles(keys, "remote", "base", "copy", "build")
    stage = _stage()
    Solver[Handle](sources=[CacheSource("remote", CountingSource(handles))], max_workers=2).solve(
        [stage["final"]]
    )
    assert handles[keys["build"]].materialised == 1
    assert handles[keys["copy"]].materialised == 0
    assert handles[keys["base"]].materialised == 0
    assert stage["final"].op.calls == 1  # type: ignore[attr-defined]


def test_steps_below_a_hit_that_are_not_cached_are_skipped_not_run() -> None:
    """A min-mode cache (only the final step has a result): earlier steps never run and become key-only."""
    keys = _keys()
    stage = _stage()
    graph = Solver[Handle](
        sources=[CacheSource("min", CountingSource(_handles(keys, "min", "final")))], max_workers=2
    ).solve([stage["final"]])
    assert sum(v.op.calls for v in stage.values()) == 0  # type: ignore[attr-defined]
    states = {sv.name: sv.state for sv in graph}
    assert states == {
        "[1/4] FROM busybox": VertexState.SKIPPED,
        "[2/4] COPY . /src": VertexState.SKIPPED,
        "[3/4] RUN make": VertexState.SKIPPED,
        "[4/4] RUN make install": VertexState.CACHED,
    }
    assert all(sv.result is None for sv in graph if sv.state is VertexState.SKIPPED)


def test_an_import_whose_lookup_fails_is_dropped_and_the_build_goes_on() -> None:
    """A broken imported cache is reported once and not asked again; later sources still serve hits."""
    keys = _keys()
    broken = CountingSource(fail=True)
    good = CountingSource(_handles(keys, "good", "build"))
    progress = RecordingProgress()
    stage = _stage()
    graph = Solver[Handle](
        sources=[CacheSource("broken", broken), CacheSource("good", good)],
        progress=progress,
        max_workers=2,
    ).solve([stage["final"]])
    assert len(broken.lookups) == 1
    assert progress.names("source_error") == ["broken"]
    assert graph.get(stage["build"]).source == "good"
    assert graph.get(stage["final"]).state is VertexState.EXECUTED


def test_executed_results_are_recorded_locally_and_import_hits_are_not() -> None:
    """The local store gets every executed result; results served by imports stay where they are."""
    keys = _keys()
    local: MemoryStore[Handle] = MemoryStore()
    stage = _stage()
    Solver[Handle](
        local=local,
        sources=[CacheSource("remote", CountingSource(_handles(keys, "remote", "base", "copy")))],
        max_workers=2,
    ).solve([stage["final"]])
    assert keys["build"] in local and keys["final"] in local
    assert keys["base"] not in local and keys["copy"] not in local


def test_no_cache_reruns_the_vertex_and_its_dependents_only() -> None:
    """ignore_cache reruns a vertex despite a hit, and everything after it; earlier steps stay cached."""
    local: MemoryStore[Handle] = MemoryStore()
    first = _stage()
    Solver[Handle](local=local, max_workers=2).solve([first["final"]])

    base = vertex("[1/4] FROM busybox")
    copy = vertex("[2/4] COPY . /src", base, content="ctx")
    build = vertex("[3/4] RUN make", copy, ignore_cache=True)
    final = vertex("[4/4] RUN make install", build)
    progress = RecordingProgress()
    graph = Solver[Handle](local=local, progress=progress, max_workers=2).solve([final])
    assert [v.op.calls for v in (base, copy, build, final)] == [0, 0, 1, 1]  # type: ignore[attr-defined]
    assert progress.names("cached") == ["[1/4] FROM busybox", "[2/4] COPY . /src"]
    # Keys do not change with --no-cache, and the fresh results replace the old ones.
    assert graph.get(final).key.digest == _keys()["final"]
    assert local.lookup(graph.get(final).key) is graph.result_of(final)


def test_no_cache_on_every_vertex_runs_everything() -> None:
    """--no-cache (every vertex flagged) executes every reachable step even with a full local cache."""
    local: MemoryStore[Handle] = MemoryStore()
    Solver[Handle](local=local, max_workers=2).solve([_stage()["final"]])
    base = vertex(
        "base", definition={"type": "test.op.v0", "name": "[1/4] FROM busybox"}, ignore_cache=True
    )
    top = vertex("[2/4] COPY . /src", base, content="ctx", ignore_cache=True)
    Solver[Handle](local=local, max_workers=2).solve([top])
    assert (base.op.calls, top.op.calls) == (1, 1)  # type: ignore[attr-defined]


def test_reachable_walks_an_output_chain_for_min_mode_export() -> None:
    """reachable(outputs) gives the final chain; vertices of other outputs are left out."""
    stage = _stage()
    other = vertex("other stage", stage["base"])
    graph = Solver[Handle](max_workers=2).solve([stage["final"], other])
    chain = graph.reachable([graph.get(stage["final"])])
    assert [sv.name for sv in chain] == [
        "[1/4] FROM busybox",
        "[2/4] COPY . /src",
        "[3/4] RUN make",
        "[4/4] RUN make install",
    ]
    assert graph.by_key(graph.get(other).key.digest).name == "other stage"
    assert [sv.name for sv in graph.outputs] == ["[4/4] RUN make install", "other stage"]


def test_imported_caches_are_asked_for_every_step_at_once() -> None:
    """A lookup may read the network (a hit's blobs are checked where the cache is): after the
    first step, the others' lookups are under way together. The source lets a lookup answer
    only once the three later steps' lookups have all started (a wait that breaks at 30 s,
    so a one-after-the-other solver fails instead of hanging)."""
    keys = _keys()
    together = threading.Barrier(3)
    hits = _handles(keys, "remote", "base", "copy", "build", "final")

    class WaitingSource(CountingSource):
        def lookup(self, key: CacheKey) -> Handle | None:
            if key.digest != keys["base"]:  # the first step is asked alone
                together.wait(timeout=30)
            return super().lookup(key)

    stage = _stage()
    graph = Solver[Handle](
        sources=[CacheSource("remote", WaitingSource(hits))], max_workers=2
    ).solve([stage["final"]])
    assert all(graph.get(v).state is VertexState.CACHED for v in stage.values())
