"""``mark_sparse_bases``: a FileOp copies onto a sparse base only when no step mounts that
base whole: nothing depending on it, or on what is built on it, runs (RUN) or reads it
(``COPY --from``); a ``COPY --link`` never does (it has no base)."""

from __future__ import annotations

from typing import Any

from mason.engine.ops import FileAction, FileOp, MergeOp, mark_sparse_bases
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
    mark_sparse_bases([second])
    assert _sparse(first) and _sparse(second)


def test_a_run_after_the_copy_makes_it_unpack() -> None:
    base = Vertex(_Other(), ())
    copy = _copy(base)
    run = Vertex(_Other(), (copy,))
    mark_sparse_bases([run])
    assert not _sparse(copy)


def test_a_run_of_another_stage_on_the_same_base_makes_it_unpack() -> None:
    base = Vertex(_Other(), ())
    copy = _copy(base)
    run = Vertex(_Other(), (base,))
    mark_sparse_bases([copy, run])
    assert not _sparse(copy)


def test_a_stage_read_by_copy_from_is_not_sparse_the_copy_into_another_base_is() -> None:
    build = _copy(Vertex(_Other(), ()))
    final = _copy(Vertex(_Other(), ()), build, from_input=1)
    mark_sparse_bases([final])
    assert not _sparse(build)  # its result is read whole by the final COPY --from
    assert _sparse(final)


def test_merges_keep_it_sparse_and_a_link_copy_is_never_marked() -> None:
    base = Vertex(_Other(), ())
    linked = _copy(link=True)
    merged = Vertex(MergeOp(), (base, linked))
    copy = _copy(merged)
    mark_sparse_bases([copy])
    assert _sparse(copy) and not _sparse(linked)
