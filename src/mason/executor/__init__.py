"""mason.executor."""
