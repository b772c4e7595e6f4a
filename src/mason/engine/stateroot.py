"""An opened ``$MASON_ROOT`` and its lock (see ``mason.engine.state`` for the layout): the
directories and their modes, the shared/exclusive fcntl lock, start-up cleanup of a killed
process's leftovers, usage and pruning. The blobs are ``contentstore``'s, the rows
``metadata``'s."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mason.digest import Digest
from mason.engine.contentstore import PRIVATE_DIR, PRIVATE_FILE, ContentStore, StateError
from mason.engine.metadata import CachedResult, Metadata
from mason.engine.secrets import remove_orphaned_secrets
from mason.structs import Struct

__all__ = ["StateRoot", "UsageEntry", "human_size", "parse_size"]


def _tighten(path: Path, mode: int) -> None:
    """Drop permission bits beyond ``mode`` from ``path`` if it exists, is not a symlink and is
    ours (a root made by an older mason was 0755/0644)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    current = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid() or not current & ~mode:
        return
    os.chmod(path, current & mode)


def _tighten_root(path: Path) -> None:
    """The root itself, unless it is a shared directory (sticky or world-writable, e.g.
    ``MASON_ROOT=/tmp``): mason never takes such a directory away from its other users."""
    st = os.stat(path)
    if st.st_mode & (stat.S_ISVTX | stat.S_IWOTH):
        return
    _tighten(path, PRIVATE_DIR)


class UsageEntry(Struct, frozen=True):
    kind: str
    ident: str
    size: int
    last_used: float
    description: str


def parse_size(text: str) -> int:
    """``10GB``, ``512MiB``, ``1.5g``, ``1024`` -> bytes (binary multiples, as docker does)."""
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = 1
    for suffix, m in (("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("t", 1 << 40)):
        if t.endswith(suffix):
            mult, t = m, t[:-1]
            break
    try:
        value = float(t)
    except ValueError:
        raise StateError(
            f"invalid size {text!r}", reference="invalid-size", hint="use e.g. 512MB or 10GB"
        ) from None
    if value < 0:
        raise StateError(f"invalid size {text!r}", reference="invalid-size")
    return int(value * mult)


def human_size(n: int) -> str:
    """BuildKit's (go-units) size text: decimal units, three significant digits ("1.09MB")."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{n}B" if unit == "B" else f"{size:.3g}{unit}"
        size /= 1000
    raise AssertionError("unreachable")


class StateRoot:
    """An opened ``$MASON_ROOT``. Use as a context manager: ``with StateRoot.open(p) as st``.

    Lock protocol: builds hold a *shared* fcntl lock for their whole run, so
    several builds can share a root (blobs are content-addressed and metadata
    writes are transactions); ``prune`` and the start-up cleanup of leftovers
    take it *exclusively*, so they never delete what a running build uses.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.exclusive = False
        self.tmp = path / "tmp"
        self.snapshots_dir = path / "snapshots"
        self.cachemounts_dir = path / "cachemounts"
        self.store = ContentStore(path / "blobs", self.tmp)
        self._lock_fd: int | None = None
        self._meta: Metadata | None = None
        #: the metadata being opened (``Metadata.opening``), until ``meta`` first waits for it
        self._meta_opened: Callable[[], Metadata] | None = None

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, exclusive: bool = False, wait: bool = True
    ) -> StateRoot:
        """Open (and create) a root. ``exclusive`` waits for running builds to finish, or with
        ``wait=False`` raises ``StateError`` (reference ``state-busy``) while one runs."""
        st = cls(Path(path))
        st._open(exclusive, wait)
        return st

    @property
    def meta(self) -> Metadata:
        if self._meta is None:
            if self._meta_opened is None:
                raise StateError("state root is not open")
            self._meta = self._meta_opened()
        return self._meta

    @property
    def private_dirs(self) -> tuple[Path, ...]:
        """mason's own directories in the root: created 0700, tightened to it when opened."""
        return (
            self.tmp,
            self.snapshots_dir,
            self.cachemounts_dir,
            self.path / "cachemount-locks",
            self.store.root,
            self.store.root / "sha256",
        )

    def _open(self, exclusive: bool, wait: bool) -> None:
        try:
            self.path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
            _tighten_root(self.path)
            for d in self.private_dirs:
                d.mkdir(mode=PRIVATE_DIR, exist_ok=True)
                _tighten(d, PRIVATE_DIR)
            self._lock_fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
            for name in ("lock", "meta.db", "meta.db-wal", "meta.db-shm"):
                _tighten(self.path / name, PRIVATE_FILE)
        except OSError as exc:
            # mkdir on a file says "File exists": name the real problem
            reason = (
                "a file is in the way of a directory"
                if exc.errno in (errno.EEXIST, errno.ENOTDIR)
                else exc.strerror
            )
            raise StateError(
                f"cannot use state directory {self.path}: {reason}",
                context=[f"path: {exc.filename}"] if exc.filename else [],
                hint="set MASON_ROOT to a writable directory",
            ) from exc
        # a killed build's secrets on tmpfs: their process is gone, whoever else holds the root
        remove_orphaned_secrets()
        # Opportunistic cleanup: if nobody else holds the root, leftovers of a killed
        # process (temp files) are garbage.
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._clean_leftovers()
            if not exclusive:
                fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if exclusive and not wait:
                self.close()
                raise StateError(
                    f"state directory {self.path} is in use by a running build",
                    reference="state-busy",
                    hint="wait for the build to finish",
                ) from None
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        self.exclusive = exclusive
        self._meta_opened = Metadata.opening(self.path / "meta.db")

    def _clean_leftovers(self) -> None:
        # A killed build may have left overlay mounts under tmp/: unmount them first, so we
        # never delete through a mount.
        for mnt in _mounts_under(self.tmp):
            import subprocess  # rarely: a killed build's mounts (start-up, issue 14)

            subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
        for entry in self.tmp.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                _force_rmtree(entry)
            else:
                entry.unlink(missing_ok=True)

    def temp_dir(self, prefix: str) -> Path:
        """A new private directory in the root's ``tmp/``, named for this process."""
        from mason.oci.atomic import temp_dir

        return Path(temp_dir(self.tmp, f"{os.getpid()}-{prefix}-"))

    def close(self) -> None:
        opened, self._meta_opened = self._meta_opened, None
        if opened is not None and self._meta is None:
            with contextlib.suppress(Exception):  # what failed to open has nothing to close
                self._meta = opened()
        if self._meta is not None:
            self._meta.close()
            self._meta = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> StateRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # usage and pruning -----------------------------------------------------

    def usage(self) -> list[UsageEntry]:
        """Everything the root holds, with sizes (for ``mason du``): what the metadata tracks,
        plus content-store files without a row (e.g. base image configs; last used = mtime) and
        snapshot directories without a row (``untracked_snapshots``)."""
        entries: list[UsageEntry] = []
        tracked: set[str] = set()
        for info, last_used in self.meta.blobs():
            size = self.store.size(info.digest) if self.store.has(info.digest) else 0
            entries.append(UsageEntry("blob", info.digest, size, last_used, info.media_type))
            tracked.add(info.digest)
        for digest in self.store.iter_digests():
            if digest not in tracked:
                with contextlib.suppress(OSError):
                    st = self.store.path(digest).stat()
                    entries.append(UsageEntry("blob", digest, st.st_size, st.st_mtime, "untracked"))
        for chain_id, path, size, last_used in self.meta.snapshots():
            real = size or (_dir_size(Path(path)) if os.path.isdir(path) else 0)
            entries.append(UsageEntry("snapshot", chain_id, real, last_used, path))
        for d in self.untracked_snapshots():
            entries.append(UsageEntry("snapshot", d.name, _dir_size(d), d.lstat().st_mtime, str(d)))
        for d in sorted(self.cachemounts_dir.iterdir()):
            entries.append(UsageEntry("cache-mount", d.name, _dir_size(d), d.stat().st_mtime, ""))
        return entries

    def untracked_snapshots(self) -> list[Path]:
        """Entries of the snapshot directory no metadata row names: the flattened stacks
        ``mason.layer`` makes for chains too long for one overlay mount, and anything a
        lost row left behind. Nothing reaches them through the metadata, so prune always
        removes them (a flattened stack is made again when a long chain needs it)."""
        named = {Path(path).name for _chain, path, _size, _used in self.meta.snapshots()}
        return sorted(
            p
            for p in self.snapshots_dir.iterdir()
            if not p.name.startswith(".") and p.name not in named
        )

    def prune(
        self, keep_storage: int | None = 0, *, all_: bool = False, unused_for: float | None = None
    ) -> tuple[int, int]:
        """Free the root as BuildKit's GC does (``mason.engine.gc``): what no cached result
        reaches goes first, then results with what only they reach, and cache mounts, least
        recently used first, until at most ``keep_storage`` bytes are left (``all_``: no size
        target). ``unused_for`` (seconds): only what was not used for that long may go.
        Untracked snapshot directories are removed in every case. Returns (entries removed,
        bytes freed).

        Needs the root opened ``exclusive``: no build is using what is deleted. Directories
        are renamed out of sight before they are deleted (snapshots through
        ``mason.layer.Snapshotter.remove``), so a crash mid-prune leaves garbage that the
        next open removes, never a snapshot that looks complete but is not."""
        if not self.exclusive:
            raise StateError(
                f"prune of {self.path} needs the state root opened exclusively",
                hint="StateRoot.open(path, exclusive=True) waits for running builds",
            )
        from mason.engine.gc import PruneRule, plan_prune
        from mason.engine.rebuilds import drop_memos

        drop_memos(self.path)  # an unchanged rebuild's memo may name what is removed
        removed = freed = 0
        for orphan in self.untracked_snapshots():
            freed += _dir_size(orphan)
            self._remove_snapshot(orphan)
            removed += 1
        entries = self.usage()
        rule = PruneRule(
            None if all_ else keep_storage, None if unused_for is None else time.time() - unused_for
        )
        plan = plan_prune(entries, self.meta.results(), self._reach, rule)
        by_key = {(e.kind, e.ident): e for e in entries}
        for key in plan.entries:
            freed += self._delete_entry(by_key[key])
            removed += 1
        self.meta.delete_results(plan.records)
        if all_ and unused_for is None:
            self.meta.clear_variants()  # every blob is gone: facts and locations of remote-only ones too
            self.meta.clear_step_keys()
            self.meta.clear_file_digests()
        self._drop_dangling_results()
        return removed, freed

    def _reach(self, record: CachedResult) -> set[tuple[str, str]]:
        """What a cached result needs: its layers' blobs and their compressed variants, and the
        snapshots of its chain (by layer diff ID and by chain ID)."""
        from mason.engine.snapshots import chain_id

        keys: set[tuple[str, str]] = set()
        for i, lr in enumerate(record.layers):
            if lr.blob is not None:
                keys.add(("blob", lr.blob))
            keys.update(("blob", info.digest) for _c, _l, info in self.meta.variants_of(lr.diff_id))
            keys.add(("snapshot", lr.diff_id))
            keys.add(("snapshot", chain_id([x.diff_id for x in record.layers[: i + 1]])))
        return keys

    def _delete_entry(self, entry: UsageEntry) -> int:
        if entry.kind == "blob":
            self.meta.delete_blobs([Digest(entry.ident)])
            self.store.delete(Digest(entry.ident))
        elif entry.kind == "snapshot":
            self._remove_snapshot(self.snapshots_dir / Path(entry.description).name)
            self.meta.delete_snapshots([entry.ident])
        else:
            self._remove_dir(self.cachemounts_dir / entry.ident)
        return entry.size

    def _remove_snapshot(self, path: Path) -> None:
        from mason.layer import LayerError
        from mason.layer import Snapshotter as LayerSnapshotter

        # Removing needs no overlay probe ("copy"); opening it also clears what an earlier
        # crashed prune or killed build left half-deleted.
        with contextlib.suppress(LayerError):  # already gone (only a row left), or no meta.json
            LayerSnapshotter(str(self.snapshots_dir), mode="copy").remove(path.name)
        if os.path.lexists(path) and path.parent == self.snapshots_dir:
            self._remove_dir(path)

    def _remove_dir(self, path: Path) -> None:
        # Renamed into tmp/ first: a crash leaves a leftover there (removed on the next
        # exclusive open), not half a directory where it was.
        trash = self.temp_dir("rm")
        os.replace(path, trash / "d")
        _force_rmtree(trash)

    def _drop_dangling_results(self) -> None:
        # A result is only useful while every layer of its chain is in the store.
        gone = [
            r.key
            for r in self.meta.results()
            if any(lr.blob is None or not self.store.has(lr.blob) for lr in r.layers)
        ]
        if gone:
            self.meta.delete_results(gone)


def _mounts_under(path: Path) -> list[str]:
    """Mount points below ``path`` (deepest first), from /proc/self/mountinfo."""
    prefix = str(path.resolve()) + "/"
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4:
                mp = fields[4]
                if "\\" in mp:  # the kernel's octal escapes (\040 for a space)
                    mp = mp.encode().decode("unicode_escape")
                if mp.startswith(prefix):
                    found.append(mp)
    return sorted(found, key=len, reverse=True)


def _dir_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _force_rmtree(path: Path) -> None:
    import shutil

    def onerror(func: Callable[..., Any], p: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
        with contextlib.suppress(OSError):
            func(p)

    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, onerror=onerror)
