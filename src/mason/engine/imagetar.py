"""OCI and docker-load tarballs of one image, written in one pass into the output.

The tarball is the OCI layout (``oci-layout``, ``index.json``, ``blobs/sha256/*``; a
docker tarball adds ``manifest.json``), its entries in name order as BuildKit's (containerd's)
archive exporter writes them: directories 0755, blobs 0444, the other files 0644, owner 0 and
time 0. No layout directory is written first. Layers only known remote are fetched in parallel
(``Blobs.spool``: verified as they stream, into anonymous temp files, never stored) while the
tar is written in order; spooled bytes go into the tar by the kernel (``os.sendfile``), layers
in the content store are read back verified. A blob that fails verification fails the output
before its end-of-archive blocks are written (a file output is then not kept at all).
"""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, BinaryIO

from mason.digest import Digest, sha256_bytes
from mason.engine.blobs import Blobs
from mason.engine.state import LayerRef
from mason.futures import Future, ThreadPoolExecutor
from mason.oci import mediatypes as mt
from mason.oci.descriptor import ANNOTATION_REF_NAME, Descriptor
from mason.oci.manifest import build_index
from mason.structs import Struct

__all__ = ["ImageFiles", "index_json", "write_image_tar"]

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_CHUNK = 1 << 20
_IMAGE_NAME = "io.containerd.image.name"
_LAYOUT = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()


class ImageFiles(Struct, frozen=True):
    """What goes into one image tarball: its layers, the config and manifest bytes,
    ``index.json`` and, for a docker tarball, ``manifest.json``."""

    layers: tuple[LayerRef, ...]
    small_blobs: tuple[bytes, ...]
    index: bytes
    docker_manifest: bytes | None = None


def index_json(desc: Descriptor, names: Sequence[str], ref_name_of: Mapping[str, str]) -> bytes:
    """``index.json`` of a fresh layout holding one manifest: an entry per name (annotated with
    the name and its ref name; a later name with the same ref name replaces an earlier one, as
    ``OCILayout.add_manifest`` does), else one entry named ``latest``."""
    entries: list[Descriptor] = []
    named: list[str | None] = list(names) or [None]
    for n in named:
        ref_name = ref_name_of[n] if n is not None else "latest"
        extra = {_IMAGE_NAME: n} if n is not None else {}
        entry = desc.with_annotations({**extra, ANNOTATION_REF_NAME: ref_name})
        entries = [e for e in entries if e.annotations.get(ANNOTATION_REF_NAME) != ref_name]
        entries.append(entry)
    return build_index(entries, mt.OCI_INDEX).raw


class _TarOut:
    """A ustar/pax stream written straight to ``out``, counting its offset for the padding."""

    def __init__(self, out: IO[bytes] | BinaryIO) -> None:
        self.out = out
        self.offset = 0

    def write(self, data: bytes | memoryview) -> None:
        self.out.write(data)
        self.offset += len(data)

    def header(self, name: str, size: int, mode: int, directory: bool = False) -> None:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime, ti.uid, ti.gid = size, mode, 0, 0, 0
        ti.uname = ti.gname = ""
        if directory:
            ti.type = tarfile.DIRTYPE
        self.write(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def pad(self) -> None:
        if rem := self.offset % _BLOCK:
            self.write(b"\0" * (_BLOCK - rem))

    def file(self, name: str, data: bytes, mode: int) -> None:
        self.header(name, len(data), mode)
        self.write(data)
        self.pad()

    def copy(self, src: BinaryIO, size: int) -> None:
        """``size`` bytes of ``src`` (read to its end, so a verifying reader checks them)."""
        copied = 0
        while chunk := src.read(_CHUNK):
            copied += len(chunk)
            if copied > size:
                break
            self.write(chunk)
        if copied != size:
            raise OSError(f"blob has {copied} bytes, its descriptor says {size}")

    def send(self, src: BinaryIO, size: int) -> None:
        """``size`` bytes of a (verified) temp file, copied by the kernel where it can be (a
        regular file or a pipe); the rest, or all of it elsewhere, through ``copy``."""
        self.out.flush()
        sent = 0
        with contextlib.suppress(OSError, ValueError, AttributeError):
            dst = self.out.fileno()
            while sent < size and (n := os.sendfile(dst, src.fileno(), sent, size - sent)):
                sent += n
        self.offset += sent
        if sent < size:
            src.seek(sent)
            self.copy(src, size - sent)

    def close(self) -> None:
        self.write(b"\0" * (2 * _BLOCK))
        if rem := self.offset % _RECORD:
            self.write(b"\0" * (_RECORD - rem))
        self.out.flush()


def _blob_name(digest: Digest) -> str:
    return "blobs/" + digest.replace(":", "/", 1)


def write_image_tar(
    blobs: Blobs, files: ImageFiles, out: IO[bytes] | BinaryIO, *, workers: int = 4
) -> None:
    """Write the tarball of ``files`` to ``out`` (see the module docstring)."""
    layers = {lr.blob: lr for lr in files.layers if lr.blob is not None}
    small = {sha256_bytes(b): b for b in files.small_blobs}
    tar = _TarOut(out)
    tar.header("blobs", 0, 0o755, directory=True)
    tar.header("blobs/sha256", 0, 0o755, directory=True)
    remote = [layers[d] for d in sorted(layers) if d not in small]
    with _fetching(blobs, remote, workers) as fetched:
        for digest in sorted(set(layers) | set(small)):
            tar.header(_blob_name(digest), _size(layers, small, digest), 0o444)
            if digest in small:
                tar.write(small[digest])
            else:
                _write_layer(blobs, tar, layers[digest], fetched[digest].result())
            tar.pad()
    tar.file("index.json", files.index, 0o644)
    if files.docker_manifest is not None:
        tar.file("manifest.json", files.docker_manifest, 0o644)
    tar.file("oci-layout", _LAYOUT, 0o644)
    tar.close()


def _size(layers: Mapping[Digest, LayerRef], small: Mapping[Digest, bytes], digest: Digest) -> int:
    return len(small[digest]) if digest in small else layers[digest].blob_size


def _write_layer(blobs: Blobs, tar: _TarOut, lr: LayerRef, spooled: BinaryIO | None) -> None:
    if spooled is not None:
        tar.send(spooled, lr.blob_size)
        return
    with blobs.opener(lr)() as src:
        tar.copy(src, lr.blob_size)


@contextlib.contextmanager
def _fetching(
    blobs: Blobs, layers: Sequence[LayerRef], workers: int = 4
) -> Iterator[dict[Digest, Future[BinaryIO | None]]]:
    """Spool the remote-only layers in parallel, first needed first; every temp file is closed
    (and so gone) on the way out, and a failure cancels what has not started."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mason-spool")
    futures: dict[Digest, Future[BinaryIO | None]] = {}
    try:
        for lr in layers:
            assert lr.blob is not None
            futures[lr.blob] = pool.submit(blobs.spool, lr)
        yield futures
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for f in futures.values():
            if not f.cancelled() and f.exception() is None and (spool := f.result()) is not None:
                spool.close()
