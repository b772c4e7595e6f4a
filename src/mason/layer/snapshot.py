"""Snapshots: immutable layer directories and writable mounts prepared on top of them.

Layout of the snapshotter's directory (``$MASON_ROOT/snapshots``)::

    <id>/fs          committed content (immutable)
    <id>/meta.json   {"kind": "diff"|"full", "parents": [ids, lowest first]}
    .active/<name>/  an active (writable) snapshot: fs (upper or copy), work, merged
    .active/<name>.lock   held with flock by the process that owns <name>
    .empty/          the lower directory of a mount with no parents

``diff`` snapshots hold an overlayfs upper directory (whiteouts as 0/0 char
devices, opaque directories as ``trusted.overlay.opaque=y``); ``full`` ones a
complete tree (copy mode, and flattened stacks). A pulled layer is unpacked into an
empty upper directory; one that writes through the layers below (an earlier layer's
symlink as a parent, a parent or hardlink target only they hold) is finished on an
overlay mount of them, so that overlay, copy and flat application give one filesystem
(``mason.layer.apply``); its whiteouts become devices only where the layers below hold
their targets (``_ParentsView``). A commit is one ``rename`` of
the active directory, so a snapshot is either complete or absent. An active
directory whose lock nobody holds belongs to a killed process: it is unmounted
and removed when a Snapshotter opens the directory (``cleanup()``).

Durability: commits are not synced one by one (overlay mounts are ``volatile``, so their
unmount does not sync the whole filesystem; meta.json and the rename are not fsynced).
Before its first commit a Snapshotter makes ``.unsynced/<boot id>-<n>`` (durably, flocked
while it lives) and names it in each meta.json it writes; ``sync()`` (one
``syncfs``) makes them all durable and removes it. A marker whose owner is gone is dealt
with by ``cleanup()``: from this boot, the data is in the page cache (a killed process):
it is synced; from an earlier boot (a crash), the snapshots it names, and any whose
meta.json is unreadable, are removed (they are made again from their blobs).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, BinaryIO, Literal

from mason.digest import sha256_bytes
from mason.layer._fs import copy_tree, remove_tree
from mason.layer.errors import LayerError
from mason.oci.atomic import fsync_dir, temp_dir
from mason.structs import Struct, repr_without

# start-up (issue 14): the layer tar reader and writers (tarfile) and ctypes (mount(2)) load
# when a snapshot is mounted or a layer applied or written, not when the snapshotter opens
if TYPE_CHECKING:
    import ctypes

    from mason.layer.diff import LayerInfo

__all__ = [
    "ActiveSnapshot",
    "SnapshotInfo",
    "SnapshotKind",
    "SnapshotMode",
    "Snapshotter",
    "overlay_supported",
]

SnapshotMode = Literal["overlay", "copy"]
SnapshotKind = Literal["diff", "full"]

#: overlayfs' OVL_MAX_STACK.
MAX_LOWER_DIRS = 500
#: the directory of the markers of commits not synced yet (``Snapshotter.sync``)
_UNSYNCED = ".unsynced"
_MNT_DETACH = 2
# Without these, overlayfs may leave a renamed directory or a chmod-ed file's
# data in a lower layer, and the upper directory would not be a complete diff.
_OVERLAY_FEATURES = "redirect_dir=off,metacopy=off,index=off"
_CTIME_SETTLE = 0.02
_ID_RE = re.compile(r"^[0-9a-z]{1,32}$")


class SnapshotInfo(Struct, frozen=True):
    """A committed snapshot: its content directory, kind and parent chain."""

    id: str
    kind: SnapshotKind
    parents: tuple[str, ...]
    path: str


class ActiveSnapshot(Struct):
    """A writable snapshot. ``path`` is the root filesystem to work in.

    Use as a context manager: leaving it without ``Snapshotter.commit`` discards it.
    """

    snapshotter: Snapshotter
    name: str
    parents: tuple[str, ...]
    path: str
    directory: str
    upper: str
    mounted: bool = False
    done: bool = False
    #: Copy mode: every inode of the copy has a ctime before this (wall clock, ns).
    copied_before_ns: int | None = None
    _lock_fd: int = -1

    __repr__ = repr_without("_lock_fd")

    def __enter__(self) -> ActiveSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.done:
            self.snapshotter.discard(self)


def _check_diff_id(result: LayerInfo, expected: str | None) -> None:
    if expected is not None and result.diff_id != expected:
        raise LayerError(
            f"layer unpacked to diff ID {result.diff_id}, expected {expected}",
            reference="diff-id-mismatch",
            hint="the blob does not hold the layer its image or cache says it does",
        )


# --- mount(2) ----------------------------------------------------------------------------

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    import ctypes

    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


#: overlayfs' ``volatile`` (Linux 5.10): no sync of the upper filesystem on unmount (issue
#: 14: ~5 ms a RUN, the whole filesystem's dirty data); ``Snapshotter.sync`` syncs once
_volatile = [True]


def _mount_overlay(target: str, options: str) -> None:
    if _volatile[0]:
        try:
            _mount_overlay_as(target, options + ",volatile")
            return
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            _volatile[0] = False  # an older kernel: mounts sync on unmount, as they always did
    _mount_overlay_as(target, options)


def _mount_overlay_as(target: str, options: str) -> None:
    import ctypes

    rc = _lib().mount(
        b"overlay", os.fsencode(target), b"overlay", ctypes.c_ulong(0), options.encode()
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount overlay on {target}: {os.strerror(err)}")


def _syncfs(path: str) -> None:
    """Write back everything of the filesystem holding ``path`` (syncfs(2))."""
    import ctypes

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _lib().syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def _left_behind(lock_path: str) -> Iterator[bool]:
    """Whether the lock file ``lock_path`` was left by a process that is gone (nobody holds
    its flock): then it is held for the body, and removed after it."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False  # its owner is alive
            return
        yield True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
    finally:
        os.close(fd)


def _unsynced_by(root: str, snapshot_id: str, token: str) -> bool:
    """Whether a snapshot may hold data a crash lost: committed under marker ``token``, or
    with a meta.json the crash left unreadable."""
    try:
        with open(os.path.join(root, snapshot_id, "meta.json"), "rb") as f:
            return bool(json.loads(f.read()).get("unsynced") == token)
    except (OSError, ValueError, AttributeError):
        return True


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip().replace("-", "")
    except OSError:
        return "unknown"


def _umount(target: str) -> None:
    import ctypes

    lib = _lib()
    if lib.umount2(os.fsencode(target), 0) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EINVAL:
        return  # not mounted
    if err == errno.EBUSY and lib.umount2(os.fsencode(target), _MNT_DETACH) == 0:
        return  # something still uses it; detach now, the kernel finishes later
    raise OSError(err, f"umount {target}: {os.strerror(err)}")


def _mount_points_under(prefix: str) -> list[str]:
    points: list[str] = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split(" ")
                if len(fields) < 5:
                    continue
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
                if point == prefix or point.startswith(prefix + "/"):
                    points.append(point)
    except OSError:
        return []
    # Deepest first, so nested mounts come off before their parents.
    return sorted(points, key=len, reverse=True)


def _escape_lower(path: str) -> str:
    # overlayfs splits lowerdir on ':' and the option string on ',' unless escaped.
    return re.sub(r"([\\:,])", r"\\\1", path)


def _overlay_options(lowers_top_first: Sequence[str], upper: str, work: str) -> str:
    return (
        "lowerdir="
        + ":".join(_escape_lower(p) for p in lowers_top_first)
        + f",upperdir={_escape_lower(upper)},workdir={_escape_lower(work)},{_OVERLAY_FEATURES}"
    )


def _options_fit(options: str, count: int) -> bool:
    # The whole option string must fit in one page including its terminating NUL.
    return count <= MAX_LOWER_DIRS and len(options.encode()) < os.sysconf("SC_PAGE_SIZE") - 1


def overlay_supported(directory: str) -> str | None:
    """None if overlay mounts with upper dirs in ``directory`` work, else the reason."""
    if os.geteuid() != 0:
        return "not running as root"
    probe = temp_dir(directory, ".probe-")
    try:
        lower, upper, work, merged = (os.path.join(probe, n) for n in ("l", "u", "w", "m"))
        for d in (lower, upper, work, merged):
            os.mkdir(d)
        with open(os.path.join(lower, "f"), "w"):
            pass
        os.mkdir(os.path.join(lower, "d"))
        try:
            _mount_overlay(merged, _overlay_options([lower], upper, work))
        except OSError as exc:
            return f"overlay mount failed: {exc.strerror}"
        try:
            os.unlink(os.path.join(merged, "f"))
            os.rmdir(os.path.join(merged, "d"))
            os.mkdir(os.path.join(merged, "d"))
        finally:
            _umount(merged)
        st = os.lstat(os.path.join(upper, "f"))
        if not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0):
            return "overlay did not record a deletion as a whiteout device"
        if os.getxattr(os.path.join(upper, "d"), "trusted.overlay.opaque") != b"y":
            return "overlay did not mark a recreated directory opaque"
        return None
    except OSError as exc:
        return f"overlay probe failed: {exc.strerror or exc}"
    finally:
        remove_tree(probe)


def _take_root_attributes(upper: str, lower: str) -> None:
    """The merged root takes the upper root's attributes: make them the lower's."""
    top = os.lstat(lower)
    os.chown(upper, top.st_uid, top.st_gid)
    os.chmod(upper, stat.S_IMODE(top.st_mode))


def _work_dir(active: ActiveSnapshot) -> str:
    """overlayfs's work directory of an active snapshot's mount."""
    return os.path.join(active.directory, "work")


class _ParentsView:
    """The parents of an overlay-form apply, read-only, mounted at the first whiteout
    (``mason.layer.apply.LowerView``); ``depended``: a whiteout was left out for want of a
    target there, so the snapshot holds on these parents only."""

    def __init__(self, snapshots: Snapshotter, parents: Sequence[str]) -> None:
        self._snapshots = snapshots
        self._parents = parents
        self.stack = contextlib.ExitStack()
        self._path: list[str | None] = []
        self.depended = False

    def path(self) -> str | None:
        if not self._path:
            view = self._snapshots.view(self._parents, readonly=True) if self._parents else None
            self._path.append(self.stack.enter_context(view) if view is not None else None)
        return self._path[0]

    def left_out(self) -> None:
        self.depended = True


class Snapshotter:
    """Snapshots under ``root`` (created if missing); see the module docstring.

    ``mode="auto"`` uses overlayfs when a probe mount works there, copies otherwise.
    Thread-safe for distinct active snapshots.
    """

    def __init__(self, root: str, *, mode: Literal["auto", "overlay", "copy"] = "auto") -> None:
        self.root = os.path.abspath(root)
        self._active_dir = os.path.join(self.root, ".active")
        self._markers = os.path.join(self.root, _UNSYNCED)
        self._empty = os.path.join(self.root, ".empty")
        os.makedirs(self._active_dir, exist_ok=True)
        os.makedirs(self._empty, exist_ok=True)
        self._meta: dict[str, SnapshotInfo] = {}
        #: the marker of commits not synced yet (its flocked fd, its token), and its lock
        self._unsynced: tuple[int, str] | None = None
        self._unsynced_lock = threading.Lock()
        self._sync_thread: threading.Thread | None = None
        self.cleanup()
        if mode not in ("auto", "overlay", "copy"):
            raise ValueError(f"unknown snapshot mode {mode!r}")
        self._mode: SnapshotMode | None = None if mode == "auto" else mode
        self._fallback_reason: str | None = None
        self._mode_lock = threading.Lock()
        #: Called with the reason when ``auto`` finds overlay unusable (from whichever thread
        #: first needed the mode).
        self.on_fallback: Callable[[str], None] | None = None

    @property
    def mode(self) -> SnapshotMode:
        """``overlay`` or ``copy``. ``auto`` probes an overlay mount the first time the mode is
        needed, not when the snapshotter opens: a build whose steps are all cached mounts
        nothing and never probes (start-up, issue 14)."""
        if self._mode is None:
            with self._mode_lock:
                if self._mode is None:
                    reason = overlay_supported(self.root)
                    self._fallback_reason = reason
                    self._mode = "copy" if reason else "overlay"
                    if reason and self.on_fallback is not None:
                        self.on_fallback(reason)
        return self._mode

    def probe_soon(self) -> None:
        """Start ``auto``'s overlay probe in a thread now, for a caller that will need the
        mode soon and has other work meanwhile (``mode`` then waits for it). Not a daemon:
        the process does not end with a probe mount up."""
        if self._mode is None:
            threading.Thread(target=lambda: self.mode, name="overlay-probe").start()

    @property
    def fallback_reason(self) -> str | None:
        """Why overlay is not used (None when it is or when copy was asked for); probes."""
        _ = self.mode
        return self._fallback_reason

    # --- committed snapshots -------------------------------------------------------------

    def info(self, snapshot_id: str) -> SnapshotInfo:
        cached = self._meta.get(snapshot_id)
        if cached is not None:
            return cached
        if not _ID_RE.match(snapshot_id):
            raise LayerError(f"invalid snapshot id {snapshot_id!r}")
        directory = os.path.join(self.root, snapshot_id)
        try:
            with open(os.path.join(directory, "meta.json"), "rb") as f:
                meta = json.loads(f.read())
        except FileNotFoundError as exc:
            raise LayerError(f"snapshot {snapshot_id} does not exist in {self.root}") from exc
        except (OSError, ValueError) as exc:
            raise LayerError(f"snapshot {snapshot_id} in {self.root} is unreadable: {exc}") from exc
        info = SnapshotInfo(
            snapshot_id, meta["kind"], tuple(meta["parents"]), os.path.join(directory, "fs")
        )
        self._meta[snapshot_id] = info
        return info

    def exists(self, snapshot_id: str) -> bool:
        try:
            self.info(snapshot_id)
        except LayerError:
            return False
        return True

    def snapshots(self) -> list[SnapshotInfo]:
        """Every committed snapshot, sorted by id."""
        result = []
        for name in sorted(os.listdir(self.root)):
            if name.startswith(".") or not _ID_RE.match(name):
                continue
            with contextlib.suppress(LayerError):
                result.append(self.info(name))
        return result

    def remove(self, snapshot_id: str) -> None:
        """Delete a committed snapshot (its children become unusable: the caller's business)."""
        self.info(snapshot_id)
        # Move it out of sight first, so a crash leaves garbage, not half a snapshot.
        trash = os.path.join(self._active_dir, "rm-" + os.urandom(8).hex())
        os.rename(os.path.join(self.root, snapshot_id), trash)
        self._meta.pop(snapshot_id, None)
        remove_tree(trash)

    def _check_chain(self, parents: Sequence[str]) -> list[SnapshotInfo]:
        # Every snapshot is self-contained in its form: a diff is a layer in overlay form
        # (one without recorded parents is valid on any stack, which is what lets one
        # unpacked layer serve every chain it appears in; one unpacked on its parents
        # because it reached into them is named by its chain, so callers only ask for it
        # on that chain) and a full snapshot hides what is below it. So a chain only
        # needs its members to exist, each once.
        if len(set(parents)) != len(parents):
            raise LayerError(
                f"snapshot chain {list(parents)} names a snapshot twice",
                hint="keep only the topmost occurrence: a layer applied again wins anyway",
            )
        return [self.info(p) for p in parents]

    # --- active snapshots ------------------------------------------------------------

    def _new_active(self, parents: Sequence[str]) -> ActiveSnapshot:
        name = os.urandom(8).hex()
        lock_path = os.path.join(self._active_dir, name + ".lock")
        # Lock under a temporary name, then rename: cleanup never sees an unlocked
        # lock file of a live process.
        tmp_lock = lock_path + "tmp"
        fd = os.open(tmp_lock, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp_lock, lock_path)
        directory = os.path.join(self._active_dir, name)
        os.mkdir(directory, 0o700)
        upper = os.path.join(directory, "fs")
        return ActiveSnapshot(self, name, tuple(parents), upper, directory, upper, _lock_fd=fd)

    def _release(self, active: ActiveSnapshot) -> None:
        active.done = True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self._active_dir, active.name + ".lock"))
        if active._lock_fd >= 0:
            os.close(active._lock_fd)
            active._lock_fd = -1

    def prepare(self, parents: Sequence[str]) -> ActiveSnapshot:
        """A writable root filesystem showing ``parents`` (committed ids, lowest first)."""
        infos = self._check_chain(parents)
        active = self._new_active(parents)
        try:
            if self.mode == "overlay":
                self._prepare_overlay(active, infos)
            else:
                os.mkdir(active.upper, 0o755)
                if infos:
                    copy_tree(self._merged_tree(infos), active.upper)
                    # Inode ctimes come from a coarse clock (one tick <= 10 ms): after a
                    # pause, any later change has a ctime past this mark, so the diff
                    # can skip comparing bytes of files whose inode is the copy's.
                    active.copied_before_ns = time.time_ns()
                    time.sleep(_CTIME_SETTLE)
        except BaseException:
            self.discard(active)
            raise
        return active

    def _prepare_overlay(self, active: ActiveSnapshot, infos: list[SnapshotInfo]) -> None:
        os.mkdir(active.upper, 0o755)
        self._mount(active, infos)

    def prepare_over(self, lower: str) -> ActiveSnapshot:
        """Overlay mode: a writable root filesystem over the directory ``lower`` (the caller's,
        kept until the snapshot is committed or discarded; e.g. ``mason.layer.sparse``'s
        tree), recording no parents: what is written there is a layer in overlay form, as
        on ``prepare``'s mount."""
        if self.mode != "overlay":
            raise LayerError("a snapshot over a given directory needs overlay mode")
        active = self._new_active(())
        try:
            os.mkdir(active.upper, 0o755)
            self._mount_lowers(active, [lower], "a given directory")
        except BaseException:
            self.discard(active)
            raise
        return active

    @property
    def empty_dir(self) -> str:
        """An empty directory (the lower of a snapshot on no layers)."""
        return self._empty

    def prepare_beside(self, lower: str) -> ActiveSnapshot:
        """Overlay mode: an upper directory alone, for a step that only makes names at the top
        of the root that ``lower`` (the layers below, or the part of them the step looks at)
        does not hold. overlayfs would put exactly those entries into the upper directory,
        so they are written there directly, with no mount (issue 14: a file made through an
        overlay mount costs 2-5 times what it costs on the upper's own filesystem). The root
        takes ``lower``'s attributes, as a mount's would; no parents are recorded."""
        if self.mode != "overlay":
            raise LayerError("a snapshot beside a given directory needs overlay mode")
        active = self._new_active(())
        try:
            os.mkdir(active.upper, 0o755)
            _take_root_attributes(active.upper, lower)
        except BaseException:
            self.discard(active)
            raise
        return active

    def _mount(self, active: ActiveSnapshot, infos: list[SnapshotInfo]) -> None:
        """Mount ``infos`` (lowest first) with ``active.upper`` as the upper dir; ``active.path``
        becomes the merged view."""
        lowers = self._lowers(infos, active.upper, _work_dir(active))
        self._mount_lowers(active, lowers, f"the snapshot of {len(infos)} layers")

    def _mount_lowers(self, active: ActiveSnapshot, lowers: list[str], what: str) -> None:
        """Mount ``lowers`` (top first) with ``active.upper`` as the upper dir."""
        work = _work_dir(active)
        merged = os.path.join(active.directory, "merged")
        os.mkdir(work, 0o700)
        os.mkdir(merged, 0o755)
        _take_root_attributes(active.upper, lowers[0])
        try:
            _mount_overlay(merged, _overlay_options(lowers, active.upper, work))
        except OSError as exc:
            raise LayerError(
                f"cannot mount {what}: {exc.strerror}", context=[f"in {active.directory}"]
            ) from exc
        active.mounted = True
        active.path = merged

    def _lowers(self, infos: list[SnapshotInfo], upper: str, work: str) -> list[str]:
        """Lower dirs, top first; a stack too long for one mount is partly flattened."""
        start = 0
        for i, info in enumerate(infos):
            if info.kind == "full":
                start = i  # a full tree hides everything below it
        chain = infos[start:]
        if not chain:
            return [self._empty]
        for k in range(1, len(chain) + 1):
            if k == 1:
                lowers = [i.path for i in reversed(chain)]
            else:
                flat = self._flatten([i.id for i in infos[: start + k]])
                lowers = [i.path for i in reversed(chain[k:])] + [flat.path]
            if _options_fit(_overlay_options(lowers, upper, work), len(lowers)):
                return lowers
        raise LayerError("cannot mount even a flattened snapshot: the root path is too long")

    def _merged_tree(self, infos: list[SnapshotInfo]) -> str:
        """A directory holding the merged view of ``infos`` (a full snapshot's fs)."""
        top = infos[-1]
        if top.kind == "full":
            return top.path
        return self._flatten([i.id for i in infos]).path

    def _flatten(self, chain: list[str]) -> SnapshotInfo:
        """A full snapshot merging ``chain``; cached under an id derived from the chain."""
        import tempfile

        from mason.layer.apply import apply_layer as _apply_tar
        from mason.layer.diff import write_diff_tar

        flat_id = "f" + sha256_bytes("\0".join(chain).encode()).split(":", 1)[1][:23]
        if self.exists(flat_id):
            return self.info(flat_id)
        infos = self._check_chain(chain)
        active = self._new_active(chain)
        try:
            os.mkdir(active.upper, 0o755)
            start = 0
            for i, info in enumerate(infos):
                if info.kind == "full":
                    start = i
            if infos[start].kind == "full":
                copy_tree(infos[start].path, active.upper)
                start += 1
            for info in infos[start:]:
                with tempfile.TemporaryFile(dir=self._active_dir) as tmp:
                    write_diff_tar(info.path, tmp)
                    tmp.seek(0)
                    _apply_tar(tmp, active.upper, mode="flat", allow_devices=True)
            self._commit_as(active, "full", flat_id)
            return self.info(flat_id)
        except LayerError as exc:
            if self.exists(flat_id):  # another process flattened the same chain first
                self.discard(active)
                return self.info(flat_id)
            self.discard(active)
            raise exc
        except BaseException:
            self.discard(active)
            raise

    def commit(self, active: ActiveSnapshot, *, snapshot_id: str | None = None) -> str:
        """Make ``active`` an immutable snapshot; returns its id. ``active`` is consumed.

        ``snapshot_id`` (``[0-9a-z]{1,32}``) names it; such ids must be content
        addresses: when one already exists (another build made the same layer),
        ``active`` is discarded and the existing snapshot kept.
        """
        if active.done:
            raise LayerError(f"active snapshot {active.name} was already committed or discarded")
        if snapshot_id is not None:
            self._check_id(snapshot_id)
            if self.exists(snapshot_id):
                self.discard(active)
                return snapshot_id
        try:
            self._unmount(active)
            kind: SnapshotKind = "diff" if self.mode == "overlay" else "full"
            return self._commit_as(active, kind, snapshot_id)
        except BaseException:
            if not active.done:
                self.discard(active)
            raise

    @staticmethod
    def _check_id(snapshot_id: str) -> None:
        if not _ID_RE.match(snapshot_id):
            raise LayerError(
                f"invalid snapshot id {snapshot_id!r}", hint="ids match [0-9a-z]{1,32}"
            )

    def _unmount(self, active: ActiveSnapshot) -> None:
        """Take an overlay active snapshot's mount down; its upper dir stays (no-op in copy mode)."""
        if active.mounted:
            _umount(active.path)
            active.mounted = False
            os.rmdir(active.path)
            remove_tree(os.path.join(active.directory, "work"))
            active.path = active.upper

    def _commit_as(
        self, active: ActiveSnapshot, kind: SnapshotKind, snapshot_id: str | None
    ) -> str:
        with self._unsynced_lock:  # ``sync`` never drops a marker a commit is naming
            return self._commit_unsynced(active, kind, snapshot_id, self._marker())

    def _marker(self) -> str:
        """The token of this snapshotter's marker of unsynced commits, made durably first."""
        if self._unsynced is None:
            token = f"{_boot_id()}-{os.urandom(6).hex()}"
            os.makedirs(self._markers, exist_ok=True)
            path = os.path.join(self._markers, token)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            fsync_dir(self._markers)
            self._unsynced = (fd, token)
        return self._unsynced[1]

    def sync(self) -> None:
        """Make every commit so far durable (one ``syncfs``) and drop their marker; waits
        for a ``sync_soon`` under way first."""
        thread, self._sync_thread = self._sync_thread, None
        if thread is not None:
            thread.join()
        self._sync_committed()

    def sync_soon(self) -> None:
        """Start ``sync`` in a thread (its disk writes overlap the caller's work, e.g. an
        export); a later ``sync`` waits for it and syncs what was committed since."""
        if self._unsynced is not None and self._sync_thread is None:
            self._sync_thread = threading.Thread(target=self._sync_quietly, name="snapshot-sync")
            self._sync_thread.start()

    def _sync_quietly(self) -> None:
        with contextlib.suppress(OSError):  # the caller's ``sync`` tries again and reports
            self._sync_committed()

    def _sync_committed(self) -> None:
        with self._unsynced_lock:
            if self._unsynced is None:
                return
            fd, token = self._unsynced
            _syncfs(self.root)
            self._unsynced = None
            os.unlink(os.path.join(self._markers, token))
            os.close(fd)

    def _commit_unsynced(
        self, active: ActiveSnapshot, kind: SnapshotKind, snapshot_id: str | None, token: str
    ) -> str:
        meta = {"kind": kind, "parents": list(active.parents), "unsynced": token}
        with open(os.path.join(active.directory, "meta.json"), "wb") as f:
            f.write(json.dumps(meta, sort_keys=True).encode())
        for _ in range(8):
            new_id = snapshot_id or os.urandom(6).hex()
            target = os.path.join(self.root, new_id)
            if os.path.lexists(target):
                if snapshot_id is not None:
                    if self.exists(snapshot_id):
                        self.discard(active)
                        return snapshot_id
                    # Not a snapshot (a crashed removal's leftover): make room.
                    remove_tree(target)
                else:
                    continue
            try:
                os.rename(active.directory, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    if snapshot_id is None:
                        continue
                    if self.exists(snapshot_id):  # another process committed it first
                        self.discard(active)
                        return snapshot_id
                raise LayerError(f"cannot commit snapshot {new_id}: {exc.strerror}") from exc
            self._release(active)
            return new_id
        raise LayerError("could not find a free snapshot id")

    def discard(self, active: ActiveSnapshot) -> None:
        """Unmount and delete an active snapshot (no-op once committed or discarded)."""
        if active.done:
            return
        try:
            if active.mounted:
                _umount(active.path)
                active.mounted = False
            remove_tree(active.directory)
        finally:
            self._release(active)

    @contextlib.contextmanager
    def view(self, parents: Sequence[str], *, readonly: bool = False) -> Iterator[str]:
        """A temporary root filesystem of ``parents`` (changes are dropped).

        ``readonly=True`` promises not to write: when the chain's top is a full
        snapshot (copy mode), its directory is handed out as is, without a copy.
        """
        infos = self._check_chain(parents)
        if readonly and infos and infos[-1].kind == "full":
            yield infos[-1].path
            return
        with self.prepare(parents) as active:
            yield active.path

    def apply_to(
        self, active: ActiveSnapshot, stream: BinaryIO, *, allow_devices: bool | None = None
    ) -> LayerInfo:
        """Apply an uncompressed layer tar to an active snapshot's root (whiteouts delete)."""
        from mason.layer.apply import apply_layer as _apply_tar

        if active.done:
            raise LayerError(f"active snapshot {active.name} was already committed or discarded")
        return _apply_tar(stream, active.path, mode="flat", allow_devices=allow_devices)

    def write_active_layer(
        self, active: ActiveSnapshot, dst: BinaryIO, *, source_date_epoch: int | None = None
    ) -> LayerInfo:
        """Stream the layer tar of what changed in ``active`` over its parents to ``dst``.

        An overlay mount is taken down first (``active.path`` is then the upper dir);
        commit afterwards, under an id derived from the returned diff ID if wanted.
        """
        from mason.layer.diff import write_diff_tar, write_tree_diff_tar

        if active.done:
            raise LayerError(f"active snapshot {active.name} was already committed or discarded")
        if self.mode == "overlay":
            self._unmount(active)
            return write_diff_tar(active.upper, dst, source_date_epoch=source_date_epoch)
        parents = self._check_chain(active.parents)
        lower = self._merged_tree(parents) if parents else None
        return write_tree_diff_tar(
            lower,
            active.upper,
            dst,
            source_date_epoch=source_date_epoch,
            copied_before_ns=active.copied_before_ns,
        )

    # --- layers ------------------------------------------------------------------------

    def write_layer(
        self, snapshot_id: str, dst: BinaryIO, *, source_date_epoch: int | None = None
    ) -> LayerInfo:
        """Stream the layer tar of ``snapshot_id`` (its change over its parents) to ``dst``."""
        from mason.layer.diff import write_diff_tar, write_dir_tar, write_tree_diff_tar

        info = self.info(snapshot_id)
        if info.kind == "diff":
            return write_diff_tar(info.path, dst, source_date_epoch=source_date_epoch)
        if not info.parents:
            return write_dir_tar(info.path, dst, source_date_epoch=source_date_epoch)
        parents = self._check_chain(info.parents)
        return write_tree_diff_tar(
            self._merged_tree(parents), info.path, dst, source_date_epoch=source_date_epoch
        )

    def apply_layer(
        self,
        parents: Sequence[str],
        stream: BinaryIO,
        *,
        allow_devices: bool | None = None,
        snapshot_id: str | None = None,
        based_id: str | None = None,
        expect_diff_id: str | None = None,
    ) -> tuple[str, LayerInfo]:
        """Commit a snapshot holding an (uncompressed) layer tar applied on ``parents``.

        Returns the new id and the diff ID and size of the tar as read. Copy mode: a full
        tree. Overlay mode: the layer in overlay form, applied into an empty upper dir; it
        depends on nothing below and is committed as ``snapshot_id`` with no parents --
        unless an entry reaches into ``parents`` (a write through an earlier layer's
        symlink, a parent directory or hardlink target only they hold): then the rest of the
        layer is applied on an overlay mount of ``parents`` and this upper dir, exactly as
        flat mode would on their merged tree, and the snapshot is only valid on ``parents``:
        it is committed as ``based_id`` (when given) with ``parents`` recorded.
        ``snapshot_id``/``based_id``: as for ``commit``. ``expect_diff_id``: the tar's
        diff ID must be this one, else nothing is committed (``LayerError``).
        """
        from mason.layer.apply import apply_layer as _apply_tar

        for given in (snapshot_id, based_id):
            if given is not None:
                self._check_id(given)
        if self.mode == "copy":
            with self.prepare(parents) as active:
                result = _apply_tar(stream, active.upper, mode="flat", allow_devices=allow_devices)
                _check_diff_id(result, expect_diff_id)
                return self.commit(active, snapshot_id=snapshot_id), result
        infos = self._check_chain(parents)
        active = self._new_active(parents)
        based: list[bool] = []
        lower = _ParentsView(self, parents)

        def below() -> str:
            based.append(True)
            self._mount(active, infos)
            return active.path

        try:
            os.mkdir(active.upper, 0o755)
            with lower.stack:
                result = _apply_tar(
                    stream,
                    active.upper,
                    mode="overlay",
                    allow_devices=allow_devices,
                    below=below,
                    lower=lower,
                )
            _check_diff_id(result, expect_diff_id)
            self._unmount(active)
            based += [True] if lower.depended else []
            if not based:
                active.parents = ()  # nothing below was looked at: valid on any chain
            return self._commit_as(
                active, "diff", based_id if based and based_id else snapshot_id
            ), result
        except BaseException:
            self.discard(active)
            raise

    # --- crash recovery --------------------------------------------------------------

    def cleanup(self) -> int:
        """Remove active snapshots left by killed processes, and deal with their unsynced
        commits (module docstring); returns how many snapshots were removed."""
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for token in os.listdir(self._markers):
                removed += self._recover(token)
        names = os.listdir(self._active_dir)
        for name in names:
            path = os.path.join(self._active_dir, name)
            if name.endswith((".lock", ".locktmp")):
                stem = os.path.join(self._active_dir, name.rsplit(".", 1)[0])
                with _left_behind(path) as gone:
                    if gone and self._remove_active(stem):
                        removed += 1
            elif not (name + ".lock" in names or os.path.exists(path + ".lock")):
                # A directory with no lock file: removal trash or a crashed commit.
                if os.path.isdir(path) and not os.path.islink(path):
                    if self._remove_active(path):
                        removed += 1
                elif os.path.lexists(path):
                    os.unlink(path)
                    removed += 1
        return removed

    def _recover(self, token: str) -> int:
        """A marker of unsynced commits whose owner is gone (none if it is alive): sync them
        if they are from this boot (a killed process: their data is in the page cache),
        else remove them, and any snapshot with a meta.json torn by the crash; then drop
        the marker. Returns how many snapshots were removed."""
        removed = 0
        with _left_behind(os.path.join(self._markers, token)) as gone:
            if not gone:
                return 0  # its owner is alive and will sync
            if token.split("-", 1)[0] != _boot_id():
                for name in os.listdir(self.root):
                    if not _ID_RE.match(name) or not _unsynced_by(self.root, name, token):
                        continue
                    self._meta.pop(name, None)
                    if self._remove_active(os.path.join(self.root, name)):
                        removed += 1
            _syncfs(self.root)  # what is kept (or the removals) on disk before the marker goes
        return removed

    def _remove_active(self, directory: str) -> bool:
        if not os.path.lexists(directory):
            return False
        for point in _mount_points_under(directory):
            with contextlib.suppress(OSError):
                _umount(point)
        if _mount_points_under(directory):
            # Never delete through a mount: that would reach into what is mounted.
            return False
        remove_tree(directory)
        return True
