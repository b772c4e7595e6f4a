"""mason.solver."""
