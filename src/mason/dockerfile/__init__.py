"""mason.dockerfile."""
