"""The solver's ``rekey`` hook: a builder's own digests (BuildKit's chain keys) for vertices."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mason.digest import Digest, sha256_bytes
from mason.solver import (
    CacheKey,
    CacheMap,
    CacheSource,
    DeferredKey,
    ExecContext,
    MemoryStore,
    Solver,
    Vertex,
)


class _Op:
    def __init__(self, name: str) -> None:
        self.name = name
        self.runs = 0

    def cache_map(self, input_keys: Sequence[Digest]) -> CacheMap:
        return CacheMap({"type": "test.v0", "name": self.name})

    def execute(self, ctx: ExecContext, inputs: Sequence[str]) -> str:
        self.runs += 1
        return f"{self.name}({','.join(inputs)})"


class _Lookup:
    def __init__(self, results: dict[str, str]) -> None:
        self.results = results
        self.asked: list[tuple[Digest, ...]] = []

    def lookup(self, key: CacheKey) -> str | None:
        self.asked.append(key.lookup_digests)
        return next((self.results[d] for d in key.lookup_digests if d in self.results), None)


def _chain(name: str) -> Digest:
    return sha256_bytes(f"chain {name}".encode())


def _rekey(v: Vertex[str], own_key: Callable[[], CacheKey], inputs: Sequence[CacheKey]) -> CacheKey:
    if v.name == "plain":
        return own_key()
    digest = _chain(v.name)
    return DeferredKey.of(
        digest, [i.digest for i in inputs], own_key, alternatives=(digest, _chain(v.name + "'"))
    )


def test_rekeyed_vertices_are_looked_up_under_every_alternative_and_recorded_under_the_first() -> (
    None
):
    base = Vertex(_Op("base"), name="base")
    top = Vertex(_Op("top"), (base,), name="top")
    remote = _Lookup({_chain("top'"): "from-cache"})
    local: MemoryStore[str] = MemoryStore()
    graph = Solver(local=local, sources=[CacheSource("remote", remote)], rekey=_rekey).solve([top])
    assert graph.get(top).result == "from-cache"
    assert graph.get(top).key.digest == _chain("top")
    assert (_chain("top"), _chain("top'")) in remote.asked
    assert base.op.runs == 0  # type: ignore[attr-defined]


def test_a_vertex_the_builder_leaves_alone_keeps_its_own_key_and_preimage() -> None:
    plain = Vertex(_Op("plain"), name="plain")
    local: MemoryStore[str] = MemoryStore()
    graph = Solver(local=local, rekey=_rekey).solve([plain])
    key = graph.get(plain).key
    assert key.lookup_digests == (key.digest,)
    assert CacheKey.from_preimage(key.preimage).digest == key.digest
    assert key.digest in local


def test_rekeyed_keys_keep_the_preimage_for_explaining() -> None:
    v = Vertex(_Op("x"), name="x")
    graph = Solver(local=MemoryStore(), rekey=_rekey).solve([v])
    key = graph.get(v).key
    assert key.digest == _chain("x")
    assert key.op == {"type": "test.v0", "name": "x"}


class _ContentOp(_Op):
    """An op whose key reads content from outside the graph (a COPY of context files)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.reads = 0

    def cache_map(self, input_keys: Sequence[Digest]) -> CacheMap:
        def content() -> str:
            self.reads += 1
            return "sha256:" + "c" * 64

        return CacheMap({"type": "test.v0", "name": self.name}, content)


def test_a_rekeyed_vertex_reads_its_content_only_when_its_preimage_is_read() -> None:
    rekeyed, plain = _ContentOp("x"), _ContentOp("plain")
    vx, vp = Vertex(rekeyed, name="x"), Vertex(plain, name="plain")
    graph = Solver(local=MemoryStore(), rekey=_rekey).solve([vx, vp])
    assert (rekeyed.reads, plain.reads) == (0, 1)
    key = graph.get(vx).key
    assert key.content == "sha256:" + "c" * 64 and key.digest == _chain("x")
    assert CacheKey.from_preimage(key.preimage).content == key.content
    assert rekeyed.reads == 1  # made once, kept
