"""Layers sent to the registry cache while the build goes on (issue 14).

A build exporting its cache to a registry in ``mode=max`` ships every layer it makes there.
Each one goes up to that cache's repository as soon as its step has committed it, on a
background thread, beside the steps that follow (a RUN waits for runc while the upload waits
for the registry), instead of all of them after the last step. The export then finds it
there, or waits for the put under way: ``mason.registry.push`` takes turns per blob, and
the image push mounts the layer from the cache's repository.

From the first layer on it also keeps an upload session open in that repository
(``RegistryClient.keep_upload_ahead``): each upload takes the one opened before it, and the
one open when the export begins is the cache's config's, put after the last step with no
POST to wait for.

Best effort: an upload that fails is left to the export, which makes it again and reports
what fails. Only a layer the cache ships as it was made goes early: the cache's compression
is the layers' own gzip and nothing forces another. A put not started when the export
begins is dropped (the export makes it); the ones under way finish before the build ends.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from mason.cache.options import CacheOptions
from mason.engine.blobs import Blobs
from mason.engine.state import LayerRef
from mason.futures import Future, ThreadPoolExecutor
from mason.oci import mediatypes as mt
from mason.oci.reference import Reference
from mason.registry.push import StoreOutcome, push_blob

__all__ = ["EarlyPush"]


class EarlyPush:
    """Uploads of the layers a build makes to one registry cache's repository."""

    def __init__(self, client: Any, ref: Reference, blobs: Blobs) -> None:
        self._client = client
        self._ref = ref
        self._blobs = blobs
        self._pool = ThreadPoolExecutor(2, "early-push")
        self._queued: list[Future[StoreOutcome]] = []

    @classmethod
    def for_build(
        cls, cache_to: Sequence[CacheOptions], client: Any, blobs: Blobs
    ) -> EarlyPush | None:
        """For the first ``--cache-to`` that ships every layer as made; None when none does."""
        if client is None:
            return None
        for opt in cache_to:
            if (
                opt.type == "registry"
                and opt.ref is not None
                and opt.mode == "max"
                and opt.compression == "gzip"
                and opt.compression_level is None
                and not opt.force_compression
            ):
                return cls(client, opt.ref, blobs)
        return None

    def layer_made(self, lr: LayerRef) -> None:
        """Queue the upload of a layer a step just committed. A failed upload stays in its
        future, unread: the export puts the layer again and reports what fails; and it
        records where every blob it lists now is (``Blobs.note_stored``), these included."""
        if lr.blob is not None and lr.media_type in (mt.OCI_LAYER_GZIP, mt.DOCKER_LAYER_GZIP):
            desc = self._blobs.descriptor(lr, oci=True)
            opener = self._blobs.opener(lr)
            self._client.keep_upload_ahead(self._ref)  # first: this upload takes the session
            put = functools.partial(push_blob, made_here=True)  # just committed by this build
            self._queued.append(self._pool.submit(put, self._client, self._ref, desc, opener))

    def stop_queued(self) -> None:
        """The export begins: uploads not started yet are its own, and so is the upload
        session kept open (the cache's config takes it)."""
        self._client.stop_upload_ahead(self._ref)
        for future in self._queued:
            future.cancel()

    def close(self) -> None:
        """Drop what is queued and wait for the uploads under way."""
        self.stop_queued()
        self._pool.shutdown(wait=True)
