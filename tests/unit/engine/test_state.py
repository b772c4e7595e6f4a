"""Local state: content store, metadata, lock, cleanup and pruning."""

from __future__ import annotations

import contextlib
import gzip
import io
import multiprocessing
import os
from pathlib import Path

import pytest

from mason.digest import Digest, sha256_bytes
from mason.engine.blobs import Blobs, RemoteLocation
from mason.engine.state import BlobInfo, LayerRef, StateError, StateRoot, parse_size
from mason.errors import DigestMismatchError
from mason.oci import mediatypes as mt


def test_put_and_read_blob_is_content_addressed(tmp_path: Path) -> None:
    """Blobs are stored by digest; a second put of the same bytes is a no-op."""
    with StateRoot.open(tmp_path / "root") as st:
        d1 = st.store.put_bytes(b"hello")
        d2, size = st.store.put_stream(io.BytesIO(b"hello"))
        assert d1 == d2 == sha256_bytes(b"hello")
        assert size == 5
        with st.store.open(d1, 5) as r:
            assert r.read() == b"hello"
        assert list(st.store.iter_digests()) == [d1]
        assert os.listdir(st.tmp) == []


@pytest.mark.parametrize(("durable", "syncs"), [(True, 2), (False, 0)])
def test_content_put_durably_is_synced_file_and_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool, syncs: int
) -> None:
    """A blob is fsynced, and its directory after the rename; ``durable=False`` (a document a
    registry serves again) skips both and is stored all the same, checked when read."""
    with StateRoot.open(tmp_path / "root") as st:
        synced: list[int] = []
        real = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
        digest = st.store.put_bytes(b"a manifest", durable=durable)
        assert len(synced) == syncs
        with st.store.open(digest, 10) as r:
            assert r.read() == b"a manifest"
        assert os.listdir(st.tmp) == []


def test_put_stream_rejects_wrong_digest(tmp_path: Path) -> None:
    """A stream that does not match the expected digest is not kept."""
    with StateRoot.open(tmp_path) as st:
        with pytest.raises(StateError):
            st.store.put_stream(io.BytesIO(b"abc"), expected=sha256_bytes(b"xyz"))
        assert not st.store.has(sha256_bytes(b"abc"))
        assert os.listdir(st.tmp) == []


def test_corrupt_blob_fails_verification(tmp_path: Path) -> None:
    """Reading a blob whose bytes changed on disk raises a digest mismatch."""
    with StateRoot.open(tmp_path) as st:
        d = st.store.put_bytes(b"data")
        st.store.path(d).write_bytes(b"evil")
        with pytest.raises(DigestMismatchError), st.store.open(d) as r:
            while r.read(2):
                pass


def test_results_and_variants_survive_reopen(tmp_path: Path) -> None:
    """Results and compressed variants persist in sqlite across processes/opens."""
    diff = sha256_bytes(b"tar")
    blob = sha256_bytes(b"gz")
    with StateRoot.open(tmp_path) as st:
        st.meta.put_result(
            "k1",
            (LayerRef(diff, blob, 2, "application/vnd.oci.image.layer.v1.tar+gzip"),),
            "RUN x",
            {"a": 1},
        )
        st.meta.put_variant(
            diff, "gzip", None, BlobInfo(blob, 2, "application/vnd.oci.image.layer.v1.tar+gzip")
        )
    with StateRoot.open(tmp_path) as st:
        r = st.meta.get_result("k1")
        assert r is not None and r.layers[0].diff_id == diff and r.extra == {"a": 1}
        v = st.meta.variant(diff, "gzip", None)
        assert v is not None and v.digest == blob
        assert st.meta.diff_id_of(blob) == diff
        assert st.meta.variant(diff, "zstd", 3) is None


def test_leftover_temp_files_are_cleaned_on_open(tmp_path: Path) -> None:
    """Temp files of a killed process are removed when the root is opened alone."""
    with StateRoot.open(tmp_path) as st:
        (st.tmp / "123-blob-x").write_bytes(b"partial")
        (st.tmp / "123-snap").mkdir()
    with StateRoot.open(tmp_path) as st:
        assert os.listdir(st.tmp) == []


def _hold_shared(
    path: str, ready: multiprocessing.synchronize.Event, done: multiprocessing.synchronize.Event
) -> None:
    with StateRoot.open(path) as st:
        (st.tmp / "other-process-temp").write_bytes(b"in use")
        ready.set()
        done.wait(10)


def test_second_process_does_not_clean_a_root_in_use(tmp_path: Path) -> None:
    """While another process holds the root, open() leaves its temp files alone."""
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_shared, args=(str(tmp_path), ready, done))
    p.start()
    try:
        assert ready.wait(10)
        with StateRoot.open(tmp_path) as st:
            assert (st.tmp / "other-process-temp").exists()
    finally:
        done.set()
        p.join(10)


def test_prune_all_and_keep_storage(tmp_path: Path) -> None:
    """prune --all empties the store; keep-storage removes what no cached result reaches
    first (the oldest of it), and a result's blob only with the result."""
    with StateRoot.open(tmp_path, exclusive=True) as st:
        digests = []
        for i in range(3):
            d = st.store.put_bytes(bytes([i]) * 1000)
            st.meta.put_blob(BlobInfo(d, 1000, "application/octet-stream"))
            digests.append(d)
        st.meta.put_result("k", (LayerRef(Digest(digests[0]), digests[0]),), "x")
        removed, freed = st.prune(keep_storage=2000)
        assert removed == 1 and freed == 1000
        assert (
            st.store.has(digests[0]) and st.meta.get_result("k") is not None
        )  # the result is whole
        assert not st.store.has(digests[1]) and st.store.has(digests[2])
        removed, freed = st.prune(keep_storage=500)
        assert (removed, freed) == (2, 2000) and st.meta.get_result("k") is None
        assert list(st.store.iter_digests()) == []
        st.meta.put_result("k2", (LayerRef(Digest(digests[0]), digests[0]),), "x")
        st.store.put_bytes(bytes([0]) * 1000)
        removed, _ = st.prune(all_=True)
        assert removed == 1 and st.meta.results() == []
        assert list(st.store.iter_digests()) == []


def _committed_snapshot(st: StateRoot, snapshot_id: str) -> Path:
    """A committed snapshot, registered as engine.snapshots does."""
    from mason.layer import Snapshotter

    snapshots = Snapshotter(str(st.snapshots_dir), mode="copy")
    with snapshots.prepare([]) as active:
        (Path(active.path) / "file").write_bytes(b"x" * 4096)
        snapshots.commit(active, snapshot_id=snapshot_id)
    path = st.snapshots_dir / snapshot_id
    st.meta.put_snapshot("sha256:" + snapshot_id, str(path), 0)
    return path


def _snapshot_exists(st: StateRoot, snapshot_id: str) -> bool:
    from mason.layer import Snapshotter

    return Snapshotter(str(st.snapshots_dir), mode="copy").exists(snapshot_id)


def test_prune_removes_snapshots_and_cache_mounts(tmp_path: Path) -> None:
    with StateRoot.open(tmp_path, exclusive=True) as st:
        path = _committed_snapshot(st, "c1")
        (st.cachemounts_dir / "m1").mkdir()
        (st.cachemounts_dir / "m1" / "data").write_bytes(b"y" * 100)
        removed, freed = st.prune(all_=True)
        assert removed == 2 and freed > 0
        assert not path.exists() and not _snapshot_exists(st, "c1")
        assert list(st.cachemounts_dir.iterdir()) == [] and st.meta.snapshots() == []


def test_prune_crash_mid_delete_leaves_no_snapshot_that_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot is renamed away before its files go: a prune killed while deleting leaves
    garbage the next open removes, never a half-deleted snapshot under its id."""
    import mason.layer.snapshot as snapshot_module

    with StateRoot.open(tmp_path, exclusive=True) as st:
        path = _committed_snapshot(st, "c1")

        def crash(_path: str) -> None:
            raise KeyboardInterrupt("killed mid-delete")

        with monkeypatch.context() as m:
            m.setattr(snapshot_module, "remove_tree", crash)
            with pytest.raises(KeyboardInterrupt):
                st.prune(all_=True)
        assert not path.exists()
        [trash] = (
            st.snapshots_dir / ".active"
        ).iterdir()  # the renamed snapshot, files still in it
        assert (trash / "fs" / "file").exists()
    with StateRoot.open(tmp_path, exclusive=True) as st:
        assert not _snapshot_exists(st, "c1")
        st.prune(all_=True)
        assert list((st.snapshots_dir / ".active").iterdir()) == []
        assert st.meta.snapshots() == []


def test_prune_needs_the_exclusive_lock(tmp_path: Path) -> None:
    """A running build holds the root shared: prune cannot start under it."""
    with StateRoot.open(tmp_path) as build:
        path = _committed_snapshot(build, "c1")
        with pytest.raises(StateError, match="exclusively"):
            build.prune(all_=True)
        with pytest.raises(StateError, match="in use by a running build") as busy:
            StateRoot.open(tmp_path, exclusive=True, wait=False)
        assert busy.value.reference == "state-busy"
        assert path.exists()
    with StateRoot.open(tmp_path, exclusive=True, wait=False) as st:
        assert st.prune(all_=True)[0] == 1 and not path.exists()


@pytest.mark.parametrize(
    ("text", "value"),
    [("1024", 1024), ("1k", 1024), ("10MB", 10 << 20), ("1.5GiB", int(1.5 * (1 << 30))), ("0", 0)],
)
def test_parse_size(text: str, value: int) -> None:
    """Sizes accept docker's unit suffixes (binary multiples)."""
    assert parse_size(text) == value


def test_parse_size_rejects_garbage() -> None:
    """A size that is not a number is a clear error."""
    with pytest.raises(StateError):
        parse_size("lots")


def _flattened_stack(st: StateRoot) -> Path:
    """Two registered layer snapshots in overlay (diff) form, and the flattened stack that
    mason.layer makes (and no metadata row names) when a copy-mode view merges them."""
    import tarfile

    from mason.layer import Snapshotter

    def layer(name: str) -> io.BytesIO:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            info = tarfile.TarInfo(name)
            info.size = 4096
            tf.addfile(info, io.BytesIO(b"z" * 4096))
        buf.seek(0)
        return buf

    diff = Snapshotter(str(st.snapshots_dir), mode="overlay")
    for sid in ("la", "lb"):
        diff.apply_layer([], layer(sid), snapshot_id=sid)
        st.meta.put_snapshot("sha256:" + sid, str(st.snapshots_dir / sid), 0)
    copies = Snapshotter(str(st.snapshots_dir), mode="copy")
    with copies.view(["la", "lb"], readonly=True) as merged:
        assert sorted(os.listdir(merged)) == ["la", "lb"]
    diff.sync()
    copies.sync()
    [flat] = [p for p in st.snapshots_dir.iterdir() if p.name.startswith("f")]
    return flat


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_prune_all_leaves_only_the_skeleton(tmp_path: Path) -> None:
    """prune --all removes snapshot directories without a metadata row (a flattened stack)
    and content-store files without one (a base image config), not only what rows name."""
    with StateRoot.open(tmp_path / "fresh"):
        pass
    skeleton = _tree(tmp_path / "fresh")
    with StateRoot.open(tmp_path / "root", exclusive=True) as st:
        flat = _flattened_stack(st)
        untracked_blob = st.store.put_bytes(b'{"config": {}}')
        layer = st.store.put_bytes(b"layer" * 100)
        st.meta.put_blob(BlobInfo(layer, 500, "application/vnd.oci.image.layer.v1.tar"))
        st.meta.put_variant(layer, "at:reg.example/app", None, BlobInfo(layer, 500, "x"))
        st.meta.put_result("k", (LayerRef(Digest(layer), layer),), "x")
        listed = {e.ident for e in st.usage()}
        assert {flat.name, untracked_blob, layer, "sha256:la"} <= listed  # du shows them too
        removed, freed = st.prune(all_=True)
        assert removed == 5 and freed >= 3 * 4096
        assert (
            st.meta.variants_of(layer) == []
            and st.meta.results() == []
            and st.meta.snapshots() == []
        )
    left = {p for p in _tree(tmp_path / "root") - skeleton if not p.startswith("meta.db")}
    # the snapshotter's own directories and an empty algorithm directory are skeleton too
    assert left <= {"blobs/sha256", "snapshots/.active", "snapshots/.empty", "snapshots/.unsynced"}


def test_plain_prune_collects_untracked_snapshot_dirs(tmp_path: Path) -> None:
    """With room to keep everything, prune still removes what nothing references (the
    flattened stack) and keeps what the metadata tracks."""
    with StateRoot.open(tmp_path, exclusive=True) as st:
        flat = _flattened_stack(st)
        blob = st.store.put_bytes(b"kept" * 100)
        st.meta.put_blob(BlobInfo(blob, 400, "application/octet-stream"))
        removed, freed = st.prune(keep_storage=1 << 40)
        assert (removed, freed > 0) == (1, True)
        assert not flat.exists()
        assert {p.name for p in st.snapshots_dir.iterdir()} == {
            ".active",
            ".empty",
            ".unsynced",
            "la",
            "lb",
        }
        assert list((st.snapshots_dir / ".unsynced").iterdir()) == []  # synced
        assert st.store.has(blob)
        assert list((st.snapshots_dir / ".active").iterdir()) == []


def test_a_downloaded_blob_is_stored_without_fsync_and_a_torn_copy_is_refetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob fetched from where it can be fetched again (a registry, a cache) is stored
    without fsyncs (start-up, issue 14); a copy a crash left torn fails its read, is deleted,
    and the next ``ensure_local`` fetches it again."""
    blob_bytes = gzip.compress(b"layer tar bytes", mtime=0)
    blob, diff_id = sha256_bytes(blob_bytes), sha256_bytes(gzip.decompress(blob_bytes))
    fetched: list[int] = []

    def opener() -> contextlib.AbstractContextManager[io.BytesIO]:
        fetched.append(1)
        return contextlib.nullcontext(io.BytesIO(blob_bytes))

    with StateRoot.open(tmp_path / "root") as st:
        blobs = Blobs(st)
        where = RemoteLocation(None, mt.OCI_LAYER_GZIP, len(blob_bytes), opener, image=True)
        blobs.add_remote(blob, diff_id, where)
        lr = LayerRef(diff_id, blob, len(blob_bytes), mt.OCI_LAYER_GZIP)
        synced: list[int] = []
        real = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
        blobs.ensure_local(lr)
        assert synced == [] and fetched == [1]
        st.store.path(blob).write_bytes(b"")  # what a crash may leave of an unsynced file
        with pytest.raises(DigestMismatchError), st.store.open(blob) as torn:
            torn.read()
        assert not st.store.has(blob)  # deleted when read
        blobs.ensure_local(lr)
        assert fetched == [1, 1]
        with st.store.open(blob) as r:
            assert r.read() == blob_bytes
