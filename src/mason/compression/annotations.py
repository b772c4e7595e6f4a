"""Descriptor annotation names of compressed layers, in a module of their own so that code
which only reads or writes descriptors (the cache model, ``cache inspect``) need not load
the eStargz writer and reader."""

from __future__ import annotations

__all__ = ["ANNOTATION_TOC_DIGEST", "ANNOTATION_UNCOMPRESSED", "ANNOTATION_UNCOMPRESSED_SIZE"]

#: digest of an eStargz blob's TOC (stargz-snapshotter's name, which BuildKit writes)
ANNOTATION_TOC_DIGEST = "containerd.io/snapshot/stargz/toc.digest"
#: size of an eStargz blob's whole uncompressed stream, TOC included
ANNOTATION_UNCOMPRESSED_SIZE = "io.containers.estargz.uncompressed-size"
#: diff ID of a layer blob (containerd's name)
ANNOTATION_UNCOMPRESSED = "containerd.io/uncompressed"
