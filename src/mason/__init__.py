"""mason: a daemonless container image builder whose build cache lives in OCI registries."""

__version__ = "0.1.0"
