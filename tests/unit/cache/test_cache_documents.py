"""Every BuildKit cache document in the test data (``tests/data``) is read without error."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tests.unit.cache.cache_fakes import FakeRegistry

from mason.cache.format import parse_cache_config
from mason.cache.local import load_local_cache
from mason.cache.model import DISTRIBUTION_SOURCE_PREFIX
from mason.cache.options import parse_cache_from
from mason.cache.registry import load_registry_cache
from mason.digest import sha256_bytes
from mason.oci import mediatypes as mt
from mason.oci.descriptor import ANNOTATION_UNCOMPRESSED
from mason.oci.reference import Reference

COMPRESSION_DIRS = [
    "zstd",
    "zstd-docker",
    "zstd-oci-force",
    "estargz",
    "estargz-docker",
    "estargz-oci-force",
]


def _load_registry_documents(data: Path) -> FakeRegistry:
    """Serve the captured documents from a fake registry as distribution served them."""
    fake = FakeRegistry()
    docs = data / "registry-documents"
    with open(docs / "INDEX.tsv") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            raw = (docs / row["file"]).read_bytes()
            assert sha256_bytes(raw) == row["digest"]
            if row["reference"] == "blob":
                fake.blobs.setdefault(row["repo"], {})[row["digest"]] = raw
            else:
                fake.manifests.setdefault(row["repo"], {})[row["reference"]] = (
                    raw,
                    row["mediaType(Content-Type)"],
                )
    return fake


@pytest.mark.parametrize(
    ("repo", "config_file", "n_layers"),
    [
        ("cache/bk", "buildkit-v0.11.6-cacheconfig-mode-max.cold.json", 10),
        ("cache/bk-min", "buildkit-v0.11.6-cacheconfig-mode-min.json", 5),
    ],
)
def test_registry_index_form_from_buildkit(
    testdata: Path, repo: str, config_file: str, n_layers: int
) -> None:
    fake = _load_registry_documents(testdata)
    ref = Reference.parse(f"127.0.0.1:5000/{repo}:latest")
    source = load_registry_cache(fake, ref)
    assert source.warning is None
    assert source.form == "index"
    config = parse_cache_config((testdata / "registry-documents" / config_file).read_bytes())
    assert source.config == config
    assert len(source.descriptors) == n_layers
    # only the manifest and the config were read: no layer blob
    assert [c[0] for c in fake.calls] == ["get_manifest", "get_blob"]
    assert fake.calls[1][2] == source.config_descriptor.digest  # type: ignore[union-attr]
    hits = [source.lookup(r.digest) for r in config.records if r.results]
    assert hits and all(h is not None for h in hits)
    for hit in hits:
        assert hit is not None
        assert hit.source == f"registry {ref}"
        assert all(d.media_type == mt.OCI_LAYER_GZIP for d in hit.layers)
        assert all(
            d.annotations[DISTRIBUTION_SOURCE_PREFIX + "127.0.0.1:5000"] == repo for d in hit.layers
        )
        assert hit.diff_ids == tuple(d.annotations[ANNOTATION_UNCOMPRESSED] for d in hit.layers)
    # key-only records are not hits
    assert all(source.lookup(r.digest) is None for r in config.records if not r.has_result)


def test_registry_warm_reexport_has_same_records(testdata: Path) -> None:
    fake = _load_registry_documents(testdata)
    docs = testdata / "registry-documents"
    warm = (docs / "buildkit-v0.11.6-cache-mode-max-index.warm-reexport.json").read_bytes()
    fake.manifests["cache/bk"]["warm"] = (warm, mt.OCI_INDEX)
    cold_source = load_registry_cache(fake, Reference.parse("127.0.0.1:5000/cache/bk:latest"))
    warm_source = load_registry_cache(fake, Reference.parse("127.0.0.1:5000/cache/bk:warm"))
    assert warm_source.warning is None
    assert warm_source.config == cold_source.config
    assert set(warm_source.descriptors) == set(cold_source.descriptors)


@pytest.mark.parametrize(
    ("repo", "tag", "fragment"),
    [
        ("app", "bk", "without inline cache"),  # a BuildKit image: no moby.buildkit.cache.v0
        ("base/busybox", "latest", "without inline cache"),
        (
            "cache/test",
            "61275e05792bec63ad8a22fa1b5537a596b08b73139949d6777789c1e49c1b15",
            "without inline cache",
        ),
    ],
)
def test_non_caches_give_a_warning_not_an_error(
    testdata: Path, repo: str, tag: str, fragment: str
) -> None:
    fake = _load_registry_documents(testdata)
    source = load_registry_cache(fake, Reference.parse(f"127.0.0.1:5000/{repo}:{tag}"))
    assert source.warning is not None and fragment in source.warning
    assert source.lookup(next(iter(source.descriptors), "sha256:" + "0" * 64)) is None


def test_nothing_at_the_ref_yet_is_missing_not_a_warning(testdata: Path) -> None:
    fake = _load_registry_documents(testdata)
    source = load_registry_cache(fake, Reference.parse("127.0.0.1:5000/cache/none:latest"))
    assert (
        source.warning is None
        and source.missing == "no cache at 127.0.0.1:5000/cache/none:latest yet"
    )
    assert source.lookup("sha256:" + "0" * 64) is None


@pytest.mark.parametrize("name", COMPRESSION_DIRS)
def test_local_layouts_from_buildkit(testdata: Path, name: str) -> None:
    root = testdata / "compression" / name
    [options] = parse_cache_from(f"type=local,src={root}")
    source = load_local_cache(options)
    assert source.warning is None, source.warning
    assert source.form == "index"
    assert (len(source.config.layers), len(source.config.records), len(source.descriptors)) == (
        8,
        11,
        8,
    )
    facts = {}
    with open(testdata / "compression" / "INDEX.tsv") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["layout"] == name and row["role"].startswith("layer:"):
                facts[row["digest"]] = row
    assert set(source.descriptors) == set(facts)
    for digest, desc in source.descriptors.items():
        assert desc.media_type == facts[digest]["mediaType"]
        assert desc.annotations[ANNOTATION_UNCOMPRESSED] == facts[digest]["diffID"]
        if facts[digest]["toc.digest"]:
            assert (
                desc.annotations["containerd.io/snapshot/stargz/toc.digest"]
                == facts[digest]["toc.digest"]
            )
    hits = [source.lookup(r.digest) for r in source.config.records if r.results]
    assert len(hits) == 7 and all(h is not None for h in hits)
    # a hit's blob opens lazily and verifies
    deepest = max((h for h in hits if h is not None), key=lambda h: len(h.layers))
    top = deepest.layers[-1]
    with deepest.open_blob(top) as stream:
        data = stream.read()
        stream.read()
    assert sha256_bytes(data) == top.digest


def test_local_import_by_digest_and_missing_tag(testdata: Path) -> None:
    root = testdata / "compression" / "zstd"
    index = json.loads((root / "index.json").read_bytes())
    digest = index["manifests"][0]["digest"]
    [by_digest] = parse_cache_from(f"type=local,src={root},digest={digest}")
    assert load_local_cache(by_digest).warning is None
    [missing] = parse_cache_from(f"type=local,src={root},tag=nope")
    source = load_local_cache(missing)
    assert source.warning is not None and "skipped" in source.warning and "nope" in source.warning
    [no_dir] = parse_cache_from(f"type=local,src={root}/does-not-exist")
    absent = load_local_cache(no_dir)
    assert absent.warning is None and absent.missing == f"no cache at {root}/does-not-exist yet"
