"""mason.engine: Dockerfile -> graph, the concrete ops, snapshots, image assembly, outputs.

The one package that knows every subsystem. Public API (import each name from its module):

- ``build(options, *, root, progress=None, stdout=None, client=None, executor=None, cancel=None)
  -> BuildOutcome`` (``mason.engine.builder``): one build end to end.
- ``BuildOptions`` / ``OutputSpec`` / ``SecretSpec`` and ``parse_output`` / ``parse_secret`` /
  ``outputs_for`` (``mason.engine.options``): buildx's ``--output`` and ``--secret`` syntax.
- ``BuildOutcome``: ``image_digest``, ``config_digest``, ``exported``, ``states`` (step name ->
  cached/executed), ``cached_steps``, ``executed_steps``, ``downloaded_blobs``, ``metadata``
  (what ``--metadata-file`` writes: ``containerimage.digest``, ``containerimage.descriptor``...).
- ``Blobs`` (``mason.engine.blobs``, internal): ``export_variant(lr, compression, level, force)`` is
  the compression rule of image outputs and caches (without force-compression, a base image's
  layers keep theirs; a cache also keeps an imported cache's, an image gives them its own); ``note_stored(blob, ref, media_type, size)`` / ``mount_hints(blob)`` are
  where blobs live (kept in the metadata), for cross-repo mounts by every export.
- ``StateRoot`` (``mason.engine.state``): ``$MASON_ROOT`` -- content store, sqlite metadata,
  fcntl lock (shared while building, exclusive for prune and leftover cleanup), ``usage()``,
  ``prune(keep_storage, all_=)`` (untracked snapshot directories always go; ``all_`` leaves
  only the skeleton); ``parse_size`` / ``human_size`` (sizes as docker reads and prints them).
"""

# The package's names live in the modules that define them (import ``build`` from
# ``mason.engine.builder``, ``BuildOptions`` from ``mason.engine.options``): importing the package
# stays free, and every arrow is an import a reader and import-linter can see.
