"""mason.build: Dockerfile -> graph, the concrete ops, snapshots, image assembly, outputs.

The one package that knows every subsystem. Public API:

- ``build(options, *, root, progress=None, stdout=None, client=None, executor=None, cancel=None)
  -> BuildOutcome`` (``mason.build.builder``): one build end to end.
- ``BuildOptions`` / ``OutputSpec`` / ``SecretSpec`` and ``parse_output`` / ``parse_secret`` /
  ``outputs_for`` (``mason.build.options``): buildx's ``--output`` and ``--secret`` syntax.
- ``BuildOutcome``: ``image_digest``, ``config_digest``, ``exported``, ``states`` (step name ->
  cached/executed), ``cached_steps``, ``executed_steps``, ``downloaded_blobs``, ``metadata``
  (what ``--metadata-file`` writes: ``containerimage.digest``, ``containerimage.descriptor``...).
- ``Blobs`` (``mason.build.blobs``, internal): ``export_variant(lr, compression, level, force)`` is
  the compression rule of image outputs and caches (without force-compression, a base image's
  layers keep theirs; a cache also keeps an imported cache's, an image gives them its own); ``note_stored(blob, ref, media_type, size)`` / ``mount_hints(blob)`` are
  where blobs live (kept in the metadata), for cross-repo mounts by every export.
- ``StateRoot`` (``mason.build.state``): ``$MASON_ROOT`` -- content store, sqlite metadata,
  fcntl lock (shared while building, exclusive for prune and leftover cleanup), ``usage()``,
  ``prune(keep_storage, all_=)`` (untracked snapshot directories always go; ``all_`` leaves
  only the skeleton); ``parse_size`` / ``human_size`` (sizes as docker reads and prints them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mason.build.builder import BuildOutcome, build
    from mason.build.options import BuildOptions, OutputSpec, SecretSpec
    from mason.build.state import StateRoot

__all__ = ["BuildOptions", "BuildOutcome", "OutputSpec", "SecretSpec", "StateRoot", "build"]

_LAZY = {
    "build": "mason.build.builder",
    "BuildOutcome": "mason.build.builder",
    "BuildOptions": "mason.build.options",
    "OutputSpec": "mason.build.options",
    "SecretSpec": "mason.build.options",
    "StateRoot": "mason.build.state",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mason.build' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
