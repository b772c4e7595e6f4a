"""Issue 9 item 5: long layer chains in an imported cache cost linear time, are bounded
(``MAX_CHAIN_LENGTH``) and make the import a warning, never a hang or a crash.

The sizes are chosen so that the quadratic code these tests replace could not finish under
the 20 s timeout (16k layers in one chain took 7.4 s; the wide case below is ~500 million
steps quadratically), while linear code takes well under a second each.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.cache.cache_fakes import FakeRegistry, key

from mason.cache.format import (
    MAX_CHAIN_LENGTH,
    CacheConfig,
    CacheFormatError,
    CacheInput,
    CacheLayer,
    CacheRecord,
    CacheResult,
    ChainedResult,
    layer_depths,
    normalize_cache_config,
    parse_cache_config,
    validate_cache_config,
)
from mason.cache.registry import load_registry_cache
from mason.digest import Digest
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.manifest import build_manifest
from mason.oci.reference import Reference


def _blob(i: int) -> Digest:
    return Digest("sha256:" + hashlib.sha256(str(i).encode()).hexdigest())


def _chain_doc(n: int) -> bytes:
    layers: list[dict[str, Any]] = [{"blob": _blob(i), "parent": i - 1} for i in range(n)]
    layers[0]["parent"] = -1
    return json.dumps(
        {"layers": layers, "records": [{"digest": key("top"), "layers": [{"layer": n - 1}]}]}
    ).encode()


@pytest.mark.timeout(20)
def test_a_200k_layer_chain_is_refused_at_once_naming_the_bound() -> None:
    raw = _chain_doc(200_000)  # ~20 MB: under the 64 MiB config cap
    with pytest.raises(CacheFormatError) as err:
        parse_cache_config(raw, what="cache reg/x")
    assert f"more than {MAX_CHAIN_LENGTH} layers" in err.value.message
    assert err.value.message.startswith("cache reg/x: layers[")


@pytest.mark.timeout(20)
def test_validation_is_linear_in_the_number_of_layers() -> None:
    # 60 chains of 4000 layers (each within the bound): 240k layers, 480 million chain steps
    # for a walk per layer, 240k for a memoised one
    n_chains, depth = 60, 4000
    layers = [
        CacheLayer(_blob(c * depth + d), c * depth + d - 1 if d else -1)
        for c in range(n_chains)
        for d in range(depth)
    ]
    config = CacheConfig(tuple(layers))
    validate_cache_config(config)
    assert max(layer_depths(config.layers)) == depth
    # the chain of the top layer is walked once per lookup, linearly
    assert len(config.chain(len(layers) - 1)) == depth


def test_the_depth_bound_is_exact() -> None:
    parse_cache_config(_chain_doc(MAX_CHAIN_LENGTH))
    with pytest.raises(CacheFormatError):
        parse_cache_config(_chain_doc(MAX_CHAIN_LENGTH + 1))


def test_a_loop_under_a_long_chain_is_found() -> None:
    n = 3000
    layers = [CacheLayer(_blob(i), i - 1) for i in range(n)]
    layers[0] = CacheLayer(_blob(0), 5)  # 5 -> 4 -> ... -> 0 -> 5
    with pytest.raises(CacheFormatError, match="looping parent chain"):
        validate_cache_config(CacheConfig(tuple(layers)))


def test_an_over_long_inline_chain_is_refused() -> None:
    layers = (CacheLayer(_blob(0)),)
    rec = CacheRecord(key("r"), chains=(ChainedResult((0,) * (MAX_CHAIN_LENGTH + 1)),))
    with pytest.raises(CacheFormatError, match="chain of"):
        validate_cache_config(CacheConfig(layers, (rec,)))


@pytest.mark.timeout(20)
def test_import_of_an_over_long_chain_is_a_warning_not_a_hang(fake_registry: FakeRegistry) -> None:
    raw = _chain_doc(200_000)
    ref = Reference.parse("reg.example/app/cache:latest")
    config = Descriptor(
        mt.BUILDKIT_CACHE_CONFIG, Digest("sha256:" + hashlib.sha256(raw).hexdigest()), len(raw)
    )
    fake_registry.blobs["app/cache"] = {config.digest: raw}
    manifest = build_manifest(config, [], mt.OCI_MANIFEST)
    fake_registry.put_manifest(ref, manifest.raw, manifest.media_type)
    source = load_registry_cache(fake_registry, ref)  # type: ignore[arg-type]
    assert source.warning is not None
    assert f"more than {MAX_CHAIN_LENGTH} layers" in source.warning
    assert source.lookup(key("top")) is None


@pytest.mark.timeout(20)
def test_record_loops_and_fan_in_are_linear() -> None:
    # one record linking to 200k others: the loop check lists each record's links once
    n = 200_000
    records = [CacheRecord(key(str(i))) for i in range(n)]
    records.append(CacheRecord(key("top"), inputs=(tuple(CacheInput(i) for i in range(n)),)))
    validate_cache_config(CacheConfig((), tuple(records)))


# -- normalize_cache_config: same order as the tuple-key algorithm, without its cost ----------


def _reference_normalize(config: CacheConfig) -> CacheConfig:
    """The previous implementation (a tuple of blobs per layer, a nested tuple per record),
    kept as the oracle for the order and merging rules."""

    def chain_key(i: int) -> tuple[str, ...]:
        return tuple(config.layers[j].blob for j in reversed(config.chain(i)))

    keys = [chain_key(i) for i in range(len(config.layers))]
    unique = sorted(set(keys))
    new_index = {k: n for n, k in enumerate(unique)}
    layers = tuple(CacheLayer(Digest(k[0]), new_index[k[1:]] if len(k) > 1 else -1) for k in unique)
    layer_map = [new_index[k] for k in keys]
    memo: dict[int, tuple[Any, ...]] = {}

    def rec_key(i: int) -> tuple[Any, ...]:
        if i not in memo:
            rec = config.records[i]
            inputs = tuple(
                tuple(sorted({(link.selector, rec_key(link.link)) for link in inp}))
                for inp in rec.inputs
            )
            memo[i] = (rec.digest, len(inputs), inputs)
        return memo[i]

    groups: dict[tuple[Any, ...], list[int]] = {}
    for i in range(len(config.records)):
        groups.setdefault(rec_key(i), []).append(i)
    ordered = sorted(groups)
    rec_index = {k: n for n, k in enumerate(ordered)}
    records = []
    for k in ordered:
        members = groups[k]
        first = config.records[members[0]]
        results = [r for m in members for r in config.records[m].results]
        best_results: tuple[CacheResult, ...] = ()
        if results:
            best = max(results, key=lambda r: (r.created_at, -layer_map[r.layer]))
            best_results = (CacheResult(layer_map[best.layer], best.created_at),)
        inputs = tuple(
            tuple(
                sorted(
                    {CacheInput(rec_index[rec_key(link.link)], link.selector) for link in inp},
                    key=lambda link: (link.link, link.selector),
                )
            )
            for inp in first.inputs
        )
        records.append(CacheRecord(first.digest, best_results, (), inputs))
    return CacheConfig(layers, tuple(records), {})


@st.composite
def _configs(draw: st.DrawFn) -> CacheConfig:
    n_layers = draw(st.integers(0, 14))
    blobs = [_blob(i) for i in range(draw(st.integers(1, 4)))]  # few blobs: many shared prefixes
    layers = []
    for i in range(n_layers):
        parent = draw(st.integers(-1, i - 1))
        layers.append(CacheLayer(draw(st.sampled_from(blobs)), parent))
    n_records = draw(st.integers(0, 10))
    digests = [key(str(i)) for i in range(draw(st.integers(1, 4)))]
    records = []
    for i in range(n_records):
        inputs = []
        for _ in range(draw(st.integers(0, 2)) if i else 0):
            links = draw(st.lists(st.integers(0, i - 1), min_size=1, max_size=3))
            inputs.append(
                tuple(CacheInput(link, draw(st.sampled_from(["", "a", "b"]))) for link in links)
            )
        results = ()
        if n_layers and draw(st.booleans()):
            results = (
                CacheResult(
                    draw(st.integers(0, n_layers - 1)), draw(st.sampled_from(["t1", "t2"]))
                ),
            )
        records.append(CacheRecord(draw(st.sampled_from(digests)), results, (), tuple(inputs)))
    order = draw(st.permutations(range(n_records)))  # links may point forward too
    position = {old: new for new, old in enumerate(order)}
    shuffled: list[CacheRecord | None] = [None] * n_records
    for old, rec in enumerate(records):
        moved = tuple(
            tuple(CacheInput(position[link.link], link.selector) for link in inp)
            for inp in rec.inputs
        )
        shuffled[position[old]] = CacheRecord(rec.digest, rec.results, (), moved)
    return CacheConfig(tuple(layers), tuple(r for r in shuffled if r is not None))


@settings(max_examples=300, deadline=None)
@given(_configs())
def test_normalize_orders_and_merges_like_the_tuple_keys(config: CacheConfig) -> None:
    assert normalize_cache_config(config) == _reference_normalize(config)


@pytest.mark.timeout(20)
def test_normalize_of_deep_shared_inputs_and_long_chains_is_fast() -> None:
    # 200 levels of diamonds: the nested tuple of the top record unfolds to 2**200 nodes
    records = [CacheRecord(key("base"))]
    for level in range(200):
        a, b = len(records), len(records) + 1
        below = len(records) - 1
        records.append(CacheRecord(key(f"a{level}"), inputs=((CacheInput(below),),)))
        records.append(CacheRecord(key(f"b{level}"), inputs=((CacheInput(below),),)))
        records.append(CacheRecord(key(f"top{level}"), inputs=((CacheInput(a),), (CacheInput(b),))))
    # and 40 chains of 4000 layers sharing their upper blobs
    depth = 4000
    layers = [
        CacheLayer(_blob(d if d else 10**6 + c), c * depth + d - 1 if d else -1)
        for c in range(40)
        for d in range(depth)
    ]
    out = normalize_cache_config(CacheConfig(tuple(layers), tuple(records)))
    assert len(out.records) == len(records) and len(out.layers) == len(layers)
    top = next(r for r in out.records if r.digest == key("top199"))
    assert len(top.inputs) == 2
