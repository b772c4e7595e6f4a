"""mason.layer."""
