"""mason.registry."""
