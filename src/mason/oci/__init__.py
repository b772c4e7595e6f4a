"""mason.oci."""
