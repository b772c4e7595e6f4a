"""OCI models: media types, platforms, descriptors, manifests, configs, references, layouts."""

from mason.oci.descriptor import Descriptor
from mason.oci.errors import (
    ConfigError,
    InvalidReferenceError,
    LayoutError,
    ManifestError,
    OCIError,
)
from mason.oci.platform import Platform, host_platform
from mason.oci.reference import Reference

__all__ = [
    "ConfigError",
    "Descriptor",
    "InvalidReferenceError",
    "LayoutError",
    "ManifestError",
    "OCIError",
    "Platform",
    "Reference",
    "host_platform",
]
