"""``mason.engine.remotecache.read_export_priors``: a registry ``--cache-to`` ref that no
``--cache-from`` reads is read beside the build, and its export takes that read as its prior
instead of reading the ref on its own critical path."""

from __future__ import annotations

from tests.unit.cache.cache_fakes import FakeRegistry

from mason.cache.options import parse_cache_from, parse_cache_to
from mason.engine import remotecache
from mason.engine.remotecache import read_export_priors

CACHE = "priors.test/app-cache"


def test_a_cache_to_ref_nothing_imports_is_read_once_beside_the_build() -> None:
    registry = FakeRegistry()
    cache_to = parse_cache_to(f"type=registry,ref={CACHE},mode=max")
    priors = read_export_priors(cache_to, (), registry)
    assert list(priors) == [remotecache._dest_key(cache_to[0])]
    prior = remotecache._prior(cache_to[0], {}, priors)
    assert prior is not None and prior.manifest is None  # a first build: nothing there yet
    assert [op for op, *_ in registry.calls].count("get_manifest") == 1


def test_no_early_read_where_an_import_reads_the_ref_or_the_cache_is_local() -> None:
    registry = FakeRegistry()
    cache_to = [
        *parse_cache_to(f"type=registry,ref={CACHE},mode=max"),
        *parse_cache_to("type=local,dest=/tmp/mason-priors-test"),
    ]
    cache_from = parse_cache_from(f"type=registry,ref={CACHE}")
    assert read_export_priors(cache_to, cache_from, registry) == {}
    assert registry.calls == []


def test_a_failed_early_read_leaves_the_read_to_the_export() -> None:
    class Broken(FakeRegistry):
        def get_manifest(self, ref: object) -> object:
            raise RuntimeError("connection reset")

        def head_manifest(self, ref: object) -> object:
            raise RuntimeError("connection reset")

    cache_to = parse_cache_to(f"type=registry,ref={CACHE}")
    priors = read_export_priors(cache_to, (), Broken())  # type: ignore[arg-type]
    assert remotecache._prior(cache_to[0], {}, priors) is None
