"""mason.solver: a generic DAG engine with content-addressed cache keys.

It knows nothing of Dockerfiles, files or registries; it imports only
``mason.errors`` and ``mason.digest``. The builder supplies the ops, the
stores and the progress sink.

Public API
----------
Graph
    ``Vertex(op, inputs=(), name="", ignore_cache=False)`` — an op over the
    results of other vertices; compares by identity. ``ignore_cache``
    (``--no-cache``) reruns it and everything depending on it.
    ``Op[R]`` protocol — ``cache_map(input_keys: Sequence[Digest]) -> CacheMap``
    and ``execute(ctx: ExecContext, inputs: Sequence[R]) -> R``.
    ``ExecContext`` — ``.name``, ``.key``, ``.cancel`` (a ``CancelToken``),
    ``.log(line)``.
    ``CancelToken`` — ``.cancelled``, ``cancel()``, ``wait(timeout)``,
    ``raise_if_cancelled()``, ``add_callback(fn)``; ``Cancelled`` is what
    ``raise_if_cancelled`` raises.
Keys (policy: ``docs/cache-keys.md``)
    ``CacheMap(op: Mapping, content: Callable[[], str] | None = None)`` — the
    op definition (a JSON object with a versioned ``"type"``, non-semantic
    fields blanked) and an optional lazily computed content checksum.
    ``CacheKey`` — ``.digest``, ``.preimage`` (the exact canonical JSON
    hashed), ``.inputs``, ``.content``, ``.op``, ``.version``.
    ``compute_key(cache_map, input_keys, content) -> CacheKey``;
    ``KEY_VERSION`` (``"mason.v1"``);
    ``key_differences(old, new) -> tuple[str, ...]`` explains a miss;
    ``diff_keys(old, new) -> tuple[KeyDifference, ...]`` is the same as data
    (``.field``, ``.old``, ``.new``, ``.change``); ``CacheKey.from_preimage(bytes)``
    rebuilds a kept key;
    ``InvalidCacheMapError`` for definitions that cannot be hashed.
Stores
    ``CacheLookup[R]`` protocol — ``lookup(key) -> R | None`` (an imported
    cache; returns a lazy handle, downloads nothing).
    ``CacheStore[R]`` protocol — ``lookup`` plus ``record(key, result)`` (the
    local store). ``CacheSource(name, store)`` names an import for progress.
    ``MemoryStore[R]`` — a dict-backed ``CacheStore``. ``LOCAL_SOURCE`` is
    ``"local"``.
Progress
    ``SolveProgress`` protocol — ``vertex_started``, ``vertex_cached`` (with
    the source name), ``vertex_log``, ``vertex_done`` (elapsed),
    ``vertex_error``, ``source_error``; called from any thread.
    ``NullProgress`` — no-op base class.
Solving
    ``Solver(local=None, sources=(), progress=None, max_workers=None)``;
    ``Solver.solve(outputs, cancel=None) -> SolvedGraph``.
    ``SolvedGraph`` — ``.vertices`` (dependency order, one per key),
    ``.outputs``, ``get(vertex)``, ``by_key(digest)``, ``result_of(vertex)``,
    ``reachable(roots)``. ``SolvedVertex`` — ``.key``, ``.input_keys``,
    ``.inputs``, ``.state`` (``VertexState``), ``.source``, ``.result``,
    ``.elapsed``, ``.error``, ``.vertices``, ``.has_result``.
    ``SolveError`` (a ``BuildError``) — ``.vertex``, ``.cause``, ``.graph``.

How a solve runs
----------------
1. Keys. Every vertex reachable from the outputs (and no other) gets a key,
   inputs first, on the thread pool: ``cache_map`` then, if given, the
   content checksum. Vertices with equal keys are merged and run once.
2. Lookups. Each key not under ``ignore_cache`` is looked up in the local
   store, then in each source in order; the first hit wins and
   ``vertex_cached`` names its source. The sources are asked for every key at
   once (a lookup may check a hit's blobs where the cache is), their answers
   taken in order. An import whose lookup raises is reported through
   ``source_error`` and not asked again; the build goes on.
3. Execution. Starting from the outputs, a hit stops the walk: nothing below
   it runs and no result below it is touched. Every other needed vertex runs
   once its inputs have results, at most ``max_workers`` at a time, and its
   result is recorded in the local store. Ops get their inputs' results as
   the store or the input's op returned them; a lazy hit is materialised only
   if the op asks it to.
4. Failure. The first failure sets the cancel token and cancels everything
   queued; running ops are awaited; then ``SolveError`` names the vertex.
   ``KeyboardInterrupt`` cancels the same way and propagates unchanged.
"""

from .graph import Cancelled, CancelToken, ExecContext, Op, Vertex
from .keys import (
    KEY_VERSION,
    CacheKey,
    CacheMap,
    DeferredKey,
    InvalidCacheMapError,
    KeyDifference,
    compute_key,
    diff_keys,
    key_differences,
)
from .progress import NullProgress, SolveProgress
from .solve import SolvedGraph, SolvedVertex, SolveError, Solver, VertexState
from .store import LOCAL_SOURCE, CacheLookup, CacheSource, CacheStore, MemoryStore

__all__ = [
    "KEY_VERSION",
    "LOCAL_SOURCE",
    "CacheKey",
    "CacheLookup",
    "CacheMap",
    "CacheSource",
    "CacheStore",
    "CancelToken",
    "Cancelled",
    "DeferredKey",
    "ExecContext",
    "InvalidCacheMapError",
    "KeyDifference",
    "MemoryStore",
    "NullProgress",
    "Op",
    "SolveError",
    "SolveProgress",
    "SolvedGraph",
    "SolvedVertex",
    "Solver",
    "Vertex",
    "VertexState",
    "compute_key",
    "diff_keys",
    "key_differences",
]
