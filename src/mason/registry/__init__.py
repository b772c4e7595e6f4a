"""mason.registry: a distribution-spec client (auth, credentials, retries, blobs, manifests, copy)."""

from mason.registry.auth import Credentials, CredentialStore
from mason.registry.client import FetchedManifest, RegistryClient
from mason.registry.errors import RegistryAuthError, RegistryError, RegistryNotFoundError

__all__ = [
    "CredentialStore",
    "Credentials",
    "FetchedManifest",
    "RegistryAuthError",
    "RegistryClient",
    "RegistryError",
    "RegistryNotFoundError",
]
