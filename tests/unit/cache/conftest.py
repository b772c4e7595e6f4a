"""Fixtures for the cache tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.testdata import TESTDATA
from tests.unit.cache.cache_fakes import FakeBlobStore, FakeRegistry

import mason.cache.registry as registry_cache


@pytest.fixture(scope="session")
def testdata() -> Path:
    """``tests/data``: BuildKit's cache exports and registry documents (see its README)."""
    return TESTDATA


@pytest.fixture
def fake_registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def blob_store() -> FakeBlobStore:
    return FakeBlobStore()


@pytest.fixture(autouse=True)
def _no_settle_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """A merging export reads the ref back after a pause (for writers elsewhere); the
    in-memory fake has no such writers unless a test makes one, so no pause."""
    monkeypatch.setattr(registry_cache, "_SETTLE_SECONDS", 0.0)
