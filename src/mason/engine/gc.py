"""What a prune of the local state removes: records and the chains they reach, least
recently used first, as BuildKit's garbage collector does.

A cached result (a *record*) is only usable while every layer of its chain is there, so
deleting blobs or snapshots one by one (least recently used first) can throw away a base
layer that every record shares while it keeps bytes no record can use. Here the units are:

- entries no record reaches (a blob of no chain, a snapshot of no chain): nothing can use
  them, so they go first;
- records, each with the blobs, compressed variants and snapshots its chain reaches: when a
  record goes, what no remaining record reaches goes with it;
- cache mounts, each a unit of its own.

``plan_prune`` picks what goes; ``StateRoot.prune`` deletes it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

from mason.structs import Struct, field

__all__ = ["EntryKey", "PrunePlan", "PruneRule", "plan_prune"]

#: an entry of ``StateRoot.usage``: (kind, ident), kind is blob, snapshot or cache-mount
EntryKey = tuple[str, str]


class _Entry(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def ident(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def last_used(self) -> float: ...


class _Record(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def last_used(self) -> float: ...


R = TypeVar("R", bound=_Record)


class PruneRule(Struct, frozen=True):
    """``keep_storage``: stop once at most this many bytes are left (None: no size target,
    everything eligible goes). ``cutoff``: only what was last used before this time may go."""

    keep_storage: int | None = None
    cutoff: float | None = None

    def eligible(self, last_used: float) -> bool:
        return self.cutoff is None or last_used < self.cutoff


class PrunePlan(Struct):
    entries: list[EntryKey] = field(default_factory=list)
    records: list[str] = field(default_factory=list)


def plan_prune(
    entries: Sequence[_Entry],
    records: Sequence[R],
    reach: Callable[[R], Iterable[EntryKey]],
    rule: PruneRule,
) -> PrunePlan:
    """The entries and records to delete under ``rule``. ``reach(record)``: the entries the
    record's chain needs (its layers' blobs and variants, its snapshots)."""
    by_key = {(e.kind, e.ident): e for e in entries}
    reached = {r.key: {k for k in reach(r) if k in by_key} for r in records}
    refs: Counter[EntryKey] = Counter(k for keys in reached.values() for k in keys)
    plan = PrunePlan()
    total = sum(e.size for e in entries)

    def over() -> bool:
        return rule.keep_storage is None or total > rule.keep_storage

    def drop(key: EntryKey) -> None:
        nonlocal total
        plan.entries.append(key)
        total -= by_key[key].size

    unreached = [e for e in entries if e.kind != "cache-mount" and refs[(e.kind, e.ident)] == 0]
    for e in sorted(unreached, key=lambda e: e.last_used):
        if over() and rule.eligible(e.last_used):
            drop((e.kind, e.ident))
    units: list[tuple[float, str, str]] = [(r.last_used, "record", r.key) for r in records]
    units += [(e.last_used, "cache-mount", e.ident) for e in entries if e.kind == "cache-mount"]
    for last_used, kind, ident in sorted(units):
        if not over():
            break
        if not rule.eligible(last_used):
            continue
        if kind == "cache-mount":
            drop(("cache-mount", ident))
            continue
        plan.records.append(ident)
        for key in reached[ident]:
            refs[key] -= 1
            if refs[key] == 0:
                drop(key)
    return plan
