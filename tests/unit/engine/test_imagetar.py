"""OCI/docker tarballs written in one pass (``mason.engine.imagetar``): the layout BuildKit's
archive exporter writes, remote layers spooled (verified, never stored) and sent into the tar,
local ones read back verified, a bad blob failing the output."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from mason.digest import Digest, sha256_bytes
from mason.engine.blobs import Blobs, RemoteLocation
from mason.engine.imagetar import ImageFiles, index_json, write_image_tar
from mason.engine.state import LayerRef, StateError, StateRoot
from mason.errors import DigestMismatchError
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.layout import OCILayout


@pytest.fixture
def blobs(tmp_path: Path) -> Iterator[Blobs]:
    with StateRoot.open(tmp_path / "root") as st:
        yield Blobs(st)


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _local(blobs: Blobs, data: bytes) -> LayerRef:
    def write(stream: BinaryIO) -> Digest:
        stream.write(data)
        return sha256_bytes(data)

    return blobs.store_layer(write)


def _opener(
    data: bytes, opened: list[int]
) -> Callable[[], contextlib.AbstractContextManager[BinaryIO]]:
    @contextlib.contextmanager
    def _open() -> Iterator[BinaryIO]:
        opened.append(1)
        yield io.BytesIO(data)

    return _open


def _remote(blobs: Blobs, blob_bytes: bytes, serve: bytes | None = None) -> LayerRef:
    """A layer only an opener (an imported cache's lazy blob) can give; it serves ``serve``."""
    blob = sha256_bytes(blob_bytes)
    served = blob_bytes if serve is None else serve
    loc = RemoteLocation(None, mt.OCI_LAYER_GZIP, len(blob_bytes), _opener(served, []))
    diff_id = sha256_bytes(gzip.decompress(blob_bytes))
    blobs.add_remote(blob, diff_id, loc)
    return LayerRef(diff_id, blob, len(blob_bytes), mt.OCI_LAYER_GZIP)


def _files(layers: tuple[LayerRef, ...], docker: bool = False) -> ImageFiles:
    config, manifest = b'{"config":1}', b'{"manifest":1}'
    desc = Descriptor(mt.OCI_MANIFEST, sha256_bytes(manifest), len(manifest))
    index = index_json(desc, ["r/app:1"], {"r/app:1": "1"})
    return ImageFiles(layers, (config, manifest), index, b"[]" if docker else None)


def _members(data: bytes) -> list[tuple[str, int, int, int, int, bytes | None]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf:
            f = tf.extractfile(m)
            out.append((m.name, m.mode, m.uid, m.mtime, m.type[0], f.read() if f else None))
    return out


def test_tarball_holds_local_and_remote_layers_in_buildkit_order(
    blobs: Blobs, tmp_path: Path
) -> None:
    local = _local(blobs, b"local layer tar" * 1000)
    remote_bytes = _gz(b"remote layer" * 5000)
    remote = _remote(blobs, remote_bytes)
    files = _files((local, remote), docker=True)
    dest = tmp_path / "out.tar"
    with open(dest, "wb") as f:  # a real file: the remote layer goes in by sendfile
        write_image_tar(blobs, files, f)
    members = _members(dest.read_bytes())
    names = [m[0] for m in members]
    assert names == sorted(names) and names[:2] == ["blobs", "blobs/sha256"]
    assert names[-3:] == ["index.json", "manifest.json", "oci-layout"]
    by_name = {m[0]: m for m in members}
    assert local.blob is not None and remote.blob is not None
    assert by_name["blobs/" + remote.blob.replace(":", "/")][5] == remote_bytes
    assert by_name["blobs/" + local.blob.replace(":", "/")][5] == _local_bytes(blobs, local)
    assert by_name["oci-layout"][5] == b'{"imageLayoutVersion": "1.0.0"}'
    assert {(m[1], m[2], m[3]) for m in members if m[0].startswith("blobs/sha256/")} == {
        (0o444, 0, 0)
    }
    assert by_name["blobs"][1:4] == (0o755, 0, 0) and by_name["index.json"][1] == 0o644
    assert dest.stat().st_size % tarfile.RECORDSIZE == 0
    # spooled, not stored: the content store did not keep the remote layer
    assert not blobs.has_local(remote.blob)
    assert os.listdir(blobs.state.tmp) == []


def _local_bytes(blobs: Blobs, lr: LayerRef) -> bytes:
    assert lr.blob is not None
    return blobs.state.store.path(lr.blob).read_bytes()


def test_a_file_and_a_stream_get_the_same_bytes(blobs: Blobs, tmp_path: Path) -> None:
    layers = (_remote(blobs, _gz(b"a" * 70000)), _remote(blobs, _gz(b"b" * 3)))
    dest = tmp_path / "out.tar"
    with open(dest, "wb") as f:
        write_image_tar(blobs, _files(layers), f)
    stream = io.BytesIO()  # no file descriptor: copied in Python
    write_image_tar(blobs, _files(layers), stream)
    assert stream.getvalue() == dest.read_bytes()


def test_a_remote_blob_with_other_bytes_fails_the_output(blobs: Blobs) -> None:
    good = _gz(b"the real layer" * 100)
    bad = _remote(blobs, good, serve=_gz(b"something else" * 100))
    out = io.BytesIO()
    with pytest.raises(DigestMismatchError):
        write_image_tar(blobs, _files((bad,)), out)
    assert b"oci-layout" not in out.getvalue()  # no end of archive: not a tarball
    assert os.listdir(blobs.state.tmp) == []


def test_a_remote_blob_that_is_not_what_its_media_type_says_is_refused(blobs: Blobs) -> None:
    plain = b"not gzip at all" * 10
    blob = sha256_bytes(plain)
    loc = RemoteLocation(None, mt.OCI_LAYER_GZIP, len(plain), _opener(plain, []))
    blobs.add_remote(blob, sha256_bytes(plain), loc)
    lr = LayerRef(sha256_bytes(plain), blob, len(plain), mt.OCI_LAYER_GZIP)
    with pytest.raises(StateError, match="was not used"):
        write_image_tar(blobs, _files((lr,)), io.BytesIO())


def test_a_failing_location_falls_back_to_the_next(blobs: Blobs) -> None:
    data = _gz(b"layer" * 10)
    blob = sha256_bytes(data)

    @contextlib.contextmanager
    def broken() -> Iterator[BinaryIO]:
        raise OSError("connection reset")
        yield io.BytesIO()  # pragma: no cover

    blobs.add_remote(blob, None, RemoteLocation(None, mt.OCI_LAYER_GZIP, len(data), broken))
    opened: list[int] = []
    loc = RemoteLocation(None, mt.OCI_LAYER_GZIP, len(data), _opener(data, opened))
    with blobs._lock:  # a second opener-only location (add_remote keeps one without a ref)
        blobs._remote[blob].append(loc)
    lr = LayerRef(sha256_bytes(b"layer" * 10), blob, len(data), mt.OCI_LAYER_GZIP)
    out = io.BytesIO()
    write_image_tar(blobs, _files((lr,)), out)
    assert opened == [1] and data in out.getvalue()


def test_index_json_is_what_an_oci_layout_writes(tmp_path: Path) -> None:
    desc = Descriptor(mt.OCI_MANIFEST, sha256_bytes(b"m"), 1, annotations={"k": "v"})
    names = ["r/app:1", "other/app:1", "r/app:2"]  # two names share the ref name "1"
    layout = OCILayout.create(str(tmp_path / "layout"))
    for n in names:
        layout.add_manifest(
            desc.with_annotations({"io.containerd.image.name": n}), ref_name=n.rsplit(":")[1]
        )
    ref_names = {n: n.rsplit(":")[1] for n in names}
    assert index_json(desc, names, ref_names) == Path(layout.index_path).read_bytes()
    unnamed = OCILayout.create(str(tmp_path / "unnamed"))
    unnamed.add_manifest(desc, ref_name="latest")
    assert index_json(desc, [], {}) == Path(unnamed.index_path).read_bytes()
    assert json.loads(index_json(desc, names, ref_names))["manifests"][0]["annotations"]["k"] == "v"
