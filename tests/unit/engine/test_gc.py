"""mason.engine.gc: a prune removes records and what only they reach, least recently used
first, after what no record reaches -- never a layer a kept record still needs."""

from __future__ import annotations

from dataclasses import dataclass

from mason.engine.gc import PruneRule, plan_prune


@dataclass(frozen=True)
class E:
    kind: str
    ident: str
    size: int
    last_used: float


@dataclass(frozen=True)
class R:
    key: str
    last_used: float
    needs: tuple[str, ...]


def _reach(r: R) -> list[tuple[str, str]]:
    return [("blob", n) for n in r.needs]


ENTRIES = [
    E("blob", "base", 10_000, 1.0),  # the shared base layer: used first, long ago
    E("blob", "old-step", 3_000, 2.0),
    E("blob", "new-step", 2_000, 3.0),
    E("blob", "orphan", 4_000, 9.0),
    E("cache-mount", "apt", 1_000, 2.5),
]
RECORDS = [R("old", 2.0, ("base", "old-step")), R("new", 3.0, ("base", "new-step"))]


def test_the_shared_base_layer_stays_while_a_record_needs_it() -> None:
    # 20,000 bytes; keep 13,000: the orphan goes first (no record can use it), then the oldest
    # record with the one blob only it needs, then (still over) the older cache mount
    plan = plan_prune(ENTRIES, RECORDS, _reach, PruneRule(keep_storage=13_000))
    assert plan.entries == [("blob", "orphan"), ("blob", "old-step")]
    assert plan.records == ["old"]
    plan = plan_prune(ENTRIES, RECORDS, _reach, PruneRule(keep_storage=12_000))
    assert plan.entries == [("blob", "orphan"), ("blob", "old-step"), ("cache-mount", "apt")]
    assert ("blob", "base") not in plan.entries and plan.records == ["old"]


def test_the_last_record_takes_the_base_with_it() -> None:
    plan = plan_prune(ENTRIES, RECORDS, _reach, PruneRule(keep_storage=0))
    assert set(plan.entries) == {(e.kind, e.ident) for e in ENTRIES}
    assert plan.records == ["old", "new"]


def test_nothing_goes_while_under_the_target() -> None:
    assert plan_prune(ENTRIES, RECORDS, _reach, PruneRule(keep_storage=20_000)).entries == []


def test_a_cutoff_keeps_what_was_used_since() -> None:
    # unused for long enough: only what was last used before t=2.6 may go, with no size target
    plan = plan_prune(ENTRIES, RECORDS, _reach, PruneRule(cutoff=2.6))
    assert plan.records == ["old"]
    assert plan.entries == [("blob", "old-step"), ("cache-mount", "apt")]
