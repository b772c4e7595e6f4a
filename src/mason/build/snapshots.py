"""Snapshots: each layer unpacked once into its own overlayfs lower directory,
shared by every build on the root, and overlay mounts of a layer chain.

A layer directory depends only on the layer (whiteouts are kept as overlay
whiteouts, as Docker's overlay2 does), so it is keyed by diff ID:
``snapshots/<first 32 hex of the diff ID>``. A step mounts
``lowerdir=<chain, top first>`` with a fresh upper directory; after the step
the upper directory *is* the step's layer directory and is renamed into
place (no re-extraction). Mount options use relative paths (the mount runs in
the snapshots directory) so long chains fit in one page of options.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from mason.build.blobs import Blobs
from mason.build.state import LayerRef, StateError, StateRoot
from mason.digest import Digest
from mason.layer.apply import apply_layer

__all__ = ["EMPTY_LAYER_DIFF_ID", "Mounted", "Snapshotter"]

#: diff ID of a tar with no entries (1024 zero bytes) -- BuildKit's empty layer.
EMPTY_LAYER_DIFF_ID = Digest("sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef")

_locks_guard = threading.Lock()
_locks: dict[str, threading.Lock] = {}


def _lock_for(name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(name, threading.Lock())


class Mounted:
    """A mounted chain: ``merged`` (the rootfs), ``upper`` (what the step changes)."""

    def __init__(self, merged: Path, upper: Path, base: Path) -> None:
        self.merged = merged
        self.upper = upper
        self.base = base


class Snapshotter:
    def __init__(self, state: StateRoot, blobs: Blobs) -> None:
        self.state = state
        self.blobs = blobs
        self.root = state.snapshots_dir
        self._empty = self.root / "empty"
        self._empty.mkdir(exist_ok=True)

    @staticmethod
    def name_of(diff_id: Digest) -> str:
        return diff_id.split(":", 1)[1][:32]

    def path_of(self, diff_id: Digest) -> Path:
        return self.root / self.name_of(diff_id)

    def has(self, diff_id: Digest) -> bool:
        return self.path_of(diff_id).is_dir()

    def ensure(self, lr: LayerRef) -> Path:
        """Unpack the layer into its directory unless it is there (downloads its blob if needed)."""
        dest = self.path_of(lr.diff_id)
        if dest.is_dir():
            return dest
        with _lock_for(str(dest)):
            if dest.is_dir():
                return dest
            tmp = self.state.temp_dir("unpack")
            try:
                target = tmp / "layer"
                target.mkdir()
                with self.blobs.open_uncompressed(lr) as stream:
                    info = apply_layer(stream, str(target), mode="overlay")
                if info.diff_id != lr.diff_id:
                    raise StateError(f"layer {lr.blob} unpacked to diff ID {info.diff_id}, expected {lr.diff_id}",
                                     reference="diff-id-mismatch")
                self._install(target, lr.diff_id)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def _install(self, directory: Path, diff_id: Digest) -> None:
        dest = self.path_of(diff_id)
        try:
            os.rename(directory, dest)
        except OSError:
            if not dest.is_dir():
                raise
            # another process installed it first: same content by construction
        self.state.meta.put_snapshot(diff_id, str(dest), 0)

    def install_upper(self, upper: Path, diff_id: Digest) -> None:
        """Keep a step's overlay upper directory as the layer directory of ``diff_id``."""
        if self.path_of(diff_id).is_dir():
            return
        with _lock_for(str(self.path_of(diff_id))):
            if not self.path_of(diff_id).is_dir():
                self._install(upper, diff_id)

    @contextlib.contextmanager
    def mount(self, chain: Sequence[LayerRef]) -> Iterator[Mounted]:
        """Mount the chain (unpacking missing layers first) with a fresh upper dir."""
        names: list[str] = []
        for lr in reversed(chain):  # top first
            if lr.diff_id == EMPTY_LAYER_DIFF_ID:
                continue
            self.ensure(lr)
            n = self.name_of(lr.diff_id)
            if n not in names:
                names.append(n)
        if not names:
            names = ["empty"]
        base = self.state.temp_dir("mnt")
        upper, work, merged = base / "upper", base / "work", base / "merged"
        for d in (upper, work, merged):
            d.mkdir()
        os.chmod(upper, 0o755)
        lower = ":".join(names)
        opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
        try:
            self._mount(opts, merged)
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            raise
        mounted = Mounted(merged, upper, base)
        try:
            yield mounted
        finally:
            self._umount(merged)

    def _mount(self, opts: str, merged: Path) -> None:
        for extra in (",index=off,redirect_dir=off,metacopy=off", ""):
            proc = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts + extra, str(merged)],
                                  cwd=self.root, capture_output=True, text=True)
            if proc.returncode == 0:
                return
        raise StateError(f"mount overlay at {merged}: {proc.stderr.strip()}", reference="overlay-mount-failed",
                         hint="mason needs root and overlayfs for RUN/COPY steps")

    @staticmethod
    def _umount(merged: Path) -> None:
        proc = subprocess.run(["umount", str(merged)], capture_output=True, text=True)
        if proc.returncode != 0:
            subprocess.run(["umount", "-l", str(merged)], capture_output=True, text=True)

    def discard(self, mounted: Mounted) -> None:
        shutil.rmtree(mounted.base, ignore_errors=True)

    def apply_flat(self, chain: Sequence[LayerRef], dest: Path) -> None:
        """Apply the chain's layers on ``dest`` (outputs type=local/tar)."""
        for lr in chain:
            with self.blobs.open_uncompressed(lr) as stream:
                apply_layer(stream, str(dest), mode="flat")
