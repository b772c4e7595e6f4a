"""mason.build."""
