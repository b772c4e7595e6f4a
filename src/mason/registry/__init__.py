"""mason.registry: a distribution-spec client (auth, credentials, retries, blobs, manifests, copy).

The package itself imports nothing (import ``mason.registry.client``, ``.auth``, ``.errors``):
``mason.registry.early``, a build's first requests, runs before the HTTP client (``mason.registry.wire``) is imported."""
