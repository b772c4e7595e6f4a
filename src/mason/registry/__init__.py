"""mason.registry: a distribution-spec client (auth, credentials, retries, blobs, manifests, copy)."""

import sys

# httpx's package imports its command-line client (click, rich, pygments: about half of
# httpx's import time) whenever click is installed; mason never runs it. A None entry makes
# that optional import fail as if click were missing (httpx then defines a stub `main`).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from mason.registry.auth import Credentials, CredentialStore  # noqa: E402 (after the line above)
from mason.registry.client import FetchedManifest, RegistryClient  # noqa: E402
from mason.registry.errors import RegistryAuthError, RegistryError, RegistryNotFoundError  # noqa: E402

__all__ = [
    "CredentialStore",
    "Credentials",
    "FetchedManifest",
    "RegistryAuthError",
    "RegistryClient",
    "RegistryError",
    "RegistryNotFoundError",
]
