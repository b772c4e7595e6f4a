from __future__ import annotations

import io
import json
import os
import pathlib
import shutil

import pytest
from tests.support.testdata import TESTDATA

from mason.digest import sha256_bytes
from mason.errors import DigestMismatchError
from mason.oci import mediatypes as mt
from mason.oci.atomic import atomic_write, atomic_write_bytes
from mason.oci.descriptor import Descriptor
from mason.oci.errors import LayoutError
from mason.oci.layout import OCILayout
from mason.oci.manifest import build_manifest, parse_manifest

COMPRESSION = TESTDATA / "compression"


def _files(path: pathlib.Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


def test_create_writes_spec_files(tmp_path: pathlib.Path) -> None:
    layout = OCILayout.create(str(tmp_path / "l"))
    root = pathlib.Path(layout.path)
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert json.loads((root / "index.json").read_text()) == {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [],
    }
    assert (root / "blobs" / "sha256").is_dir()
    assert OCILayout.open(str(root)).read_index().manifests == ()


def test_blob_round_trip_and_manifest_refs(tmp_path: pathlib.Path) -> None:
    layout = OCILayout.create(str(tmp_path))
    config = layout.put_blob_bytes(b"{}", mt.OCI_CONFIG)
    layer = layout.put_blob_stream(io.BytesIO(b"layer" * 1000), mt.OCI_LAYER)
    assert layout.has_blob(layer.digest)
    assert oct(os.stat(layout.blob_path(layer.digest)).st_mode & 0o777) == "0o444"
    manifest = build_manifest(config, [layer])
    mdesc = layout.put_blob_bytes(manifest.raw, manifest.media_type)
    layout.add_manifest(mdesc, "v1")
    assert layout.resolve("v1").digest == mdesc.digest
    assert layout.resolve().digest == mdesc.digest
    assert layout.resolve(mdesc.digest).digest == mdesc.digest
    assert parse_manifest(layout.read_blob(layout.resolve("v1"))) == manifest
    with layout.open_blob(layer) as reader:
        assert reader.read() == b"layer" * 1000

    # a second manifest under the same name replaces the first entry, other names stay
    other = layout.put_blob_bytes(build_manifest(config, []).raw, mt.OCI_MANIFEST)
    layout.add_manifest(mdesc, "keep")
    layout.add_manifest(other, "v1")
    refs = layout.refs()
    assert refs["v1"].digest == other.digest
    assert refs["keep"].digest == mdesc.digest
    assert len(layout.read_index().manifests) == 2
    assert layout.remove_ref("keep") and not layout.remove_ref("keep")
    with pytest.raises(LayoutError, match="no image named 'nope'"):
        layout.resolve("nope")


def test_index_updates_leave_no_lock_file(tmp_path: pathlib.Path) -> None:
    # a layout is shipped as it is (oci/docker tarballs, local caches): only spec files in it
    layout = OCILayout.create(str(tmp_path / "l"))
    mdesc = layout.put_blob_bytes(
        build_manifest(layout.put_blob_bytes(b"{}", mt.OCI_CONFIG), []).raw, mt.OCI_MANIFEST
    )
    layout.add_manifest(mdesc, "v1")
    layout.remove_ref("v1")
    assert sorted(os.listdir(layout.path)) == ["blobs", "index.json", "oci-layout"]


def test_index_updates_are_serialised_between_processes(tmp_path: pathlib.Path) -> None:
    # every add_manifest is a read-modify-write of index.json: concurrent writers lose none
    import multiprocessing

    layout = OCILayout.create(str(tmp_path / "l"))
    config = layout.put_blob_bytes(b"{}", mt.OCI_CONFIG)
    descs = [
        layout.put_blob_bytes(
            build_manifest(config, [], annotations={"n": str(i)}).raw, mt.OCI_MANIFEST
        )
        for i in range(8)
    ]
    procs = [
        multiprocessing.get_context("fork").Process(target=_add, args=(layout.path, d, f"t{i}"))
        for i, d in enumerate(descs)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    assert sorted(layout.refs()) == sorted(f"t{i}" for i in range(8))


def _add(path: str, desc: Descriptor, name: str) -> None:
    OCILayout.open(path).add_manifest(desc, name)


def test_put_blob_file_verifies_and_keeps_nothing_on_mismatch(tmp_path: pathlib.Path) -> None:
    layout = OCILayout.create(str(tmp_path / "l"))
    src = tmp_path / "src"
    src.write_bytes(b"payload")
    good = layout.put_blob_file(str(src), mt.OCI_LAYER, sha256_bytes(b"payload"))
    assert good.size == 7
    wrong = sha256_bytes(b"other")
    with pytest.raises(DigestMismatchError) as info:
        layout.put_blob_file(str(src), mt.OCI_LAYER, wrong)
    assert wrong in str(info.value) and sha256_bytes(b"payload") in str(info.value)
    assert not layout.has_blob(wrong)
    assert _files(tmp_path / "l" / "blobs") == {f"sha256/{good.digest.split(':')[1]}"}


def test_verified_read_rejects_tampered_blob(tmp_path: pathlib.Path) -> None:
    layout = OCILayout.create(str(tmp_path))
    desc = layout.put_blob_bytes(b"original content", mt.OCI_LAYER)
    path = layout.blob_path(desc.digest)
    os.chmod(path, 0o644)
    pathlib.Path(path).write_bytes(b"tampered content")  # same length, different bytes
    with pytest.raises(DigestMismatchError, match=desc.digest), layout.open_blob(desc) as reader:
        while reader.read(4):
            pass
    with pytest.raises(DigestMismatchError):
        layout.read_blob(desc)
    pathlib.Path(path).write_bytes(b"short")
    with pytest.raises(DigestMismatchError, match="has 5 bytes"):
        layout.open_blob(desc)
    missing = Descriptor(mt.OCI_LAYER, sha256_bytes(b"absent"), 6)
    with pytest.raises(LayoutError, match="missing"):
        layout.open_blob(missing)


def test_atomic_write_leaves_old_content_on_failure(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "index.json"
    atomic_write_bytes(str(target), b"old")
    with pytest.raises(RuntimeError), atomic_write(str(target)) as f:
        f.write(b"half of the new")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert _files(tmp_path) == {"index.json"}  # the temp file is gone


def test_blob_write_failure_leaves_no_partial_blob(tmp_path: pathlib.Path) -> None:
    layout = OCILayout.create(str(tmp_path))

    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.sent = False

        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            if self.sent:
                raise OSError("source went away")
            self.sent = True
            b[:3] = b"abc"
            return 3

    with pytest.raises(OSError, match="went away"):
        layout.put_blob_stream(Broken(), mt.OCI_LAYER)  # type: ignore[arg-type]
    assert _files(tmp_path / "blobs") == set()


def test_reads_buildkit_layout_without_oci_layout_file(tmp_path: pathlib.Path) -> None:
    copy = tmp_path / "estargz"
    shutil.copytree(COMPRESSION / "estargz", copy)
    assert not (copy / "oci-layout").exists()
    layout = OCILayout.open(str(copy))
    top = layout.resolve("latest")
    index = parse_manifest(layout.read_blob(top))
    for desc in index.manifests:  # type: ignore[union-attr]
        assert layout.has_blob(desc.digest)
        with layout.open_blob(desc) as reader:
            while reader.read(1 << 20):
                pass


def test_open_rejects_non_layouts(tmp_path: pathlib.Path) -> None:
    with pytest.raises(LayoutError, match="does not exist"):
        OCILayout.open(str(tmp_path / "nothing"))
    with pytest.raises(LayoutError, match=r"index\.json is missing"):
        OCILayout.open(str(tmp_path))
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion": "2.0.0"}')
    with pytest.raises(LayoutError, match="unsupported imageLayoutVersion"):
        OCILayout.open(str(tmp_path))
