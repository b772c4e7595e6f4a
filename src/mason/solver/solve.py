"""The scheduler: keys, lookups, and running what must run, on a bounded thread pool."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from enum import StrEnum
from typing import Any, Generic, TypeVar

from mason.digest import Digest
from mason.errors import BuildError, DiagnosticError, MasonError
from mason.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from mason.structs import Struct

from .graph import Cancelled, CancelToken, ExecContext, Vertex
from .keys import CacheKey, compute_key
from .progress import NullProgress, SolveProgress
from .store import LOCAL_SOURCE, CacheLookup, CacheSource, CacheStore

__all__ = ["Rekey", "SolveError", "SolvedGraph", "SolvedVertex", "Solver", "VertexState"]

R = TypeVar("R")
T = TypeVar("T", bound=Hashable)
V = TypeVar("V")

# We wait on futures with a timeout so that a Ctrl-C delivered to another
# thread still reaches the solving thread promptly.
_POLL_SECONDS = 0.2


#: ``rekey(vertex, own_key, input_keys) -> key``: a builder's own digest for a vertex (computed
#: on a worker thread, inputs first). ``own_key()`` makes the solver's key (its content
#: checksum read then): the builder returns it for a vertex it leaves alone, and a key of
#: its own keeps it for explaining misses, made when read (``DeferredKey``). Vertices whose
#: digests come out equal are merged, as ever.
Rekey = Callable[[Vertex[R], Callable[[], CacheKey], Sequence[CacheKey]], CacheKey]


class VertexState(StrEnum):
    """What happened to a (merged) vertex in a solve."""

    CACHED = "cached"  # a store returned a result for its key; nothing ran
    EXECUTED = "executed"  # its op ran and the result was recorded locally
    SKIPPED = "skipped"  # not needed (all dependents hit) and in no cache: a key-only record
    FAILED = "failed"  # its op or its key computation raised
    CANCELLED = "cancelled"  # it was running when the solve was cancelled
    NOT_RUN = "not-run"  # needed, but the solve stopped before it could start


class SolveError(BuildError):
    """A vertex failed; the message starts with its name.

    A ``DiagnosticError`` cause lends its reference, context lines, hint and
    exit status (a Dockerfile error raised by an op still exits 2). ``graph``
    is the partly solved graph when keys were computed (None when computing a
    key failed), so the steps that finished can still be exported.
    """

    def __init__(
        self,
        vertex: Vertex[Any],
        cause: Exception,
        graph: SolvedGraph[Any] | None = None,
    ) -> None:
        name = vertex.name or "<unnamed vertex>"
        if isinstance(cause, DiagnosticError):
            text = cause.message
            reference: str | None = cause.reference
            context: tuple[str, ...] = cause.context
            hint = cause.hint
        else:
            text = (
                str(cause) if isinstance(cause, MasonError) else f"{type(cause).__name__}: {cause}"
            )
            reference, context, hint = None, (), None
        super().__init__(f"{name}: {text}", reference=reference, context=context, hint=hint)
        if isinstance(cause, MasonError):
            self.exit_code = cause.exit_code
        self.vertex = vertex
        self.cause = cause
        self.graph = graph


class _NotStarted(Cancelled):
    """A queued task found the solve cancelled before it began."""


class SolvedVertex(Struct, Generic[R], frozen=True, eq=False):
    """One key of the solved graph, for cache exporters and for explaining misses.

    ``vertices`` are all graph vertices that had this key (merged, run once);
    ``name`` is the first one's. ``result`` is set for CACHED (the store's
    handle, not materialised) and EXECUTED vertices, None otherwise.
    ``source`` names the store that served a CACHED vertex.
    """

    key: CacheKey
    name: str
    inputs: tuple[SolvedVertex[R], ...]
    state: VertexState
    source: str | None
    result: R | None
    elapsed: float | None
    error: BaseException | None
    vertices: tuple[Vertex[R], ...]

    @property
    def input_keys(self) -> tuple[Digest, ...]:
        return self.key.inputs

    @property
    def has_result(self) -> bool:
        return self.state in (VertexState.CACHED, VertexState.EXECUTED)

    def __repr__(self) -> str:
        return f"SolvedVertex({self.name!r}, {self.state.value}, {self.key.digest[:19]})"


class SolvedGraph(Generic[R]):
    """The keys and results of every vertex reachable from the requested outputs.

    ``vertices`` is in dependency order (inputs before their dependents) with
    one entry per distinct key; ``outputs`` follow the order of the request.
    """

    def __init__(
        self,
        vertices: tuple[SolvedVertex[R], ...],
        outputs: tuple[SolvedVertex[R], ...],
        index: dict[Vertex[R], SolvedVertex[R]],
    ) -> None:
        self.vertices = vertices
        self.outputs = outputs
        self._index = index
        self._by_key = {sv.key.digest: sv for sv in vertices}

    def __iter__(self) -> Iterator[SolvedVertex[R]]:
        return iter(self.vertices)

    def __len__(self) -> int:
        return len(self.vertices)

    def get(self, vertex: Vertex[R]) -> SolvedVertex[R]:
        """The solved entry of a graph vertex; KeyError if it was not reachable."""
        return self._index[vertex]

    def by_key(self, digest: Digest) -> SolvedVertex[R]:
        return self._by_key[digest]

    def result_of(self, vertex: Vertex[R]) -> R:
        """The result of ``vertex``; KeyError if it has none (skipped or failed)."""
        solved = self._index[vertex]
        if not solved.has_result:
            raise KeyError(f"{solved.name} has no result ({solved.state.value})")
        return solved.result  # type: ignore[return-value]

    def reachable(self, roots: Iterable[SolvedVertex[R]]) -> tuple[SolvedVertex[R], ...]:
        """``roots`` and everything they depend on, in dependency order."""
        seen: set[SolvedVertex[R]] = set()
        stack = list(roots)
        while stack:
            sv = stack.pop()
            if sv not in seen:
                seen.add(sv)
                stack.extend(sv.inputs)
        return tuple(sv for sv in self.vertices if sv in seen)


class _Node(Generic[R]):
    """Mutable solve state of one distinct key."""

    __slots__ = (
        "elapsed",
        "error",
        "ignore_cache",
        "inputs",
        "key",
        "result",
        "source",
        "started",
        "state",
        "vertices",
    )

    def __init__(self, key: CacheKey, inputs: list[_Node[R]]) -> None:
        self.key = key
        self.inputs = inputs
        self.vertices: list[Vertex[R]] = []
        self.ignore_cache = False
        self.state = VertexState.NOT_RUN
        self.source: str | None = None
        self.result: R | None = None
        self.elapsed: float | None = None
        self.error: BaseException | None = None
        self.started = False

    @property
    def primary(self) -> Vertex[R]:
        return self.vertices[0]


class Solver(Generic[R]):
    """Solves graphs of ``Vertex[R]`` against a local store and imported caches.

    Lookups go to ``local`` first, then to each of ``sources`` in order; the
    first hit wins. Executed results are recorded in ``local`` only. At most
    ``max_workers`` ops (and key computations) run at once. A ``Solver`` holds
    no state between solves and may be reused.
    """

    def __init__(
        self,
        *,
        local: CacheStore[R] | None = None,
        sources: Sequence[CacheSource[R]] = (),
        progress: SolveProgress | None = None,
        max_workers: int | None = None,
        rekey: Rekey[R] | None = None,
    ) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._rekey = rekey
        self._local = local
        self._sources = tuple(sources)
        self._progress: SolveProgress = progress if progress is not None else NullProgress()
        self._max_workers = max_workers or os.cpu_count() or 2

    def solve(
        self, outputs: Sequence[Vertex[R]], *, cancel: CancelToken | None = None
    ) -> SolvedGraph[R]:
        """Make a result for every vertex in ``outputs``; return the solved graph.

        Only vertices reachable from ``outputs`` are considered. Raises
        ``SolveError`` for the first vertex that fails (the rest are cancelled
        and awaited first), ``Cancelled`` when ``cancel`` is set from outside,
        and lets ``KeyboardInterrupt`` through after cancelling and waiting for
        running ops.
        """
        token = cancel if cancel is not None else CancelToken()
        order = _dependency_order(outputs)
        pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="mason-solver")
        try:
            keys = self._compute_keys(pool, token, order)
            nodes, node_of = self._merge(order, keys)
            self._lookup(nodes)
            needed = _needed([node_of[v] for v in outputs])
            tasks = [n for n in nodes if n in needed]
            failure = self._run(
                pool,
                token,
                tasks,
                deps=lambda n: n.inputs,
                work=lambda n: self._execute(n, token),
                on_success=self._executed,
                on_failure=_execution_failed,
            )
            graph = _freeze(nodes, node_of, outputs, needed)
            if failure is not None:
                node, exc = failure
                _raise_failure(node.primary, exc, graph)
            return graph
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    # -- phase 1: keys -------------------------------------------------------

    def _compute_keys(
        self, pool: ThreadPoolExecutor, token: CancelToken, order: list[Vertex[R]]
    ) -> dict[Vertex[R], CacheKey]:
        keys: dict[Vertex[R], CacheKey] = {}

        def work(v: Vertex[R]) -> CacheKey:
            if token.cancelled:
                raise _NotStarted("cancelled")
            input_keys = [keys[i].digest for i in v.inputs]
            try:
                cache_map = v.op.cache_map(input_keys)

                def own_key() -> CacheKey:
                    # The content checksum is the expensive part (hashing context files);
                    # we only get here for reachable vertices whose inputs all have keys.
                    content = cache_map.content() if cache_map.content is not None else None
                    return compute_key(cache_map, input_keys, content)

                if self._rekey is not None:
                    return self._rekey(v, own_key, [keys[i] for i in v.inputs])
                return own_key()
            except BaseException as exc:
                self._progress.vertex_error(v, None, exc, None)
                raise

        failure = self._run(
            pool,
            token,
            order,
            deps=lambda v: v.inputs,
            work=work,
            on_success=keys.__setitem__,
            on_failure=lambda v, exc: None,
        )
        if failure is not None:
            _raise_failure(failure[0], failure[1], None)
        return keys

    @staticmethod
    def _merge(
        order: list[Vertex[R]], keys: dict[Vertex[R], CacheKey]
    ) -> tuple[list[_Node[R]], dict[Vertex[R], _Node[R]]]:
        nodes: dict[Digest, _Node[R]] = {}
        node_of: dict[Vertex[R], _Node[R]] = {}
        for v in order:
            key = keys[v]
            node = nodes.get(key.digest)
            if node is None:
                node = _Node(key, [node_of[i] for i in v.inputs])
                nodes[key.digest] = node
            node.vertices.append(v)
            node.ignore_cache = node.ignore_cache or v.ignore_cache
            node_of[v] = node
        ordered = list(nodes.values())  # inputs were created before dependents
        for node in ordered:
            # --no-cache on a vertex rebuilds everything that depends on it too:
            # using a cached dependent would make rebuilding it pointless.
            if any(i.ignore_cache for i in node.inputs):
                node.ignore_cache = True
        return ordered, node_of

    # -- phase 2: lookups ----------------------------------------------------

    def _lookup(self, nodes: list[_Node[R]]) -> None:
        # Lookups are cheap (records in memory or sqlite; nothing downloads),
        # so we look up every reachable key: hits below another hit are
        # reported CACHED and their handles reach cache exporters (mode=max).
        missed: list[_Node[R]] = []
        for node in nodes:
            if node.ignore_cache:
                continue
            if self._local is not None:
                try:
                    hit = self._local.lookup(node.key)
                except Exception as exc:
                    self._progress.vertex_error(node.primary, node.key, exc, None)
                    raise SolveError(node.primary, exc) from exc
                if hit is not None:
                    self._hit(node, LOCAL_SOURCE, hit)
                    continue
            missed.append(node)
        if missed and self._sources:
            self._lookup_sources(missed)

    def _lookup_sources(self, nodes: list[_Node[R]]) -> None:
        """The imported caches' answers for ``nodes``. A source may check a hit where the
        cache is (one small read of each new blob), so after the first node every node asks
        at once; the answers are taken in order, as one lookup after the other would take
        them. A source that failed is reported once and not used for the nodes after it
        (nor asked again, but by lookups already under way)."""
        failed: set[str] = set()
        first = self._ask_sources(nodes[0], failed)
        rest: list[dict[str, R | Exception | None]] = []
        if len(nodes) > 1:
            with ThreadPoolExecutor(min(8, len(nodes) - 1), "mason-lookup") as pool:
                rest = list(pool.map(lambda n: self._ask_sources(n, failed), nodes[1:]))
        reported: set[str] = set()
        for node, answered in zip(nodes, [first, *rest], strict=True):
            for source in self._sources:
                if source.name in reported:
                    continue
                found = (
                    answered[source.name]
                    if source.name in answered
                    else _lookup_source(source.store, node.key)
                )
                if isinstance(found, Exception):
                    # An imported cache never fails the build (docs/architecture.md §1).
                    reported.add(source.name)
                    self._progress.source_error(source.name, found)
                    continue
                if found is not None:
                    self._hit(node, source.name, found)
                    break

    def _ask_sources(self, node: _Node[R], failed: set[str]) -> dict[str, R | Exception | None]:
        """Each source's answer for ``node``, in order, up to the first hit; a source in
        ``failed`` is not asked, one that fails is added to it."""
        answered: dict[str, R | Exception | None] = {}
        for source in self._sources:
            if source.name in failed:
                continue
            found = answered[source.name] = _lookup_source(source.store, node.key)
            if isinstance(found, Exception):
                failed.add(source.name)  # set.add is atomic: the other lookups see it
            elif found is not None:
                break
        return answered

    def _hit(self, node: _Node[R], source: str, result: R) -> None:
        node.state = VertexState.CACHED
        node.source = source
        node.result = result
        self._progress.vertex_cached(node.primary, node.key, source)

    # -- phase 3: execution --------------------------------------------------

    def _execute(self, node: _Node[R], token: CancelToken) -> R:
        if token.cancelled:
            raise _NotStarted("cancelled")
        vertex = node.primary
        progress = self._progress
        ctx = ExecContext(
            vertex.name, node.key, token, lambda line: progress.vertex_log(vertex, line)
        )
        inputs = [i.result for i in node.inputs]
        node.started = True
        progress.vertex_started(vertex, node.key)
        start = time.monotonic()
        try:
            result = vertex.op.execute(ctx, inputs)  # type: ignore[arg-type]
        except BaseException as exc:
            node.elapsed = time.monotonic() - start
            progress.vertex_error(vertex, node.key, exc, node.elapsed)
            raise
        node.elapsed = time.monotonic() - start
        progress.vertex_done(vertex, node.key, node.elapsed)
        return result

    def _executed(self, node: _Node[R], result: R) -> None:
        if self._local is not None:
            self._local.record(node.key, result)
        node.state = VertexState.EXECUTED
        node.result = result

    # -- the shared scheduling loop ------------------------------------------

    def _run(
        self,
        pool: ThreadPoolExecutor,
        token: CancelToken,
        tasks: Sequence[T],
        *,
        deps: Callable[[T], Iterable[T]],
        work: Callable[[T], V],
        on_success: Callable[[T, V], None],
        on_failure: Callable[[T, BaseException], None],
    ) -> tuple[T, BaseException] | None:
        """Run ``work`` for every task once its ``deps`` (among ``tasks``) succeeded.

        ``on_success``/``on_failure`` run on this thread. After the first
        failure nothing new starts, queued tasks are cancelled and the token is
        set; we return once every running task has ended, with the first
        failure (a real error is preferred over a ``Cancelled`` it caused).
        """
        return _Schedule(pool, token, tasks, deps, work).run(on_success, on_failure)


class _Schedule(Generic[T, V]):
    """One run of ``Solver._run``: which tasks wait on how many others, which are running,
    and the first failure."""

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        token: CancelToken,
        tasks: Sequence[T],
        deps: Callable[[T], Iterable[T]],
        work: Callable[[T], V],
    ) -> None:
        self._pool = pool
        self._token = token
        self._tasks = tasks
        self._work = work
        members = set(tasks)
        self._waiting: dict[T, int] = {}
        self._dependents: dict[T, list[T]] = {t: [] for t in tasks}
        for t in tasks:
            ds = [d for d in dict.fromkeys(deps(t)) if d in members]
            self._waiting[t] = len(ds)
            for d in ds:
                self._dependents[d].append(t)
        self._running: dict[Future[V], T] = {}
        self._failure: tuple[T, BaseException] | None = None
        self._unfinished = dict.fromkeys(tasks)  # ordered set

    def run(
        self,
        on_success: Callable[[T, V], None],
        on_failure: Callable[[T, BaseException], None],
    ) -> tuple[T, BaseException] | None:
        try:
            for t in self._tasks:
                if self._waiting[t] == 0:
                    self._submit(t)
            while self._running:
                done, _ = wait(self._running, timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
                for fut in done:
                    self._finished(fut, on_success, on_failure)
        except BaseException:
            # KeyboardInterrupt (or a bug in a callback): cancel, let running
            # ops see the token and end, then let the exception through.
            self._stop()
            while self._running:
                done, _ = wait(self._running, timeout=_POLL_SECONDS)
                for fut in done:
                    self._running.pop(fut)
            raise
        if self._failure is None and self._unfinished:
            # Cancelled from outside between two tasks: some never started.
            return (next(iter(self._unfinished)), Cancelled("cancelled"))
        return self._failure

    def _submit(self, t: T) -> None:
        self._running[self._pool.submit(self._guarded, t)] = t

    def _guarded(self, t: T) -> V:
        try:
            return self._work(t)
        except BaseException:
            # Cancel on the worker thread itself: the worker that just
            # failed would otherwise pick up a queued task before this
            # thread wakes up to cancel it.
            self._token.cancel()
            raise

    def _stop(self) -> None:
        self._token.cancel()
        for f in self._running:
            f.cancel()

    def _finished(
        self,
        fut: Future[V],
        on_success: Callable[[T, V], None],
        on_failure: Callable[[T, BaseException], None],
    ) -> None:
        """Record one ended task; start the dependents it was the last wait of."""
        t = self._running.pop(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            try:
                on_success(t, fut.result())
            except Exception as record_exc:
                exc = record_exc
        if exc is not None:
            on_failure(t, exc)
            # a real error is kept over a Cancelled it caused
            if self._failure is None or (
                isinstance(self._failure[1], Cancelled) and not isinstance(exc, Cancelled)
            ):
                self._failure = (t, exc)
            self._stop()
            return
        del self._unfinished[t]
        if self._token.cancelled:
            return
        for d in self._dependents[t]:
            self._waiting[d] -= 1
            if self._waiting[d] == 0:
                self._submit(d)


def _lookup_source(store: CacheLookup[R], key: CacheKey) -> R | Exception | None:
    try:
        return store.lookup(key)
    except Exception as exc:
        return exc


def _execution_failed(node: _Node[Any], exc: BaseException) -> None:
    node.error = exc
    if isinstance(exc, _NotStarted):
        node.state = VertexState.NOT_RUN
    elif isinstance(exc, Cancelled):
        node.state = VertexState.CANCELLED
    else:
        node.state = VertexState.FAILED


def _raise_failure(vertex: Vertex[Any], exc: BaseException, graph: SolvedGraph[Any] | None) -> None:
    if isinstance(exc, Cancelled):
        raise exc
    if not isinstance(exc, Exception):
        raise exc  # KeyboardInterrupt or SystemExit raised inside an op
    raise SolveError(vertex, exc, graph) from exc


def _dependency_order(outputs: Sequence[Vertex[R]]) -> list[Vertex[R]]:
    """Every vertex reachable from ``outputs``, inputs first, deterministic."""
    order: list[Vertex[R]] = []
    seen: set[Vertex[R]] = set()
    for root in outputs:
        if not isinstance(root, Vertex):
            raise TypeError(f"solve() wants vertices, got {root!r}")
        if root in seen:
            continue
        seen.add(root)
        # Iterative post-order walk: a long Dockerfile must not hit the recursion limit.
        stack: list[tuple[Vertex[R], Iterator[Vertex[R]]]] = [(root, iter(root.inputs))]
        while stack:
            vertex, pending = stack[-1]
            nxt = next((i for i in pending if i not in seen), None)
            if nxt is None:
                stack.pop()
                order.append(vertex)
            else:
                seen.add(nxt)
                stack.append((nxt, iter(nxt.inputs)))
    return order


def _needed(outputs: list[_Node[R]]) -> set[_Node[R]]:
    """Nodes that must execute: outputs without a hit, and their inputs without a hit."""
    needed: set[_Node[R]] = set()
    stack = list(outputs)
    while stack:
        node = stack.pop()
        if node in needed or node.state is VertexState.CACHED:
            continue
        needed.add(node)
        stack.extend(node.inputs)
    return needed


def _freeze(
    nodes: list[_Node[R]],
    node_of: dict[Vertex[R], _Node[R]],
    outputs: Sequence[Vertex[R]],
    needed: set[_Node[R]],
) -> SolvedGraph[R]:
    frozen: dict[_Node[R], SolvedVertex[R]] = {}
    for node in nodes:
        state = node.state
        if state is VertexState.NOT_RUN and node not in needed:
            state = VertexState.SKIPPED
        frozen[node] = SolvedVertex(
            key=node.key,
            name=node.primary.name,
            inputs=tuple(frozen[i] for i in node.inputs),
            state=state,
            source=node.source,
            result=node.result,
            elapsed=node.elapsed,
            error=node.error,
            vertices=tuple(node.vertices),
        )
    index = {v: frozen[n] for v, n in node_of.items()}
    return SolvedGraph(
        tuple(frozen[n] for n in nodes), tuple(frozen[node_of[v]] for v in outputs), index
    )
