"""Imported caches are indexed by chain keys: BuildKit's records (golden) are found by the chain
keys mason computes for the same steps, and a record is not found by a key of other inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mason.cache.format import parse_cache_config
from mason.cache.model import CacheSource
from mason.llb.cachegraph import Link, chain_key, record_chain_keys
from mason.oci.descriptor import Descriptor

DATA = Path(__file__).resolve().parents[2] / "data" / "buildkit-keys"


def _source(case: str) -> tuple[CacheSource, dict[str, object]]:
    cache = DATA / case / "cache"
    blobs = cache / "blobs" / "sha256"
    index = json.loads((cache / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    raw = (blobs / manifest["config"]["digest"][7:]).read_bytes()
    descriptors = {d["digest"]: Descriptor.from_json(d) for d in manifest["layers"]}
    return CacheSource(case, parse_cache_config(raw), descriptors), json.loads(raw)


@pytest.mark.parametrize("case", ["01-run-basic", "06-multistage", "04-copy-context"])
def test_every_result_of_a_buildkit_cache_is_found_by_its_chain_keys(case: str) -> None:
    source, doc = _source(case)
    keys = record_chain_keys(doc)
    with_results = [i for i, r in enumerate(doc["records"]) if r.get("layers")]  # type: ignore[union-attr]
    assert with_results
    for i in with_results:
        assert keys[i]
        for key in keys[i]:
            hit = source.lookup(key)
            assert hit is not None and hit.layers, (case, i)


def test_a_record_over_other_inputs_is_not_found() -> None:
    source, doc = _source("01-run-basic")
    records = doc["records"]  # type: ignore[index]
    top = next(r for r in records if r.get("layers") and r.get("inputs"))
    other = chain_key("sha256:" + "1" * 64, [])
    assert source.lookup(chain_key(top["digest"], [Link(0, "", other)])) is None
