"""Chain keys: one local digest per cache record *with* its inputs (issue 12).

BuildKit names an exported record by its record digest alone
(``sha256("<cache map digest>@<output>")``, see ``mason.llb.keys``); what the
record was built from is carried by its input links, per input index a list of
alternatives ``{selector, link}``. Two builds hit the same record only when the
digest matches *and* every input matches through one of the alternatives.

A chain key folds that graph into one digest per record, so a store that looks
up a single key per step (mason's solver and local cache) can use BuildKit's
records: ``chain_key(record, [(index, selector, input chain key), ...])``. A
record with alternatives for an input has several chain keys; a build step has
several too when its source has several keys (an image's manifest key and its
layers' chain ID). A step hits a record when their chain-key sets meet.

The prefix ``mason.chain.v1`` keeps chain keys apart from every other digest:
mason's older keys (``mason.v1``) can never equal one, so an old cache is a
clean miss.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from mason.digest import Digest, sha256_bytes
from mason.errors import MasonError
from mason.llb import pb
from mason.llb.cachemap import CacheMap, Selector, op_cache_map
from mason.llb.keys import ContentRoot, record_digest
from mason.structs import Struct

__all__ = [
    "CacheGraphError",
    "Link",
    "Vertex",
    "chain_key",
    "chain_keys",
    "graph_chain_keys",
    "record_chain_keys",
]

_PREFIX = b"mason.chain.v1\n"

#: Alternatives kept per record: a cache merged from many builds may offer several links
#: per input, and their product grows fast; past this a record keeps its first keys (sorted),
#: which can only cost a miss, never a wrong hit.
MAX_KEYS_PER_RECORD = 256


class CacheGraphError(MasonError):
    """An imported cache config whose records do not form a graph mason can key."""


class Link(Struct, frozen=True, order=True):
    """One input of a step as its chain key sees it: the input index, the selector digest
    on the link (``""`` when none) and the linked record's chain key."""

    index: int
    selector: str
    key: Digest


def chain_key(record: str, links: Iterable[Link]) -> Digest:
    """The chain key of ``record`` reached through ``links`` (one per input index)."""
    lines = [record] + [f"{ln.index} {ln.selector} {ln.key}" for ln in sorted(links)]
    return sha256_bytes(_PREFIX + "\n".join(lines).encode())


def chain_keys(
    record: str, inputs: Sequence[Sequence[tuple[str, Iterable[Digest]]]]
) -> set[Digest]:
    """Every chain key of ``record`` whose input ``i`` is one of ``inputs[i]``'s
    ``(selector, chain keys)`` alternatives (at most ``MAX_KEYS_PER_RECORD``)."""
    per_input = [
        sorted({Link(i, sel, key) for sel, keys in alts for key in keys})
        for i, alts in enumerate(inputs)
    ]
    if any(not links for links in per_input):
        return set()  # an input no alternative reaches: the record cannot be matched
    combos = itertools.islice(itertools.product(*per_input), MAX_KEYS_PER_RECORD)
    return {chain_key(record, combo) for combo in combos}


def record_chain_keys(config: Mapping[str, Any]) -> list[set[Digest]]:
    """The chain keys of every record of a BuildKit cache config (``records[i]`` ->
    ``result[i]``), rebuilt from the records' digests and input links."""
    records = config.get("records")
    if not isinstance(records, list):
        raise CacheGraphError("cache config: 'records' is not a list")
    done: list[set[Digest] | None] = [None] * len(records)
    for start in range(len(records)):
        _resolve(records, start, done)
    return [keys or set() for keys in done]


def _resolve(records: list[Any], start: int, done: list[set[Digest] | None]) -> None:
    """Chain keys of ``start`` and everything it links to, depth first without recursion
    (a cache config is untrusted input and may be deep or cyclic)."""
    stack, visiting = [start], set()
    while stack:
        idx = stack[-1]
        if done[idx] is not None:
            stack.pop()
            continue
        inputs = _inputs(records, idx)
        pending = [ln for alts in inputs for _, ln in alts if done[ln] is None]
        if pending:
            if idx in visiting:
                raise CacheGraphError(
                    f"cache config: record {idx} links to itself through its inputs"
                )
            visiting.add(idx)
            stack.extend(pending)
            continue
        digest = records[idx].get("digest")
        if not isinstance(digest, str) or not digest:
            raise CacheGraphError(f"cache config: record {idx} has no digest")
        alts = [[(sel, done[ln] or set()) for sel, ln in per] for per in inputs]
        done[idx] = chain_keys(digest, alts)
        stack.pop()


def _inputs(records: list[Any], idx: int) -> list[list[tuple[str, int]]]:
    """Record ``idx``'s input alternatives as ``(selector, record index)``, checked."""
    rec = records[idx]
    if not isinstance(rec, dict):
        raise CacheGraphError(f"cache config: record {idx} is not an object")
    out: list[list[tuple[str, int]]] = []
    for i, alts in enumerate(rec.get("inputs") or []):
        if not isinstance(alts, list):
            raise CacheGraphError(f"cache config: record {idx} input {i} is not a list")
        per: list[tuple[str, int]] = []
        for alt in alts:
            link = alt.get("link") if isinstance(alt, dict) else None
            if not isinstance(link, int) or isinstance(link, bool) or not 0 <= link < len(records):
                raise CacheGraphError(f"cache config: record {idx} input {i} links to no record")
            if link == idx:
                raise CacheGraphError(f"cache config: record {idx} links to itself")
            per.append((str(alt.get("selector") or ""), link))
        out.append(per)
    return out


class Vertex(Struct, frozen=True):
    """One op of a build graph: its id, the op and its inputs as ``(vertex id, output)``."""

    id: str
    op: pb.Op
    inputs: tuple[tuple[str, int], ...]


#: A source vertex's chain keys (its record digests at output 0, with no inputs).
SourceKeys = Callable[[Vertex], Iterable[Digest]]
#: The content root of input ``index`` of a vertex over the dep's selectors; it may need
#: the cache maps of the vertices computed so far (to find an earlier op's result).
ContentOf = Callable[[Vertex, int, tuple[Selector, ...], Mapping[str, CacheMap]], ContentRoot]


def graph_chain_keys(
    vertices: Sequence[Vertex],
    outputs: Mapping[str, Iterable[int]],
    platform: pb.Platform,
    source_keys: SourceKeys,
    content_of: ContentOf,
) -> dict[tuple[str, int], set[Digest]]:
    """The chain keys of every output of a build graph, ``vertices`` in topological order:
    a source's from ``source_keys``; an op's from its cache map (``platform`` when it names
    none), each input linked to its content root when the dep is checksummed, else to the
    input's chain keys with the dep's selector, as BuildKit links its exported records."""
    keys: dict[tuple[str, int], set[Digest]] = {}
    maps: dict[str, CacheMap] = {}
    for v in vertices:
        if v.op.source is not None:
            keys[(v.id, 0)] = set(source_keys(v))
            continue
        cm = op_cache_map(v.op, len(v.inputs), platform)
        if cm is None:
            continue
        maps[v.id] = cm
        alts: list[list[tuple[str, Iterable[Digest]]]] = []
        for i, (inp, dep) in enumerate(zip(v.inputs, cm.deps, strict=True)):
            if dep.content is not None:
                root = content_of(v, i, dep.content, maps)
                alts.append([("", {chain_key(root.record, [])})])
            else:
                alts.append([(dep.selector or "", keys.get(inp, set()))])
        for out in outputs.get(v.id, (0,)):
            keys[(v.id, out)] = chain_keys(record_digest(cm.digest, out), alts)
    return keys
