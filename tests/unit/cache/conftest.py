"""Fixtures for the cache tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.cache.cache_fakes import REPO_ROOT, FakeBlobStore, FakeRegistry


@pytest.fixture(scope="session")
def shared_testdata() -> Path:
    path = (REPO_ROOT / ".." / "shared" / "testdata").resolve()
    if not path.is_dir():
        pytest.fail(f"shared test data missing: expected {path} (../shared next to the repo root)")
    return path


@pytest.fixture
def fake_registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def blob_store() -> FakeBlobStore:
    return FakeBlobStore()
