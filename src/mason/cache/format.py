"""BuildKit's ``application/vnd.buildkit.cacheconfig.v0`` document: model, reader, writer.

The field rules follow Go's ``encoding/json`` as BuildKit uses it
(``cache/remotecache/v1/types/spec.go``):

* a layer's ``parent`` is omitted when it is 0 (``omitempty`` on an int), so a
  missing ``parent`` means 0 and ``-1`` means "no parent";
* ``createdAt`` is always written (the zero time is ``0001-01-01T00:00:00Z``);
  readers accept ``createdat`` too because Go matches keys case-insensitively;
* ``selector`` is omitted when empty; ``link`` and ``layer`` are always written;
* compact JSON, struct field order: ``layers, records``; in a record
  ``layers, chains, digest, inputs``.

``createdAt`` values are kept as the strings that were read, so an imported
config re-serialises byte for byte (``serialize_cache_config(parse_cache_config(raw)) == raw``
for BuildKit's own documents).

mason adds top-level fields BuildKit ignores (Go's decoder skips unknown
keys): ``"mason.steps"``, a map from record digest to the Dockerfile step that
produced it (``[build 2/4] RUN make``), shown by ``mason cache inspect``; and
``"mason.lastUsed"``, a map from record digest to when a build last used it
(retention: ``mason.cache.retention``); and ``"mason.explain"``, a map from record
digest to the step's readable inputs (``--explain-cache`` on another machine: mason's own key
preimage with environment values hashed, and the context files a COPY selected).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from functools import cmp_to_key
from typing import Any

from mason.digest import Digest, DigestError, parse_digest
from mason.errors import DiagnosticError
from mason.structs import Struct, field

__all__ = [
    "CACHE_CONFIG_MEDIA_TYPE",
    "LAST_USED_FIELD",
    "MAX_CACHE_CONFIG_SIZE",
    "MAX_CHAIN_LENGTH",
    "STEPS_FIELD",
    "ZERO_TIME",
    "CacheConfig",
    "CacheFormatError",
    "CacheInput",
    "CacheLayer",
    "CacheRecord",
    "CacheResult",
    "ChainedResult",
    "layer_depths",
    "normalize_cache_config",
    "parse_cache_config",
    "parse_records",
    "records_to_json",
    "rfc3339_nano",
    "serialize_cache_config",
    "validate_cache_config",
]

CACHE_CONFIG_MEDIA_TYPE = "application/vnd.buildkit.cacheconfig.v0"
#: BuildKit caps configs at 1 MiB, which big mode=max caches outgrow; docs/architecture.md §6 says 64 MiB.
MAX_CACHE_CONFIG_SIZE = 64 << 20
#: The deepest layer chain (one result's layers, base first) an imported cache may hold. A
#: BuildKit chain is one layer per filesystem-changing step of a stage plus its base image's
#: layers: a few hundred deep at most in practice (the overlay snapshotter stops at 128
#: lowerdirs, Docker at 125 layers per image). 4096 is generous for any real build and still
#: keeps every per-chain walk (lookup, snapshot, export) small; a cache that exceeds it is
#: refused as a whole, with a warning, like any other invalid cache.
MAX_CHAIN_LENGTH = 4096
#: Top-level field BuildKit ignores: record digest -> Dockerfile step description.
STEPS_FIELD = "mason.steps"
#: record digest -> when a build last used (exported) it, RFC 3339 (``mason.cache.retention``)
LAST_USED_FIELD = "mason.lastUsed"
#: record digest -> the step's readable inputs, for ``--explain-cache`` (``engine.explain``)
EXPLAIN_FIELD = "mason.explain"
#: Go's zero ``time.Time`` as ``MarshalJSON`` writes it.
ZERO_TIME = "0001-01-01T00:00:00Z"


class CacheFormatError(DiagnosticError):
    """A cache config (or inline cache value) is not valid ``cacheconfig.v0``."""

    reference = "cache-format-invalid"


class CacheLayer(Struct, frozen=True):
    """One blob in a chain; ``parent`` is an index into ``CacheConfig.layers`` or -1."""

    blob: Digest
    parent: int = -1


class CacheResult(Struct, frozen=True):
    """A result: the chain that ends at ``layers[layer]`` (that layer and all its parents)."""

    layer: int
    created_at: str = ZERO_TIME


class ChainedResult(Struct, frozen=True):
    """A result given as explicit layer indexes, base first, parents ignored (inline cache)."""

    layers: tuple[int, ...]
    created_at: str = ZERO_TIME


class CacheInput(Struct, frozen=True):
    """A link to an input record (``link`` indexes ``CacheConfig.records``)."""

    link: int
    selector: str = ""


class CacheRecord(Struct, frozen=True):
    """One cache key. ``inputs[i]`` lists the alternative records for input ``i``."""

    digest: Digest
    results: tuple[CacheResult, ...] = ()
    chains: tuple[ChainedResult, ...] = ()
    inputs: tuple[tuple[CacheInput, ...], ...] = ()

    @property
    def has_result(self) -> bool:
        return bool(self.results or self.chains)


class CacheConfig(Struct, frozen=True):
    layers: tuple[CacheLayer, ...] = ()
    records: tuple[CacheRecord, ...] = ()
    #: record digest -> Dockerfile step (mason-written configs only).
    steps: Mapping[str, str] = field(default_factory=dict)
    #: record digest -> last use, RFC 3339 (mason-written configs only; retention)
    last_used: Mapping[str, str] = field(default_factory=dict)
    #: record digest -> readable step inputs (mason-written configs only; --explain-cache)
    explain: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def kept(self, records: tuple[CacheRecord, ...], layers: tuple[CacheLayer, ...]) -> CacheConfig:
        """These records and layers with this config's extension maps, reduced to the records'
        digests."""
        digests = {r.digest for r in records}
        return CacheConfig(
            layers,
            records,
            {d: s for d, s in self.steps.items() if d in digests},
            {d: t for d, t in self.last_used.items() if d in digests},
            {d: e for d, e in self.explain.items() if d in digests},
        )

    def chain(self, layer_index: int) -> tuple[int, ...]:
        """Layer indexes of the chain ending at ``layer_index``, base first. Linear in the
        chain's length; a loop (only in hand-made configs: parsing rejects them) raises."""
        out: list[int] = []
        seen: set[int] = set()
        index = layer_index
        while index != -1:
            if index in seen:
                raise CacheFormatError(
                    f"cache config layer {layer_index} has a looping parent chain"
                )
            seen.add(index)
            out.append(index)
            index = self.layers[index].parent
        out.reverse()
        return tuple(out)


# --------------------------------------------------------------------------- times


def rfc3339_nano(ns: int | None = None) -> str:
    """A UTC time the way Go's ``time.Time.MarshalJSON`` writes it (nanoseconds, trailing
    zeros trimmed): ``2021-07-02T17:08:09.095229615Z``. ``ns`` defaults to now."""
    if ns is None:
        ns = time.time_ns()
    seconds, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if frac:
        base += "." + f"{frac:09d}".rstrip("0")
    return base + "Z"


# --------------------------------------------------------------------------- reading


def _where(path: str, what: str) -> str:
    return f"{path}: {what}" if path else what


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CacheFormatError(_where(path, f"expected an integer, got {value!r}"))
    return value


def _digest(value: Any, path: str) -> Digest:
    if not isinstance(value, str):
        raise CacheFormatError(_where(path, f"expected a digest string, got {value!r}"))
    try:
        return parse_digest(value)
    except DigestError as exc:
        raise CacheFormatError(_where(path, exc.message)) from exc


def _created(obj: Mapping[str, Any], path: str) -> str:
    value = obj.get("createdAt", obj.get("createdat", ZERO_TIME))
    if not isinstance(value, str):
        raise CacheFormatError(_where(path, f"createdAt must be a time string, got {value!r}"))
    return value


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise CacheFormatError(_where(path, f"expected a list, got {type(value).__name__}"))
    return value


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CacheFormatError(_where(path, f"expected an object, got {type(value).__name__}"))
    return value


def _parse_record(obj: Any, path: str) -> CacheRecord:
    obj = _object(obj, path)
    if "digest" not in obj:
        raise CacheFormatError(_where(path, "record has no digest"))
    digest = _digest(obj["digest"], f"{path}.digest")
    results = []
    for j, res in enumerate(_list(obj.get("layers"), f"{path}.layers")):
        res = _object(res, f"{path}.layers[{j}]")
        if "layer" not in res:
            raise CacheFormatError(_where(f"{path}.layers[{j}]", "result has no layer index"))
        results.append(
            CacheResult(
                _int(res["layer"], f"{path}.layers[{j}].layer"),
                _created(res, f"{path}.layers[{j}]"),
            )
        )
    chains = []
    for j, ch in enumerate(_list(obj.get("chains"), f"{path}.chains")):
        ch = _object(ch, f"{path}.chains[{j}]")
        indexes = tuple(
            _int(v, f"{path}.chains[{j}].layers")
            for v in _list(ch.get("layers"), f"{path}.chains[{j}].layers")
        )
        chains.append(ChainedResult(indexes, _created(ch, f"{path}.chains[{j}]")))
    inputs = []
    for j, alternatives in enumerate(_list(obj.get("inputs"), f"{path}.inputs")):
        links = []
        alt_list = _list(alternatives, f"{path}.inputs[{j}]")
        if not alt_list:
            # BuildKit: "invalid empty input for record"
            raise CacheFormatError(_where(f"{path}.inputs[{j}]", "empty input list"))
        for k, link in enumerate(alt_list):
            p = f"{path}.inputs[{j}][{k}]"
            link = _object(link, p)
            if "link" not in link:
                raise CacheFormatError(_where(p, "input has no link index"))
            selector = link.get("selector", "")
            if not isinstance(selector, str):
                raise CacheFormatError(_where(p, f"selector must be a string, got {selector!r}"))
            links.append(CacheInput(_int(link["link"], f"{p}.link"), selector))
        inputs.append(tuple(links))
    return CacheRecord(digest, tuple(results), tuple(chains), tuple(inputs))


def parse_records(value: Any, *, what: str = "cache config") -> tuple[CacheRecord, ...]:
    """Records from a decoded JSON list (the ``records`` field, or an inline cache value)."""
    return tuple(_parse_record(r, f"records[{i}]") for i, r in enumerate(_list(value, "records")))


def layer_depths(layers: Sequence[CacheLayer], what: str = "cache config") -> list[int]:
    """Each layer's chain length (1 for a base layer), in one pass over the layers: every layer
    is walked once, then its depth is memoised, so the cost is linear however the chains are
    shaped (a per-layer walk with a per-layer ``seen`` set was quadratic: 16k layers took 7 s,
    a 200k chain hung the build). Parents must be in range. ``CacheFormatError`` for a loop
    (BuildKit: "invalid looping record") or a chain deeper than ``MAX_CHAIN_LENGTH``."""
    depth = [0] * len(layers)  # 0: not known yet
    for start in range(len(layers)):
        path: list[int] = []  # the unknown layers from ``start`` down to a known one (or a base)
        on_path: set[int] = set()
        index = start
        while index != -1 and depth[index] == 0:
            if index in on_path:
                raise CacheFormatError(f"{what}: layers[{index}] has a looping parent chain")
            on_path.add(index)
            path.append(index)
            index = layers[index].parent
        below = depth[index] if index != -1 else 0
        for layer in reversed(path):
            below += 1
            if below > MAX_CHAIN_LENGTH:
                raise CacheFormatError(
                    f"{what}: layers[{start}] ends a chain of more than {MAX_CHAIN_LENGTH} layers",
                    hint="real build caches are a few hundred layers deep at most; this one was "
                    "not used (rebuild and re-export it)",
                )
            depth[layer] = below
    return depth


def validate_cache_config(config: CacheConfig, what: str = "cache config") -> None:
    """Index ranges, loops (BuildKit: "invalid looping record") and chain depth
    (``MAX_CHAIN_LENGTH``); ``CacheFormatError``. Linear in the size of the config."""
    n_layers = len(config.layers)
    for i, layer in enumerate(config.layers):
        if layer.parent != -1 and not 0 <= layer.parent < n_layers:
            raise CacheFormatError(
                f"{what}: layers[{i}].parent {layer.parent} is out of range (0..{n_layers - 1} or -1)"
            )
    layer_depths(config.layers, what)
    n_records = len(config.records)
    for i, rec in enumerate(config.records):
        for res in rec.results:
            if not 0 <= res.layer < n_layers:
                raise CacheFormatError(
                    f"{what}: records[{i}] result layer {res.layer} is out of range"
                )
        for ch in rec.chains:
            if len(ch.layers) > MAX_CHAIN_LENGTH:
                raise CacheFormatError(
                    f"{what}: records[{i}] has a chain of {len(ch.layers)} layers "
                    f"(more than {MAX_CHAIN_LENGTH})"
                )
            for idx in ch.layers:
                if not 0 <= idx < n_layers:
                    raise CacheFormatError(
                        f"{what}: records[{i}] chain layer {idx} is out of range"
                    )
        for inp in rec.inputs:
            for link in inp:
                if not 0 <= link.link < n_records:
                    raise CacheFormatError(
                        f"{what}: records[{i}] input link {link.link} is out of range"
                    )
    _inputs_first(config.records, what)  # raises for a loop


def parse_cache_config(raw: bytes, *, what: str = "cache config") -> CacheConfig:
    """Parse and validate a ``cacheconfig.v0`` document (unknown fields are ignored)."""
    if len(raw) > MAX_CACHE_CONFIG_SIZE:
        raise CacheFormatError(f"{what} is too large ({len(raw)} > {MAX_CACHE_CONFIG_SIZE} bytes)")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CacheFormatError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CacheFormatError(f"{what} must be a JSON object, got {type(doc).__name__}")
    layers = []
    for i, obj in enumerate(_list(doc.get("layers"), "layers")):
        obj = _object(obj, f"layers[{i}]")
        if "blob" not in obj:
            raise CacheFormatError(f"{what}: layers[{i}] has no blob")
        parent = _int(
            obj.get("parent", 0), f"layers[{i}].parent"
        )  # omitted parent is 0 (Go omitempty)
        layers.append(CacheLayer(_digest(obj["blob"], f"layers[{i}].blob"), parent))
    try:
        records = parse_records(doc.get("records"), what=what)
    except CacheFormatError as exc:
        raise CacheFormatError(f"{what}: {exc.message}") from exc
    config = CacheConfig(
        tuple(layers),
        records,
        _string_map(doc, STEPS_FIELD),
        _string_map(doc, LAST_USED_FIELD),
        _object_map(doc, EXPLAIN_FIELD),
    )
    validate_cache_config(config, what)
    return config


def _string_map(doc: Mapping[str, Any], name: str) -> dict[str, str]:
    """One of our own extension maps; anything malformed is ignored silently."""
    raw = doc.get(name)
    if not isinstance(raw, dict):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, str)}


def _object_map(doc: Mapping[str, Any], name: str) -> dict[str, Mapping[str, Any]]:
    raw = doc.get(name)
    if not isinstance(raw, dict):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, dict)}


# --------------------------------------------------------------------------- writing


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _record_json(rec: CacheRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rec.results:
        out["layers"] = [{"layer": r.layer, "createdAt": r.created_at} for r in rec.results]
    if rec.chains:
        out["chains"] = [{"layers": list(c.layers), "createdAt": c.created_at} for c in rec.chains]
    out["digest"] = rec.digest
    if rec.inputs:
        out["inputs"] = [
            [
                (
                    {"selector": link.selector, "link": link.link}
                    if link.selector
                    else {"link": link.link}
                )
                for link in inp
            ]
            for inp in rec.inputs
        ]
    return out


def records_to_json(records: Sequence[CacheRecord]) -> bytes:
    """The records array alone, compact (the inline cache payload before base64)."""
    return _dumps([_record_json(r) for r in records]).encode()


def serialize_cache_config(config: CacheConfig) -> bytes:
    """Compact JSON in Go's field order. Does not reorder: call ``normalize_cache_config`` first
    for a deterministic document."""
    doc: dict[str, Any] = {}
    if config.layers:
        doc["layers"] = [
            {"blob": layer.blob}
            if layer.parent == 0
            else {"blob": layer.blob, "parent": layer.parent}
            for layer in config.layers
        ]
    if config.records:
        doc["records"] = [_record_json(r) for r in config.records]
    if config.steps:
        doc[STEPS_FIELD] = dict(sorted(config.steps.items()))
    if config.last_used:
        doc[LAST_USED_FIELD] = dict(sorted(config.last_used.items()))
    if config.explain:
        doc[EXPLAIN_FIELD] = dict(sorted(config.explain.items()))
    return _dumps(doc).encode()


def normalize_cache_config(config: CacheConfig) -> CacheConfig:
    """Deduplicate and sort so that equal caches give equal bytes (BuildKit's ``sortConfig``,
    made total).

    Layers are ordered by their chain of blob digests (own blob first, then the parent's chain),
    which, unlike BuildKit's tie-break on the old parent index, does not depend on input order.
    Records are ordered by digest, then by their inputs (selector, linked record digest).
    Identical layers (same blob and parent chain) and identical records merge; a record keeps
    its newest result only (BuildKit's ``bestResult``).
    """
    layers, layer_map = _sorted_layers(config.layers)
    rec_id, groups, ordered = _sorted_records(config.records)
    rec_index = {k: n for n, k in enumerate(ordered)}

    records = []
    for k in ordered:
        members = groups[k]
        first = config.records[members[0]]
        results = [r for m in members for r in config.records[m].results]
        chains = [c for m in members for c in config.records[m].chains]
        best_results: tuple[CacheResult, ...] = ()
        if results:
            best = max(results, key=lambda r: (r.created_at, -layer_map[r.layer]))
            best_results = (CacheResult(layer_map[best.layer], best.created_at),)
        new_chains = tuple(
            sorted(
                {
                    ChainedResult(tuple(layer_map[x] for x in c.layers), c.created_at)
                    for c in chains
                },
                key=lambda c: (c.layers, c.created_at),
            )
        )
        inputs = tuple(
            tuple(
                sorted(
                    {CacheInput(rec_index[rec_id[link.link]], link.selector) for link in inp},
                    key=lambda link: (link.link, link.selector),
                )
            )
            for inp in first.inputs
        )
        records.append(CacheRecord(first.digest, best_results, new_chains, inputs))
    return config.kept(tuple(records), layers)


def _cmp(a: str, b: str) -> int:
    return (a > b) - (a < b)


def _sorted_layers(layers: Sequence[CacheLayer]) -> tuple[tuple[CacheLayer, ...], list[int]]:
    """Distinct chains in the order of their blob tuples (own blob first, base last; a prefix
    first), and each input layer's new index.

    Prefix doubling (as suffix arrays are built): after round k every layer has the rank of
    the first 2**k blobs of its chain, from the pair (its rank, the rank of its ancestor 2**(k-1)
    up). ``log2(MAX_CHAIN_LENGTH)`` sorts of the layers at most, where a tuple of blobs per
    layer cost depth x layers, and comparing chains from the top cost up to depth per
    comparison (chains sharing thousands of upper blobs)."""
    if not layers:
        return (), []
    longest = max(layer_depths(layers))
    blob_rank = {blob: n for n, blob in enumerate(sorted({layer.blob for layer in layers}))}
    rank = [blob_rank[layer.blob] for layer in layers]
    jump = [layer.parent for layer in layers]  # the ancestor ``span`` layers up, or -1
    span = 1
    while span < longest and len(set(rank)) < len(rank):
        pairs = [(rank[i], rank[j] if j != -1 else -1) for i, j in enumerate(jump)]
        dense = {pair: n for n, pair in enumerate(sorted(set(pairs)))}
        rank = [dense[pair] for pair in pairs]
        jump = [jump[j] if j != -1 else -1 for j in jump]
        span *= 2
    first: dict[int, int] = {}  # rank -> a layer with that chain
    for i, r in enumerate(rank):
        first.setdefault(r, i)
    out = tuple(
        CacheLayer(layers[i].blob, rank[layers[i].parent] if layers[i].parent != -1 else -1)
        for _, i in sorted(first.items())
    )
    return out, rank


_RecordNode = tuple[Digest, tuple[tuple[tuple[str, int], ...], ...]]


def _sorted_records(
    records: Sequence[CacheRecord],
) -> tuple[list[int], dict[int, list[int]], list[int]]:
    """Each record's identity (digest and, per input, the set of (selector, linked identity)),
    interned as an id: ``(id per record, members per id, ids in order)``. The order is that of
    the nested tuples ``(digest, len(inputs), inputs)``, compared through a memoised
    comparator: a nested tuple per record was rebuilt and re-hashed for every link to it,
    exponential in the depth of a graph with shared inputs (diamonds)."""
    nodes: list[_RecordNode] = []
    ids: dict[_RecordNode, int] = {}
    memo: dict[tuple[int, int], int] = {}

    def compare(a: int, b: int) -> int:
        if a == b:
            return 0
        if (a, b) not in memo:
            (da, ia), (db, ib) = nodes[a], nodes[b]
            found = _cmp(da, db) or (len(ia) > len(ib)) - (len(ia) < len(ib))
            for alt_a, alt_b in zip(ia, ib, strict=False):
                if found:
                    break
                for (sa, la), (sb, lb) in zip(alt_a, alt_b, strict=False):
                    found = _cmp(sa, sb) or compare(la, lb)
                    if found:
                        break
                found = found or (len(alt_a) > len(alt_b)) - (len(alt_a) < len(alt_b))
            memo[a, b], memo[b, a] = found, -found
        return memo[a, b]

    def compare_pairs(x: tuple[str, int], y: tuple[str, int]) -> int:
        return _cmp(x[0], y[0]) or compare(x[1], y[1])

    pair_key = cmp_to_key(compare_pairs)

    rec_id = [-1] * len(records)
    for i in _inputs_first(records):
        rec = records[i]
        inputs = tuple(
            tuple(sorted({(link.selector, rec_id[link.link]) for link in inp}, key=pair_key))
            for inp in rec.inputs
        )
        node: _RecordNode = (rec.digest, inputs)
        found = ids.get(node)
        if found is None:
            found = ids[node] = len(nodes)
            nodes.append(node)
        rec_id[i] = found
    groups: dict[int, list[int]] = {}
    for i, node_id in enumerate(rec_id):
        groups.setdefault(node_id, []).append(i)
    return rec_id, groups, sorted(groups, key=cmp_to_key(compare))


def _inputs_first(records: Sequence[CacheRecord], what: str = "cache config") -> list[int]:
    """Record indexes, every record after the records it links to (iterative post-order);
    ``CacheFormatError`` for a loop. Each record's links are listed once."""
    links = [[link.link for inp in rec.inputs for link in inp] for rec in records]
    state = [0] * len(records)  # 0 new, 1 on stack, 2 done
    out: list[int] = []
    for start in range(len(records)):
        if state[start]:
            continue
        stack = [(start, 0)]
        state[start] = 1
        while stack:
            node, pos = stack.pop()
            if pos < len(links[node]):
                stack.append((node, pos + 1))
                nxt = links[node][pos]
                if state[nxt] == 1:
                    raise CacheFormatError(f"{what}: invalid looping record {records[nxt].digest}")
                if state[nxt] == 0:
                    state[nxt] = 1
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                out.append(node)
    return out
