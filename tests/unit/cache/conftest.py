"""Fixtures for the cache tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.testdata import TESTDATA
from tests.unit.cache.cache_fakes import FakeBlobStore, FakeRegistry


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
