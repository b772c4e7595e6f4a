"""The content store's eStargz variants: made once, their own diff IDs, conversions both ways,
annotations, verified downloads, and image assembly with matching rootfs.diff_ids."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from mason.cache.options import parse_cache_to
from mason.compression import EStargzError
from mason.compression.estargz import estargz_to_tar, verify_estargz, write_estargz
from mason.digest import Digest, sha256_bytes
from mason.engine.blobs import Blobs, RemoteLocation
from mason.engine.exporters import ImageResult, assemble_manifest
from mason.engine.state import LayerRef, StateRoot
from mason.errors import UsageError
from mason.oci import mediatypes as mt
from mason.oci.platform import Platform

TOC = "containerd.io/snapshot/stargz/toc.digest"
USIZE = "io.containers.estargz.uncompressed-size"
UNCOMPRESSED = "containerd.io/uncompressed"


def _layer_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in (("etc/small.txt", b"hello\n"), ("big.bin", bytes(range(256)) * 20000)):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 0
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def blobs(tmp_path: Path) -> Iterator[Blobs]:
    with StateRoot.open(tmp_path / "root") as st:
        yield Blobs(st)


def _stored(blobs: Blobs) -> LayerRef:
    tar = _layer_tar()

    def write(stream: BinaryIO) -> Digest:
        stream.write(tar)
        return sha256_bytes(tar)

    return blobs.store_layer(write)


def _read(blobs: Blobs, lr: LayerRef) -> bytes:
    assert lr.blob is not None
    with blobs.state.store.open(lr.blob) as f:
        return f.read()


def test_estargz_variant_has_its_own_diff_id_and_is_made_once(blobs: Blobs) -> None:
    lr = _stored(blobs)
    es = blobs.variant(lr, "estargz", None, False)
    data = _read(blobs, es)
    assert es.media_type == mt.OCI_LAYER_GZIP and es.blob != lr.blob
    assert (
        es.diff_id == sha256_bytes(gzip.decompress(data)) != lr.diff_id
    )  # the stream includes the TOC
    tar = io.BytesIO()
    estargz_to_tar(io.BytesIO(data), tar)
    assert sha256_bytes(tar.getvalue()) == lr.diff_id
    # kept: asking again (from the tar or from the eStargz layer itself) compresses nothing
    assert blobs.variant(lr, "estargz", None, False) == es
    assert blobs.variant(es, "estargz", None, False) == es
    assert blobs.variant(lr, "estargz", None, True) == es
    # a fresh Blobs on the same root knows it from the metadata
    again = Blobs(blobs.state)
    assert again.variant(lr, "estargz", None, False) == es
    assert again.estargz_facts(es.blob) == blobs.estargz_facts(es.blob)


def test_estargz_descriptor_annotations(blobs: Blobs) -> None:
    es = blobs.variant(_stored(blobs), "estargz", 9, True)
    data = _read(blobs, es)
    info = verify_estargz(io.BytesIO(data))
    cache_desc = blobs.descriptor(es, oci=False, annotate=True)
    assert cache_desc.media_type == mt.DOCKER_LAYER_GZIP
    assert cache_desc.annotations == {
        UNCOMPRESSED: info.diff_id,
        TOC: info.toc_digest,
        USIZE: str(info.uncompressed_size),
    }
    image_desc = blobs.descriptor(es, oci=True, estargz=True)
    assert image_desc.annotations == {TOC: info.toc_digest, USIZE: str(info.uncompressed_size)}
    assert blobs.descriptor(es, oci=True).annotations == {}


def test_levels_give_distinct_variants(blobs: Blobs) -> None:
    lr = _stored(blobs)
    fast = blobs.variant(lr, "estargz", 1, True)
    best = blobs.variant(lr, "estargz", 9, True)
    # the TOC records compressed offsets, so even the diff ID depends on the level
    assert fast.blob != best.blob and fast.diff_id != best.diff_id
    for v in (fast, best):
        facts = blobs.estargz_facts(v.blob)
        assert facts is not None and facts.tar_diff_id == lr.diff_id
    assert blobs.variant(lr, "estargz", 1, True) == fast


def test_estargz_converts_back_to_gzip_and_zstd_with_the_tar_diff_id(blobs: Blobs) -> None:
    lr = _stored(blobs)
    es = blobs.variant(lr, "estargz", None, True)
    # without force an eStargz blob is a gzip blob
    assert blobs.variant(es, "gzip", None, False) == es
    zs = blobs.variant(es, "zstd", None, True)
    assert zs.diff_id == lr.diff_id and zs.media_type == mt.OCI_LAYER_ZSTD
    gz = blobs.variant(es, "gzip", 9, True)
    assert gz.diff_id == lr.diff_id and blobs.estargz_facts(gz.blob) is None
    assert gzip.decompress(_read(blobs, gz)) == _layer_tar()
    # and from zstd to eStargz again: the same eStargz blob (deterministic)
    assert blobs.variant(zs, "estargz", None, True).blob == es.blob


def test_ensure_local_never_labels_an_estargz_blob_with_the_tar_diff_id(blobs: Blobs) -> None:
    lr = _stored(blobs)
    es = blobs.variant(lr, "estargz", None, True)
    assert lr.blob is not None
    blobs.state.store.delete(lr.blob)
    with pytest.raises(Exception, match="neither in the content store"):
        blobs.ensure_local(LayerRef(lr.diff_id, lr.blob, lr.blob_size, lr.media_type))
    assert blobs.ensure_local(LayerRef(es.diff_id)) == es


def _remote(
    blobs: Blobs, data: bytes, diff_id: Digest, annotations: dict[str, str] | None = None
) -> LayerRef:
    digest = sha256_bytes(data)

    @contextlib.contextmanager
    def opener() -> Iterator[BinaryIO]:
        yield io.BytesIO(data)

    blobs.add_remote(
        digest,
        diff_id,
        RemoteLocation(None, mt.OCI_LAYER_GZIP, len(data), opener, annotations or {}),
    )
    return LayerRef(diff_id, digest, len(data), mt.OCI_LAYER_GZIP)


def _estargz_blob() -> tuple[bytes, dict[str, str]]:
    out = io.BytesIO()
    res = write_estargz(io.BytesIO(_layer_tar()), out, 0)
    return out.getvalue(), res.annotations()


def test_remote_estargz_with_annotations_is_used_without_download(tmp_path: Path) -> None:
    data, ann = _estargz_blob()
    with StateRoot.open(tmp_path) as st:
        blobs = Blobs(st)
        lr = _remote(blobs, data, Digest(ann[UNCOMPRESSED]), ann)
        assert blobs.variant(lr, "estargz", None, False) == lr
        assert blobs.descriptor(lr, oci=True, annotate=True).annotations == ann
        assert blobs.downloaded == []


def test_download_of_estargz_blob_is_verified(tmp_path: Path) -> None:
    data, ann = _estargz_blob()
    with StateRoot.open(tmp_path / "good") as st:
        blobs = Blobs(st)
        good = _remote(blobs, data, Digest(ann[UNCOMPRESSED]))
        with blobs.open_uncompressed(good) as f:
            assert sha256_bytes(f.read()) == good.diff_id
        assert blobs.compression_of(good) == "estargz"  # found by its footer, verified


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("bad-footer", "footer"),
        ("toc-digest", "TOC digest mismatch"),
        ("diff-id", "decompresses to"),
        ("chunk", "digest"),
    ],
)
def test_corrupt_estargz_download_is_rejected_and_not_kept(
    tmp_path: Path, damage: str, message: str
) -> None:
    data, ann = _estargz_blob()
    diff_id = Digest(ann[UNCOMPRESSED])
    claimed: dict[str, str] | None = ann
    if damage == "bad-footer":
        data = data[:-19] + data[-19:].replace(b"STARGZ", b"STARGX")
    elif damage == "toc-digest":
        claimed = {**ann, TOC: "sha256:" + "0" * 64}
    elif damage == "diff-id":
        claimed, diff_id = None, Digest("sha256:" + "1" * 64)
    else:  # one content byte changed, the original TOC kept (level 0: same member offsets)
        tar = bytearray(_layer_tar())
        tar[tar.index(b"hello\n")] = ord("j")
        forged = io.BytesIO()
        write_estargz(io.BytesIO(bytes(tar)), forged, 0)
        toc_offset = verify_estargz(io.BytesIO(data)).toc_offset
        data = forged.getvalue()[:toc_offset] + data[toc_offset:]
        claimed = None
    with StateRoot.open(tmp_path) as st:
        blobs = Blobs(st)
        lr = _remote(blobs, data, diff_id, claimed)
        with pytest.raises(EStargzError, match=message):
            blobs.ensure_local(lr)
        assert not st.store.has(sha256_bytes(data))


def test_image_rootfs_diff_ids_follow_the_shipped_blobs(blobs: Blobs) -> None:
    lr = _stored(blobs)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [lr.diff_id]},
    }
    image = ImageResult((lr,), config, Platform("linux", "amd64"))
    plain = assemble_manifest(blobs, image)
    assert json.loads(plain.config_raw)["rootfs"]["diff_ids"] == [lr.diff_id]
    es = assemble_manifest(blobs, image, compression="estargz")
    layer = es.layers[0]
    assert json.loads(es.config_raw)["rootfs"]["diff_ids"] == [layer.diff_id]
    assert (
        layer.diff_id
        == "sha256:" + hashlib.sha256(gzip.decompress(_read(blobs, layer))).hexdigest()
    )
    desc = es.manifest.layers[0]
    assert (
        desc.media_type == mt.OCI_LAYER_GZIP
        and TOC in desc.annotations
        and USIZE in desc.annotations
    )


def test_cache_to_accepts_estargz_with_gzip_levels() -> None:
    opts = parse_cache_to("type=registry,ref=r.io/c,compression=estargz,compression-level=9")[0]
    assert (opts.compression, opts.compression_level) == ("estargz", 9)
    with pytest.raises(UsageError, match="out of range"):
        parse_cache_to("type=local,dest=/x,compression=estargz,compression-level=10")


def test_plain_gzip_verdict_is_kept_on_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A downloaded plain gzip blob's footer is read once: a later build on the same root
    knows from the metadata that it is not eStargz (and a layer mason made is known as such)."""
    tar = _layer_tar()
    data = gzip.compress(tar, mtime=0)
    with StateRoot.open(tmp_path) as st:
        blobs = Blobs(st)
        pulled = _remote(blobs, data, sha256_bytes(tar))
        with blobs.open_uncompressed(pulled):
            pass
        assert blobs.compression_of(pulled) == "gzip"
        made = _stored(blobs)
    with StateRoot.open(tmp_path) as st:
        later = Blobs(st)

        def no_read(*_args: object, **_kwargs: object) -> None:
            raise AssertionError("the blob was read again")

        monkeypatch.setattr(Blobs, "_check_local", no_read)
        assert later.compression_of(pulled) == "gzip"
        assert later.compression_of(made) == "gzip"
        assert later.estargz_facts(made.blob) is None
