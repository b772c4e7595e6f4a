"""mason.cache."""
