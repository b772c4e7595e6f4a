"""Snapshots, layer diffs as deterministic tars, and safe application of layer tars.

Public API (all errors are ``LayerError``, a ``DiagnosticError`` naming the
entry or snapshot and the reason):

Snapshots (``mason.layer.snapshot``)
    ``Snapshotter(root, *, mode="auto"|"overlay"|"copy")`` — snapshots under
    ``root`` (e.g. ``$MASON_ROOT/snapshots``). ``auto`` probes an overlayfs
    mount there the first time ``.mode`` is needed and falls back to copying
    (``.fallback_reason``; ``.on_fallback(reason)`` is called then).
    Opening one removes what killed processes left (``cleanup() -> int``).

    - ``prepare(parents) -> ActiveSnapshot``: ``parents`` are committed ids,
      lowest first, each once. A ``diff`` snapshot is a layer in overlay form;
      one with no recorded parents stacks on any chain (one unpacked layer
      serves every chain it is in), one with parents belongs on them (see
      ``apply_layer``); a ``full`` one hides what is below it. ``active.path`` is a
      writable root filesystem: an overlay mount (lowerdir = parents reversed)
      or, in copy mode, a copy of the parents' merged tree. Stacks too long
      for one mount option page or over 500 lower dirs are partly flattened
      into a cached full snapshot. Use ``with``: leaving without commit
      discards (unmounts, deletes).
    - ``commit(active, *, snapshot_id=None) -> str``: the snapshot id (one
      atomic rename). Its content is the overlay upper dir (kind ``diff``) or
      the full tree (kind ``full``, copy mode). A caller's ``snapshot_id``
      (``[0-9a-z]{1,32}``) must be a content address: if it exists already,
      ``active`` is discarded and the existing snapshot kept.
    - ``write_active_layer(active, dst, *, source_date_epoch=None) -> LayerInfo``:
      the layer tar of what changed in ``active`` (takes an overlay mount down
      first); commit afterwards, e.g. under an id made from the diff ID.
    - ``apply_to(active, stream, *, allow_devices=None) -> LayerInfo``: apply a
      layer tar onto an active snapshot's root.
    - ``discard(active)``, ``view(parents, *, readonly=False)`` (context
      manager: a throw-away root; ``readonly`` hands out a full snapshot's own
      directory instead of a copy), ``info(id) -> SnapshotInfo(id, kind,
      parents, path)``, ``exists(id)``, ``snapshots()``, ``remove(id)``.
    - ``write_layer(id, dst, *, source_date_epoch=None) -> LayerInfo``: the
      snapshot's change over its parents as a layer tar.
    - ``apply_layer(parents, stream, *, allow_devices=None, snapshot_id=None,
      based_id=None, expect_diff_id=None) -> (id, LayerInfo)``: commit a snapshot
      holding an uncompressed layer tar applied on ``parents``. Copy mode: flat onto
      a copy. Overlay mode: in overlay form into an empty upper dir, committed as
      ``snapshot_id`` with no parents (valid on any chain) -- unless an entry reaches
      into ``parents`` (writes through an earlier layer's symlink, names a parent
      directory or hardlink target only they hold): the rest is then applied flat on
      an overlay mount of ``parents`` + that upper dir, and the snapshot, valid on
      ``parents`` only, is committed as ``based_id``. A diff ID other than
      ``expect_diff_id`` commits nothing.
    - ``overlay_supported(dir) -> str | None``: None, or why overlay can't be used.

    Copy mode differs from overlay in layer bytes only: a directory emptied
    and refilled gets per-child whiteouts instead of an opaque marker. And in
    one corner of hard links: overlayfs breaks a link when one name of a
    lower file is written (copy-up), copy mode keeps the link.

The tar modules below are imported from their own modules, not from this package: tarfile
loads when a layer is written or applied, not with the snapshotter (start-up, issue 14).

Layer tars (``mason.layer.diff``), streamed to a binary writer, each returning
``LayerInfo(diff_id, size)`` (sha256 and length of the uncompressed tar):
    - ``write_diff_tar(diff_dir, dst, *, source_date_epoch=None)``: an overlay
      upper dir; 0/0 char devices -> ``.wh.<name>``, ``overlay.opaque=y`` ->
      ``.wh..wh..opq`` (trusted.* and user.* variants).
    - ``write_dir_tar(root, dst, *, source_date_epoch=None)``: a whole tree.
    - ``write_tree_diff_tar(lower | None, upper, dst, *, source_date_epoch=None,
      copied_before_ns=None)``: the change from one plain tree to another (copy
      mode); every name of a hard-linked file that changed is written; files
      whose inode ctime is before ``copied_before_ns`` are the untouched copy.
    - ``clamp_tar_times(src, dst, epoch)``: a copy of a layer tar with every time
      after ``epoch`` set to it (``rewrite-timestamp=true`` on an image export).
    Sorted entries, PAX, uid/gid/mode/xattrs kept (not overlay's own), mtimes
    clamped to ``source_date_epoch``, hardlinks within the layer as tar
    hardlinks, sockets skipped, parent directories present.

Applying (``mason.layer.apply``)
    ``apply_layer(stream, root, *, mode="flat"|"overlay", allow_devices=None,
    preserve_owners=None, overlay_xattr_prefix="trusted.overlay.", below=None) -> LayerInfo``:
    BuildKit's rule, the same in every mode and snapshotter: each entry's parent
    directory (and a hardlink target's) is resolved inside ``root`` by
    ``mason.fsroot.FsRoot`` (symlinks followed inside it, never out), the final
    component is never followed (an existing entry is replaced); ``..``, absolute
    names, hardlinks to nothing or to a directory, 0/0 character devices, devices
    unless allowed (default: as root) and bad whiteouts are rejected; nothing is
    written outside ``root``. ``flat`` applies OCI whiteouts by deleting;
    ``overlay`` records them as overlayfs does, and hands entries that depend on the
    layers below to the merged view ``below()`` returns.
"""

from mason.layer.errors import LayerError
from mason.layer.snapshot import (
    ActiveSnapshot,
    SnapshotInfo,
    SnapshotKind,
    SnapshotMode,
    Snapshotter,
    overlay_supported,
)

__all__ = [
    "ActiveSnapshot",
    "LayerError",
    "SnapshotInfo",
    "SnapshotKind",
    "SnapshotMode",
    "Snapshotter",
    "overlay_supported",
]
