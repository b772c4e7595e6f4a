"""The builder's view of snapshots: layer chains (``LayerRef``s) on top of
``mason.layer.Snapshotter``, which does the mounting, copying, flattening and
crash cleanup. This module only decides what a chain's snapshots are called
and where their layers come from.

- overlay mode: each layer is unpacked once, in overlay form, into a snapshot
  named after its diff ID (``d`` + 31 hex digits) and shared by every chain
  and every build on the root. A layer that writes through the layers below it
  (an earlier layer's symlink as a parent directory, a parent or hardlink target
  only they hold; Docker and BuildKit never write such layers) depends on them: it
  is unpacked on its chain and named after the chain ID (``b`` + 31 hex), so it
  gives the filesystem the copy mode and ``--output type=local`` give. A step
  mounts its chain's layer snapshots; after the step the upper directory *is* the
  new layer's snapshot (committed by rename, nothing copied or re-extracted).
- copy mode (no overlayfs): a chain's snapshot is a full tree named after the
  chain's OCI chain ID (``c`` + 31 hex). Only the chains steps run on are
  materialised: the longest prefix that has a snapshot is copied and the
  remaining layers are applied on the copy. A step works on a copy of its
  base and its layer is the tree difference. Layer bytes can differ from the
  overlay form in one documented way: a directory emptied and refilled is an
  opaque directory with overlay and per-child whiteouts with copy; unpacked,
  both give the same filesystem.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

if TYPE_CHECKING:
    from tarfile import TarInfo

    from mason.layer.sparse import ChainIndex

from mason.digest import Digest, sha256_bytes
from mason.engine.blobs import Blobs
from mason.engine.state import LayerRef, StateError, StateRoot
from mason.layer import ActiveSnapshot, LayerError
from mason.layer import Snapshotter as LayerSnapshotter

__all__ = [
    "EMPTY_LAYER_DIFF_ID",
    "LookedAt",
    "Mounted",
    "Snapshotter",
    "SnapshotterMode",
    "chain_id",
]

#: diff ID of a tar with no entries (1024 zero bytes) -- BuildKit's empty layer.
EMPTY_LAYER_DIFF_ID = Digest(
    "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
)

SnapshotterMode = Literal["auto", "overlay", "copy"]
#: the paths a step resolves in its base (unsafe, whether a final symlink is followed)
LookedAt = Iterable[tuple[str, bool]]

_locks_guard = threading.Lock()
_locks: dict[str, threading.Lock] = {}


def _lock_for(name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(name, threading.Lock())


def chain_id(diff_ids: Sequence[Digest]) -> Digest:
    """The OCI ChainID of a stack of layers (lowest first)."""
    if not diff_ids:
        raise ValueError("an empty chain has no chain ID")
    current = str(diff_ids[0])
    for d in diff_ids[1:]:
        current = sha256_bytes(f"{current} {d}".encode())
    return Digest(current)


def _names(unsafe: str) -> list[str] | None:
    """The names of a path a step resolves, the root's empty list; None when it goes up
    (``..``) on the way, which the no-mount checks do not follow."""
    parts = [p for p in unsafe.split("/") if p not in ("", ".")]
    return None if ".." in parts else parts


@contextlib.contextmanager
def _translated(lr: LayerRef) -> Iterator[None]:
    """A ``mason.layer`` error about a pulled layer, naming the layer's blob."""
    try:
        yield
    except LayerError as exc:
        raise StateError(
            f"layer {lr.blob or lr.diff_id}: {exc.message}",
            reference=exc.reference,
            context=exc.context,
            hint=exc.hint,
        ) from exc


class Mounted:
    """A writable root filesystem on a chain: ``merged`` is the rootfs. Hand it to
    ``Snapshotter.commit`` to keep what the step changed."""

    def __init__(self, active: ActiveSnapshot, chain: tuple[LayerRef, ...]) -> None:
        self.active = active
        self.chain = chain

    @property
    def merged(self) -> Path:
        return Path(self.active.path)


class Snapshotter:
    """Snapshots of layer chains under ``$MASON_ROOT/snapshots``; ``mode`` as ``mason
    build --snapshotter`` (``auto``: overlay when a probe mount works, else copy)."""

    def __init__(self, state: StateRoot, blobs: Blobs, *, mode: SnapshotterMode = "auto") -> None:
        self.state = state
        self.blobs = blobs
        self.root = state.snapshots_dir
        #: chain (diff IDs) -> the index a step's sparse base was read from (``_index``)
        self._indexes: dict[tuple[Digest, ...], ChainIndex] = {}
        self._indexes_lock = threading.Lock()
        try:
            self.layers = LayerSnapshotter(str(self.root), mode=mode)
        except (LayerError, OSError) as exc:
            raise StateError(f"cannot use snapshot directory {self.root}: {exc}") from exc

    @property
    def mode(self) -> str:
        """``overlay`` or ``copy`` (``auto`` probes when first asked: ``layers.on_fallback``)."""
        return self.layers.mode

    @property
    def fallback_reason(self) -> str | None:
        """Why ``auto`` fell back to copying (None when overlay is used or copy was asked for)."""
        return self.layers.fallback_reason

    # --- naming --------------------------------------------------------------------

    @staticmethod
    def layer_snapshot_id(diff_id: Digest) -> str:
        """A layer in overlay form that depends on nothing below it (shared by every chain)."""
        return "d" + diff_id.split(":", 1)[1][:31]

    @staticmethod
    def based_snapshot_id(chain: Sequence[LayerRef]) -> str:
        """The top layer of ``chain`` unpacked on the rest of it (overlay mode), for a layer
        that reaches into the layers below (writes through an earlier layer's symlink)."""
        return "b" + chain_id([lr.diff_id for lr in chain]).split(":", 1)[1][:31]

    @staticmethod
    def chain_snapshot_id(chain: Sequence[LayerRef]) -> str:
        return "c" + chain_id([lr.diff_id for lr in chain]).split(":", 1)[1][:31]

    def _register(self, key: str, snapshot_id: str) -> None:
        # For `mason du` / `mason prune`: the whole snapshot directory is the entry.
        self.state.meta.put_snapshot(key, str(self.root / snapshot_id), 0)

    # --- materialising chains ----------------------------------------------------------

    def _ensure_layer(self, chain: Sequence[LayerRef], below: list[str]) -> str:
        """Overlay mode: the snapshot of ``chain``'s top layer, unpacked from its blob unless
        it exists; ``below`` are the snapshot ids showing the rest of ``chain``."""
        lr = chain[-1]
        sid = self.layer_snapshot_id(lr.diff_id)
        based = self.based_snapshot_id(chain)
        with _lock_for(str(self.root / sid)):
            for existing in (sid, based):
                if self.layers.exists(existing):
                    return existing
            with self.blobs.open_uncompressed(lr) as stream, _translated(lr):
                made, _ = self.layers.apply_layer(
                    below, stream, snapshot_id=sid, based_id=based, expect_diff_id=lr.diff_id
                )
            self._register(
                lr.diff_id if made == sid else chain_id([x.diff_id for x in chain]), made
            )
        return made

    def _ensure_chain(self, chain: Sequence[LayerRef]) -> list[str]:
        """Copy mode: the one full snapshot of ``chain`` (made from the longest prefix that has one)."""
        sid = self.chain_snapshot_id(chain)
        if self.layers.exists(sid):
            return [sid]
        with _lock_for(str(self.root / sid)):
            if self.layers.exists(sid):
                return [sid]
            base: list[str] = []
            start = 0
            for k in range(len(chain) - 1, 0, -1):
                prefix = self.chain_snapshot_id(chain[:k])
                if self.layers.exists(prefix):
                    base, start = [prefix], k
                    break
            with self.layers.prepare(base) as active:
                for lr in chain[start:]:
                    if lr.diff_id == EMPTY_LAYER_DIFF_ID:
                        continue
                    with self.blobs.open_uncompressed(lr) as stream, _translated(lr):
                        info = self.layers.apply_to(active, stream)
                    if info.diff_id != lr.diff_id:
                        raise StateError(
                            f"layer {lr.blob} unpacked to diff ID {info.diff_id}, expected {lr.diff_id}",
                            reference="diff-id-mismatch",
                        )
                self.layers.commit(active, snapshot_id=sid)
            self._register(chain_id([lr.diff_id for lr in chain]), sid)
        return [sid]

    def _ids(self, chain: Sequence[LayerRef]) -> list[str]:
        """The snapshot ids showing ``chain``, lowest first (created when missing)."""
        if all(lr.diff_id == EMPTY_LAYER_DIFF_ID for lr in chain):
            return []
        # the downloads start before ``mode``, whose first answer is an overlay probe mount
        with self._fetching(self._unfetched(chain)):
            if self.mode == "copy":
                return self._ensure_chain(chain)
            ids: list[str] = []
            for k, lr in enumerate(chain):
                if lr.diff_id == EMPTY_LAYER_DIFF_ID:
                    continue
                sid = self._ensure_layer(chain[: k + 1], ids)
                if sid in ids:  # a layer that appears twice counts where it is topmost
                    ids.remove(sid)
                ids.append(sid)
            return ids

    def _unfetched(self, chain: Sequence[LayerRef]) -> list[LayerRef]:
        """The layers of ``chain`` either mode will unpack from a blob not fetched yet: no
        snapshot of theirs in overlay form (``d``, ``b``) and none of a chain holding them
        (``c``), so that nothing is downloaded that neither mode would read."""
        unfetched: list[LayerRef] = []
        covered = False  # a copy-mode snapshot of chain[:j] holds every layer below j
        for k in range(len(chain) - 1, -1, -1):
            lr = chain[k]
            covered = covered or self.layers.exists(self.chain_snapshot_id(chain[: k + 1]))
            if (
                not covered
                and self._remote_only(lr)
                and not self.layers.exists(self.layer_snapshot_id(lr.diff_id))
                and not self.layers.exists(self.based_snapshot_id(chain[: k + 1]))
            ):
                unfetched.insert(0, lr)
        return unfetched

    def _remote_only(self, lr: LayerRef) -> bool:
        """A non-empty layer whose blob is not in the content store yet."""
        return (
            lr.diff_id != EMPTY_LAYER_DIFF_ID
            and lr.blob is not None
            and not self.blobs.has_local(lr.blob)
        )

    @contextlib.contextmanager
    def _fetching(self, layers: Sequence[LayerRef]) -> Iterator[None]:
        """Download ``layers``' blobs in the background while the caller probes the snapshot
        mode and unpacks the layers below them (one after the other: a layer may be applied
        on those below it); the caller's own open of a layer waits for its download. A failed
        download is only retried, and reported, when the caller opens that layer
        (``Blobs.ensure_local`` serialises the two); an error of the caller's does not wait
        for the downloads."""

        def fetch(lr: LayerRef) -> None:
            with contextlib.suppress(Exception):
                self.blobs.ensure_local(lr)

        threads = [
            threading.Thread(target=fetch, args=(lr,), name="layer-fetch", daemon=True)
            for lr in layers
            if self._remote_only(lr)
        ]
        for t in threads:
            t.start()
        yield
        for t in threads:
            t.join()

    # --- what ops use ------------------------------------------------------------------

    @contextlib.contextmanager
    def mount(
        self,
        chain: Sequence[LayerRef],
        *,
        looks_at: Callable[[], LookedAt] | None = None,
        new_only: bool = False,
    ) -> Iterator[Mounted]:
        """A writable rootfs on ``chain``; dropped on exit unless ``commit``-ted.
        ``looks_at``: for a step that only writes into the chain, the paths (unsafe, whether
        a final symlink is followed) its resolutions walk; in overlay mode a chain with a
        layer not unpacked yet is then shown by just the entries they meet
        (``mason.layer.sparse``), if its headers say exactly which. When they meet nothing
        of the chain but its root (the step makes new names at the top), nothing is
        mounted: the step writes its layer directly (``prepare_beside``). ``new_only``: the
        step also writes below the paths it names (an archive's entries, unknown until it is
        read): only that last case is taken, when each of them is a name below the root that
        the chain does not hold; the chain is mounted whole otherwise."""
        with self._prepare(chain, looks_at, new_only) as active:
            yield Mounted(active, tuple(chain))

    @contextlib.contextmanager
    def _prepare(
        self, chain: Sequence[LayerRef], looks_at: Callable[[], LookedAt] | None, new_only: bool
    ) -> Iterator[ActiveSnapshot]:
        paths = list(looks_at()) if looks_at is not None else None
        if new_only and paths is not None and not all(_names(p) for p, _ in paths):
            paths = None  # what it writes below the root may meet anything of the chain
        entries = self._looked_at(chain, paths) if paths is not None else None
        if entries is not None and not (new_only and entries):
            from mason.layer.sparse import sparse_tree  # tarfile: a step that writes (issue 14)

            with sparse_tree(entries, str(self.state.tmp)) as lower:
                # meeting nothing but the root: new names at the top, nothing to mount
                prepare = self.layers.prepare_over if entries else self.layers.prepare_beside
                with prepare(lower) as active:
                    yield active
            return
        ids = self._ids(chain)
        top = self._fresh_top(ids, paths) if paths is not None else None
        prepared = self.layers.prepare(ids) if top is None else self.layers.prepare_beside(top)
        with prepared as active:
            yield active

    def _fresh_top(self, ids: list[str], paths: LookedAt) -> str | None:
        """Overlay mode, on the snapshots ``ids``: the directory whose root attributes a step's
        root takes (the top layer's, or an empty one), when ``paths`` (a step's resolutions)
        all start at the root with a name no layer holds in any form (a whiteout neither:
        over one, overlayfs would make a new directory opaque); else None."""
        if self.mode != "overlay":
            return None
        dirs = [self.layers.info(sid).path for sid in ids]
        for unsafe, _follow in paths:
            parts = _names(unsafe)
            if parts is None:
                return None
            if parts and any(os.path.lexists(os.path.join(d, parts[0])) for d in dirs):
                return None
        return dirs[-1] if dirs else self.layers.empty_dir

    def _looked_at(
        self, chain: Sequence[LayerRef], paths: LookedAt
    ) -> dict[tuple[str, ...], TarInfo] | None:
        """What the resolutions of ``paths`` meet in ``chain`` (canonical path -> header), or
        None (copy mode, a chain unpacked already, headers that do not say exactly)."""
        from mason.layer.sparse import looked_at

        layers = [lr for lr in chain if lr.diff_id != EMPTY_LAYER_DIFF_ID]
        unpacked = {lr.diff_id for lr in layers if self._unpacked(lr)}
        if len(unpacked) == len({lr.diff_id for lr in layers}):
            return None  # nothing to unpack: mounting it is as quick
        index = self._index(layers, unpacked)  # read while ``auto``'s probe may still run
        if index is None or self.mode != "overlay":
            return None
        return looked_at(index, paths)

    def _index(self, layers: list[LayerRef], unpacked: set[Digest]) -> ChainIndex | None:
        """The index of ``layers``: the longest prefix indexed for an earlier step, then
        each layer from its snapshot when ``unpacked`` (a step's own layer), else from its blob
        (checked against its diff ID). None where the headers do not say exactly."""
        from mason.layer.sparse import ChainIndex

        start, index = 0, ChainIndex()
        with self._indexes_lock:
            for k in range(len(layers), 0, -1):
                known = self._indexes.get(tuple(lr.diff_id for lr in layers[:k]))
                if known is not None and k == len(layers):
                    return known  # read only from here on
                if known is not None:
                    start, index = k, known.copy()
                    break
        rest = layers[start:]
        with self._fetching(
            [lr for lr in rest if lr.diff_id not in unpacked and self._remote_only(lr)]
        ):
            for lr in rest:
                if lr.diff_id in unpacked:
                    path = self.layers.info(self.layer_snapshot_id(lr.diff_id)).path
                    if not index.add_snapshot(path):
                        return None
                    continue
                with self.blobs.open_uncompressed(lr) as stream, _translated(lr):
                    read = index.add(stream)
                if read is None or read.diff_id != lr.diff_id:
                    return None  # the unpack says what is wrong, if anything is
        with self._indexes_lock:
            self._indexes[tuple(lr.diff_id for lr in layers)] = index
        return index

    def _unpacked(self, lr: LayerRef) -> bool:
        return self.layers.exists(self.layer_snapshot_id(lr.diff_id))

    @contextlib.contextmanager
    def view(self, chain: Sequence[LayerRef], *, readonly: bool = True) -> Iterator[Path]:
        """A rootfs of ``chain`` for ``RUN --mount=type=bind,from=`` and ``COPY --from``.
        ``readonly``: the caller does not write (copy mode then skips the copy)."""
        with self.layers.view(self._ids(chain), readonly=readonly) as path:
            yield Path(path)

    def commit(self, mounted: Mounted, *, source_date_epoch: int | None = None) -> LayerRef:
        """Store what the step changed as a gzip layer blob and keep the snapshot (by rename)."""
        active = mounted.active

        def write(stream: BinaryIO) -> Digest:
            return self.layers.write_active_layer(
                active, stream, source_date_epoch=source_date_epoch
            ).diff_id

        lr = self.blobs.store_layer(write)
        if self.mode == "copy":
            full = (*mounted.chain, lr)
            sid = self.chain_snapshot_id(full)
            self.layers.commit(active, snapshot_id=sid)
            self._register(chain_id([x.diff_id for x in full]), sid)
        elif lr.diff_id == EMPTY_LAYER_DIFF_ID:
            self.layers.discard(active)  # empty layers are never mounted
        else:
            sid = self.layer_snapshot_id(lr.diff_id)
            self.layers.commit(active, snapshot_id=sid)
            self._register(lr.diff_id, sid)
        return lr

    def apply_flat(self, chain: Sequence[LayerRef], dest: Path) -> None:
        """Apply the chain's layers on ``dest`` (outputs type=local/tar): by the rule every
        snapshotter follows, so the output is the filesystem the steps saw, and nothing is
        written outside ``dest`` whatever the image's symlinks or names."""
        from mason.layer.apply import apply_layer  # tarfile: outputs only (start-up, issue 14)

        for lr in chain:
            with self.blobs.open_uncompressed(lr) as stream:
                apply_layer(stream, str(dest), mode="flat")
