"""Export on failure (docs/architecture.md §8): which chain min mode keeps after a failed solve, and that a
failing export is a warning on its vertex, never an exception that would hide the build's
error. Fakes stand in for the solved graph and mason.cache.export_cache."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import mason.cache
from mason.cache.model import ExportResult
from mason.cache.options import parse_cache_to
from mason.digest import Digest
from mason.engine.remotecache import export_caches, finished_chain
from mason.engine.state import LayerRef
from mason.errors import MasonError
from mason.progress import RecordingSink
from mason.solver import Vertex


def _diff(n: int) -> Digest:
    return Digest(f"sha256:{n:064x}")


class _Graph:
    """A partly solved graph: ``finished`` maps a vertex to the diff IDs of its result."""

    def __init__(self, finished: dict[Vertex[Any], list[Digest]]) -> None:
        self.finished = finished
        self.vertices: list[Any] = []

    def get(self, vertex: Vertex[Any]) -> Any:
        chain = self.finished.get(vertex)
        if chain is None:
            return SimpleNamespace(has_result=False, result=None)
        layers = tuple(LayerRef(d, None, 0, "") for d in chain)
        return SimpleNamespace(has_result=True, result=SimpleNamespace(layers=layers))


def _chain(n: int) -> list[Vertex[Any]]:
    """FROM then n-1 steps, each a step on the one before (its first input)."""
    out: list[Vertex[Any]] = [Vertex(op=None, name="FROM")]  # type: ignore[arg-type]
    other = Vertex(op=None, name="other stage")  # type: ignore[arg-type]
    for i in range(1, n):
        out.append(Vertex(op=None, inputs=(out[-1], other), name=f"step {i}"))  # type: ignore[arg-type]
    return out


def test_finished_chain_is_the_last_finished_step_of_the_target_stage() -> None:
    v = _chain(4)
    graph = _Graph(
        {v[0]: [_diff(1)], v[1]: [_diff(1), _diff(2)]}
    )  # step 2 failed, step 3 never ran
    assert finished_chain(graph, v[3]) == [_diff(1), _diff(2)]


def test_finished_chain_of_a_solved_target_is_its_own_layers() -> None:
    v = _chain(3)
    graph = _Graph(
        {v[0]: [_diff(1)], v[1]: [_diff(1), _diff(2)], v[2]: [_diff(1), _diff(2), _diff(3)]}
    )
    assert finished_chain(graph, v[2]) == [_diff(1), _diff(2), _diff(3)]


def test_finished_chain_is_empty_when_nothing_finished() -> None:
    v = _chain(2)
    assert finished_chain(_Graph({}), v[1]) == []


def _setup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fail: set[str]
) -> tuple[list[Any], list[str]]:
    opts = [
        *parse_cache_to("type=registry,ref=127.0.0.1:1/nobody/cache,mode=max"),
        *parse_cache_to(f"type=local,dest={tmp_path / 'cache'}"),
        *parse_cache_to("type=inline"),
    ]
    seen: list[str] = []

    def fake_export(opt: Any, records: Any, **kw: Any) -> ExportResult:
        seen.append(opt.type)
        if opt.type in fail:
            raise MasonError(f"{opt.type} export broke")
        return ExportResult(destination=opt.type)

    monkeypatch.setattr(mason.cache, "export_cache", fake_export, raising=False)
    return opts, seen


def _export(opts: list[Any], sink: RecordingSink, **kw: Any) -> list[Any]:
    v = _chain(2)
    converted = SimpleNamespace(target=SimpleNamespace(vertex=v[1]))
    return export_caches(
        opts,
        _Graph({v[0]: [_diff(1)]}),
        converted,
        None,
        None,  # type: ignore[arg-type]
        sink,
        {},
        **kw,
    )


def test_best_effort_export_failure_is_a_warning_and_the_next_destination_still_exports(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    opts, seen = _setup(monkeypatch, tmp_path, fail={"registry"})
    sink = RecordingSink()
    results = _export(opts, sink, best_effort=True)
    assert seen == ["registry", "local"]  # inline is skipped: there is no image
    assert len(results) == 1
    warnings = [e for e in sink.events if e.status == "warning"]
    assert len(warnings) == 1
    assert warnings[0].name == "exporting cache to registry"
    assert "registry export broke" in warnings[0].text
    # both export vertices are closed, so progress shows them as usual
    done = [e.name for e in sink.events if e.status == "done"]
    assert done == ["exporting cache to registry", "exporting cache to client directory"]


def test_without_best_effort_an_export_failure_raises(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    opts, _seen = _setup(monkeypatch, tmp_path, fail={"registry"})
    with pytest.raises(MasonError, match="registry export broke"):
        _export(opts, RecordingSink())
