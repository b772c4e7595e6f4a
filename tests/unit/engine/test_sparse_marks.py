"""``mark_plan``: a FileOp copies onto a sparse base only when no step mounts that
base whole: nothing depending on it, or on what is built on it, runs (RUN) or reads it
(``COPY --from``); a ``COPY --link`` never does (it has no base). A RUN that another RUN
depends on starts the next one's sandbox launcher while it runs."""

from __future__ import annotations

from typing import Any

from tests.support.engine_parts import run_true

from mason.engine.ops import ExecOp, FileAction, FileOp, MergeOp, mark_plan
from mason.solver import Vertex


class _Other:
    """Any op that is neither a FileOp nor a MergeOp (a RUN, a source)."""

    def cache_map(self, input_keys: object) -> Any:
        raise NotImplementedError


def _copy(*inputs: Vertex[Any], from_input: int | None = None, link: bool = False) -> Vertex[Any]:
    action = FileAction("copy", ("a",), "/dst/", from_input=from_input, link=link)
    return Vertex(FileOp(None, action, ()), inputs)  # type: ignore[arg-type]


def _sparse(v: Vertex[Any]) -> bool:
    assert isinstance(v.op, FileOp)
    return v.op.sparse_base


def test_copies_written_onto_each_other_are_sparse() -> None:
    base = Vertex(_Other(), ())
    first = _copy(base)
    second = _copy(first)
    mark_plan([second])
    assert _sparse(first) and _sparse(second)


def test_a_run_after_the_copy_makes_it_unpack() -> None:
    base = Vertex(_Other(), ())
    copy = _copy(base)
    run = Vertex(_Other(), (copy,))
    mark_plan([run])
    assert not _sparse(copy)


def test_a_run_of_another_stage_on_the_same_base_makes_it_unpack() -> None:
    base = Vertex(_Other(), ())
    copy = _copy(base)
    run = Vertex(_Other(), (base,))
    mark_plan([copy, run])
    assert not _sparse(copy)


def test_a_stage_read_by_copy_from_is_not_sparse_the_copy_into_another_base_is() -> None:
    build = _copy(Vertex(_Other(), ()))
    final = _copy(Vertex(_Other(), ()), build, from_input=1)
    mark_plan([final])
    assert not _sparse(build)  # its result is read whole by the final COPY --from
    assert _sparse(final)


def test_merges_keep_it_sparse_and_a_link_copy_is_never_marked() -> None:
    base = Vertex(_Other(), ())
    linked = _copy(link=True)
    merged = Vertex(MergeOp(), (base, linked))
    copy = _copy(merged)
    mark_plan([copy])
    assert _sparse(copy) and not _sparse(linked)


def _run(*inputs: Vertex[Any]) -> Vertex[Any]:
    return Vertex(run_true(None), inputs)


def _follows(v: Vertex[Any]) -> bool:
    assert isinstance(v.op, ExecOp)
    return v.op.runs_follow


def test_a_run_knows_whether_a_run_depends_on_it_through_other_steps() -> None:
    base = Vertex(_Other(), ())
    first = _run(base)
    second = _run(_copy(first))  # a COPY between them
    last = _run(base)  # another stage's RUN on the same base: not a dependent
    mark_plan([_copy(second), last])
    assert _follows(first)
    assert not _follows(second) and not _follows(last)
