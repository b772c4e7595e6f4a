"""Test support shared by every package's integration tests (and by benches and the demo).

Importable without pytest: ``from tests.support.registry_server import start_registry``.
"""

from tests.support.registry_server import (
    RegistryServer,
    count_blob_gets,
    count_requests,
    registry_available,
    start_registry,
)

__all__ = [
    "RegistryServer",
    "count_blob_gets",
    "count_requests",
    "registry_available",
    "start_registry",
]
