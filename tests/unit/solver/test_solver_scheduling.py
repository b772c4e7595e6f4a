"""Scheduling: memoization, dedup, pruning, bounded parallelism, failure and interrupts."""

from __future__ import annotations

import _thread
import threading
from collections.abc import Sequence

import pytest
from tests.unit.solver.fakes import FakeOp, Handle, RecordingProgress, vertex

from mason.errors import BuildError, DiagnosticError
from mason.solver import (
    Cancelled,
    CancelToken,
    ExecContext,
    MemoryStore,
    SolveError,
    Solver,
    Vertex,
    VertexState,
)

WAIT = 10.0  # generous upper bound for handshakes between threads; never reached when correct


def _chain() -> tuple[Vertex[Handle], Vertex[Handle], Vertex[Handle]]:
    base = vertex("base")
    mid = vertex("mid", base)
    top = vertex("top", mid)
    return base, mid, top


def test_second_solve_with_same_store_runs_nothing() -> None:
    """A result recorded in the local store is reused: the second solve executes no op."""
    store: MemoryStore[Handle] = MemoryStore()
    base, mid, top = _chain()
    first = Solver[Handle](local=store, max_workers=2).solve([top])
    assert [base.op.calls, mid.op.calls, top.op.calls] == [1, 1, 1]  # type: ignore[attr-defined]
    assert first.result_of(top).value == "top(mid(base()))"

    progress = RecordingProgress()
    base2, mid2, top2 = _chain()
    second = Solver[Handle](local=store, progress=progress, max_workers=2).solve([top2])
    assert [base2.op.calls, mid2.op.calls, top2.op.calls] == [0, 0, 0]  # type: ignore[attr-defined]
    assert second.result_of(top2) is first.result_of(top)
    assert progress.of("cached") == [("base", "local"), ("mid", "local"), ("top", "local")]
    assert progress.of("started") == []


def test_identical_vertices_run_once() -> None:
    """Two distinct vertices with the same definition and inputs share a key and run once."""
    base = vertex("base")
    a = vertex("same", base)
    b = vertex("same", base)
    top = vertex("top", a, b)
    graph = Solver[Handle](max_workers=4).solve([top])
    assert a.op.calls + b.op.calls == 1  # type: ignore[attr-defined]
    assert graph.get(a) is graph.get(b)
    assert graph.get(a).vertices == (a, b)
    assert len(graph) == 3
    assert graph.result_of(top).value == "top(same(base()),same(base()))"


def test_shared_input_of_a_diamond_runs_once() -> None:
    """A vertex used by several dependents executes once and feeds all of them."""
    base = vertex("base")
    left = vertex("left", base)
    right = vertex("right", base)
    top = vertex("top", left, right)
    Solver[Handle](max_workers=4).solve([top, left])
    assert base.op.calls == 1  # type: ignore[attr-defined]
    assert top.op.calls == 1  # type: ignore[attr-defined]


def test_unreachable_vertices_are_never_touched() -> None:
    """A stage no requested output depends on gets no key and never runs."""
    base = vertex("base")
    unused = vertex("unused", base, content="ctx")
    used = vertex("used", base)
    graph = Solver[Handle](max_workers=2).solve([used])
    op = unused.op
    assert (op.cache_map_calls, op.content_calls, op.calls) == (0, 0, 0)  # type: ignore[attr-defined]
    with pytest.raises(KeyError):
        graph.get(unused)


def test_parallelism_is_bounded_by_max_workers() -> None:
    """Independent vertices run concurrently, never more than max_workers at once."""
    bound = 3
    cond = threading.Condition()
    state = {"active": 0, "peak": 0, "released": False}

    def hold(ctx: ExecContext, inputs: Sequence[Handle]) -> None:
        with cond:
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
            cond.notify_all()
            assert cond.wait_for(lambda: state["released"], timeout=WAIT)
            state["active"] -= 1

    leaves = [vertex(f"leaf{i}", run=hold) for i in range(8)]
    top = vertex("top", *leaves)
    outcome: dict[str, object] = {}

    def solve() -> None:
        try:
            outcome["graph"] = Solver[Handle](max_workers=bound).solve([top])
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=solve)
    thread.start()
    with cond:
        assert cond.wait_for(lambda: state["active"] == bound, timeout=WAIT)
        started_while_full = sum(v.op.calls for v in leaves)  # type: ignore[attr-defined]
        state["released"] = True
        cond.notify_all()
    thread.join(WAIT)
    assert "error" not in outcome
    assert started_while_full == bound
    assert state["peak"] == bound
    assert sum(v.op.calls for v in leaves) == 8  # type: ignore[attr-defined]


def test_failure_cancels_the_rest_and_names_the_vertex() -> None:
    """The first failure cancels queued vertices, cancels running ones through the token, and is raised."""
    b_started = threading.Event()
    b_saw_cancel = threading.Event()

    def wait_for_cancel(ctx: ExecContext, inputs: Sequence[Handle]) -> None:
        b_started.set()
        if ctx.cancel.wait(WAIT):
            b_saw_cancel.set()
        ctx.cancel.raise_if_cancelled()

    def fail(ctx: ExecContext, inputs: Sequence[Handle]) -> None:
        assert b_started.wait(WAIT)
        raise BuildError("process exited 1", context=["make: *** no rule"], hint="fix the Makefile")

    b = vertex("[b 1/1] RUN sleep", run=wait_for_cancel)
    a = vertex("[a 1/1] RUN make", run=fail)
    c = vertex("c")
    d = vertex("d")
    after_a = vertex("after a", a)
    progress = RecordingProgress()
    with pytest.raises(SolveError) as info:
        Solver[Handle](progress=progress, max_workers=2).solve([b, a, c, d, after_a])
    err = info.value
    assert err.vertex is a
    assert str(err).startswith("[a 1/1] RUN make: process exited 1")
    assert err.context == ("make: *** no rule",)
    assert err.hint == "fix the Makefile"
    assert b_saw_cancel.is_set()
    assert (c.op.calls, d.op.calls, after_a.op.calls) == (0, 0, 0)  # type: ignore[attr-defined]
    assert err.graph is not None
    states = {sv.name: sv.state for sv in err.graph}
    assert states["[a 1/1] RUN make"] is VertexState.FAILED
    assert states["[b 1/1] RUN sleep"] is VertexState.CANCELLED
    assert states["c"] is states["d"] is states["after a"] is VertexState.NOT_RUN
    errors = dict(progress.of("error"))
    assert isinstance(errors["[b 1/1] RUN sleep"], Cancelled)
    assert isinstance(errors["[a 1/1] RUN make"], BuildError)
    assert set(progress.names("started")) == {"[b 1/1] RUN sleep", "[a 1/1] RUN make"}


def test_steps_that_finished_before_a_failure_are_recorded() -> None:
    """Results that completed before another vertex failed stay in the store (export on failure)."""
    store: MemoryStore[Handle] = MemoryStore()
    ok = vertex("ok")

    def fail(ctx: ExecContext, inputs: Sequence[Handle]) -> None:
        raise ValueError("boom")

    bad = vertex("bad", ok, run=fail)
    with pytest.raises(SolveError) as info:
        Solver[Handle](local=store, max_workers=1).solve([bad])
    assert info.value.graph is not None
    assert info.value.graph.get(ok).state is VertexState.EXECUTED
    assert info.value.graph.get(ok).key.digest in store
    assert "bad: ValueError: boom" in str(info.value)


@pytest.mark.parametrize("exit_code", [1, 2])
def test_solve_error_keeps_the_cause_exit_status(exit_code: int) -> None:
    """A DiagnosticError's reference and exit status survive wrapping."""

    class Err(DiagnosticError):
        reference = "dockerfile-error"

    Err.exit_code = exit_code

    def fail(ctx: ExecContext, inputs: Sequence[Handle]) -> None:
        raise Err("unknown stage")

    with pytest.raises(SolveError) as info:
        Solver[Handle](max_workers=1).solve([vertex("x", run=fail)])
    assert info.value.exit_code == exit_code
    assert info.value.reference == "dockerfile-error"
    assert isinstance(info.value.cause, Err)


def test_a_failing_key_computation_stops_the_solve_before_anything_runs() -> None:
    """An error in cache_map (e.g. a base image that does not resolve) names the vertex; nothing executes."""

    def boom() -> None:
        raise LookupError("manifest unknown")

    base = vertex("[internal] load metadata", on_cache_map=boom)
    other = vertex("other")
    top = vertex("top", base, other)
    progress = RecordingProgress()
    with pytest.raises(
        SolveError, match=r"\[internal\] load metadata: LookupError: manifest unknown"
    ) as info:
        Solver[Handle](progress=progress, max_workers=2).solve([top])
    assert info.value.graph is None
    assert top.op.cache_map_calls == 0  # type: ignore[attr-defined]
    assert other.op.calls == 0  # type: ignore[attr-defined]
    assert progress.names("error") == ["[internal] load metadata"]


def test_keyboard_interrupt_cancels_running_ops_and_propagates() -> None:
    """Ctrl-C while an op runs: the op is cancelled, queued ops never start, KeyboardInterrupt escapes."""
    saw_cancel = threading.Event()

    def interrupt(ctx: ExecContext, inputs: Sequence[Handle]) -> None:
        _thread.interrupt_main()
        if ctx.cancel.wait(WAIT):
            saw_cancel.set()
        ctx.cancel.raise_if_cancelled()

    running = vertex("running", run=interrupt)
    queued = vertex("queued")
    with pytest.raises(KeyboardInterrupt):
        Solver[Handle](max_workers=1).solve([running, queued])
    assert saw_cancel.is_set()
    assert queued.op.calls == 0  # type: ignore[attr-defined]


def test_keyboard_interrupt_raised_inside_an_op_propagates_unchanged() -> None:
    """A KeyboardInterrupt raised in a worker is not wrapped in SolveError."""

    def interrupt(ctx: ExecContext, inputs: Sequence[Handle]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Solver[Handle](max_workers=1).solve([vertex("x", run=interrupt)])


def test_cancel_token_from_outside_stops_the_solve() -> None:
    """A token cancelled by the caller makes running ops stop and solve raise Cancelled."""
    token = CancelToken()
    started = threading.Event()

    def wait(ctx: ExecContext, inputs: Sequence[Handle]) -> None:
        started.set()
        ctx.cancel.wait(WAIT)
        ctx.cancel.raise_if_cancelled()

    first = vertex("first", run=wait)
    later = vertex("later", first)

    def cancel_once_started() -> None:
        assert started.wait(WAIT)
        token.cancel()

    threading.Thread(target=cancel_once_started).start()
    with pytest.raises(Cancelled):
        Solver[Handle](max_workers=1).solve([later], cancel=token)
    assert later.op.calls == 0  # type: ignore[attr-defined]


def test_cancel_token_callbacks_run_once_and_late_callbacks_run_at_once() -> None:
    """Callbacks registered before cancel run on cancel; ones added after run immediately."""
    token = CancelToken()
    calls: list[str] = []
    token.add_callback(lambda: calls.append("early"))
    token.cancel()
    token.cancel()
    token.add_callback(lambda: calls.append("late"))
    assert calls == ["early", "late"]
    with pytest.raises(Cancelled):
        token.raise_if_cancelled()


def test_progress_reports_start_log_and_done_for_executed_vertices() -> None:
    """Each executed vertex reports started, its log lines, then done with an elapsed time."""
    progress = RecordingProgress()
    _, _, top = _chain()
    Solver[Handle](progress=progress, max_workers=1).solve([top])
    assert progress.names("started") == ["base", "mid", "top"]
    assert progress.of("log")[0] == ("base", "running base")
    done = progress.of("done")
    assert [n for n, _ in done] == ["base", "mid", "top"]
    assert all(isinstance(e, float) and e >= 0 for _, e in done)
    for name in ("base", "mid", "top"):
        kinds = [k for k, n, _ in progress.events if n == name]
        assert kinds == ["started", "log", "done"]


def test_max_workers_must_be_positive() -> None:
    """A pool of zero workers is refused up front."""
    with pytest.raises(ValueError):
        Solver[Handle](max_workers=0)


def test_long_chains_do_not_hit_the_recursion_limit() -> None:
    """A graph thousands of vertices deep solves (the walks are iterative)."""
    v = vertex("v0")
    for i in range(1, 3000):
        v = Vertex(FakeOp(f"v{i}"), (v,), f"v{i}")
    graph = Solver[Handle](max_workers=2, local=None).solve([v])
    assert len(graph) == 3000
    assert graph.outputs[0].state is VertexState.EXECUTED


def test_cancel_between_two_steps_raises_cancelled() -> None:
    """A token cancelled while no op is failing still stops the solve before the next step."""

    def cancel_then_succeed(ctx: ExecContext, inputs: Sequence[Handle]) -> None:
        ctx.cancel.cancel()

    first = vertex("first", run=cancel_then_succeed)
    later = vertex("later", first)
    with pytest.raises(Cancelled):
        Solver[Handle](max_workers=1).solve([later])
    assert (first.op.calls, later.op.calls) == (1, 0)  # type: ignore[attr-defined]
