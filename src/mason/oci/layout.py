"""An OCI image-layout directory: ``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``.

Every write goes to a temp file in the destination directory, is fsynced and
renamed into place; blobs are immutable once present. Every read is verified
against the descriptor's digest and size. Layouts written by BuildKit (no
``oci-layout`` file, no ``mediaType`` in ``index.json``) are read as well.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from typing import BinaryIO

from mason.digest import (
    Digest,
    DigestError,
    VerifyingReader,
    parse_digest,
    sha256_bytes,
)
from mason.errors import DigestMismatchError
from mason.oci import mediatypes as mt
from mason.oci.atomic import atomic_write_bytes
from mason.oci.cas import cas_writer
from mason.oci.descriptor import ANNOTATION_REF_NAME, Descriptor
from mason.oci.errors import LayoutError, ManifestError
from mason.oci.manifest import ImageIndex, build_index, parse_index

__all__ = ["ANNOTATION_IMAGE_NAME", "LAYOUT_VERSION", "OCILayout"]

LAYOUT_VERSION = "1.0.0"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
_CHUNK = 1 << 20
_BLOB_MODE = 0o444  # blobs are immutable (BuildKit writes them read-only too)


class OCILayout:
    """A directory in the OCI image-layout format."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    # -- opening -----------------------------------------------------------------

    @classmethod
    def create(cls, path: str) -> OCILayout:
        """Open ``path`` as a layout, creating the directory, ``oci-layout`` and an empty
        ``index.json`` when missing. An existing layout is kept as it is."""
        layout = cls(path)
        try:
            os.makedirs(os.path.join(layout.path, "blobs", "sha256"), exist_ok=True)
        except OSError as exc:
            raise LayoutError(f"cannot create OCI layout at {layout.path}: {exc.strerror}") from exc
        marker = os.path.join(layout.path, "oci-layout")
        if not os.path.exists(marker):
            atomic_write_bytes(marker, json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode())
        if not os.path.exists(layout.index_path):
            atomic_write_bytes(layout.index_path, build_index([]).raw)
        return layout

    @classmethod
    def open(cls, path: str) -> OCILayout:
        """Open an existing layout; ``LayoutError`` when it is not one."""
        layout = cls(path)
        if not os.path.isdir(layout.path):
            raise LayoutError(f"OCI layout {layout.path} does not exist or is not a directory")
        marker = os.path.join(layout.path, "oci-layout")
        if os.path.exists(marker):  # optional: BuildKit's local cache exports have none
            try:
                with open(marker, "rb") as f:
                    version = json.load(f).get("imageLayoutVersion")
            except (OSError, ValueError, AttributeError) as exc:
                raise LayoutError(f"{marker}: unreadable oci-layout file: {exc}") from exc
            if not isinstance(version, str) or not version.startswith("1."):
                raise LayoutError(f"{marker}: unsupported imageLayoutVersion {version!r}")
        if not os.path.isfile(layout.index_path):
            raise LayoutError(
                f"{layout.path} is not an OCI image layout: index.json is missing",
                hint="point at a directory written by an OCI exporter (it holds index.json and blobs/)",
            )
        return layout

    @property
    def index_path(self) -> str:
        return os.path.join(self.path, "index.json")

    # -- blobs -------------------------------------------------------------------

    def blob_path(self, digest: Digest | str) -> str:
        try:
            parsed = parse_digest(digest)
        except DigestError as exc:
            raise LayoutError(f"{self.path}: {exc.message}") from exc
        algorithm, hexpart = parsed.split(":", 1)
        return os.path.join(self.path, "blobs", algorithm, hexpart)

    def has_blob(self, digest: Digest | str) -> bool:
        return os.path.isfile(self.blob_path(digest))

    def put_blob_bytes(self, data: bytes, media_type: str) -> Descriptor:
        digest = sha256_bytes(data)
        path = self.blob_path(digest)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write_bytes(path, data, _BLOB_MODE)
        return Descriptor(media_type, digest, len(data))

    def put_blob_stream(
        self,
        stream: BinaryIO,
        media_type: str,
        digest: Digest | str | None = None,
        size: int | None = None,
    ) -> Descriptor:
        """Copy ``stream`` in as a blob. With ``digest`` (and ``size``) the bytes are
        verified and nothing is kept on a mismatch."""
        expected = parse_digest(digest) if digest is not None else None
        if expected is not None and self.has_blob(expected):
            return Descriptor(
                media_type,
                expected,
                size if size is not None else os.path.getsize(self.blob_path(expected)),
            )

        def mismatch(got: Digest, written: int) -> DigestMismatchError:
            return DigestMismatchError(
                f"blob for {self.path} failed verification: expected {expected}"
                f"{f' ({size} bytes)' if size is not None else ''}, got {got} ({written} bytes)",
                hint="the source does not hold the content its digest names; nothing was kept",
            )

        with cas_writer(
            os.path.join(self.path, "blobs"),
            expected=expected,
            size=size,
            mode=_BLOB_MODE,
            dir_mode=0o755,
            mismatch=mismatch,
        ) as out:
            while chunk := stream.read(_CHUNK):
                out.write(chunk)
                if size is not None and out.size > size:
                    break  # more than announced: stop reading, the size check refuses it
        return Descriptor(media_type, out.digest, out.size)

    def put_blob_file(
        self, path: str, media_type: str, digest: Digest | str | None = None
    ) -> Descriptor:
        """Copy the file at ``path`` in as a blob (verified against ``digest`` when given)."""
        try:
            with open(path, "rb") as f:
                return self.put_blob_stream(f, media_type, digest)
        except FileNotFoundError as exc:
            raise LayoutError(f"cannot add blob: {path} does not exist") from exc

    def open_blob(self, desc: Descriptor) -> VerifyingReader:
        """A reader that raises ``DigestMismatchError`` at end of stream unless the blob
        has ``desc.digest`` and ``desc.size``."""
        path = self.blob_path(desc.digest)
        try:
            actual = os.path.getsize(path)
            f = open(path, "rb")  # noqa: SIM115 - handed to the caller inside the reader
        except FileNotFoundError as exc:
            raise LayoutError(
                f"blob {desc.digest} ({desc.media_type}) is missing from OCI layout {self.path}"
            ) from exc
        if actual != desc.size:
            f.close()
            raise DigestMismatchError(
                f"blob {desc.digest} in {self.path} has {actual} bytes, its descriptor says {desc.size}",
                hint="the layout is corrupt or the descriptor is wrong",
            )
        return VerifyingReader(f, desc.digest, desc.size, what=f"blob {desc.digest} in {self.path}")

    def read_blob(self, desc: Descriptor) -> bytes:
        """The whole blob, verified. For small documents; stream layers with ``open_blob``."""
        with self.open_blob(desc) as reader:
            data = reader.read()
            reader.read()  # end of stream: triggers verification
        return data

    def iter_blobs(self) -> Iterator[Digest]:
        """Digests of every blob file present (temp files excluded)."""
        blobs = os.path.join(self.path, "blobs")
        if not os.path.isdir(blobs):
            return
        for algorithm in sorted(os.listdir(blobs)):
            for name in sorted(os.listdir(os.path.join(blobs, algorithm))):
                with contextlib.suppress(DigestError):
                    yield parse_digest(f"{algorithm}:{name}")

    # -- index.json --------------------------------------------------------------

    def read_index(self) -> ImageIndex:
        try:
            with open(self.index_path, "rb") as f:
                raw = f.read()
        except FileNotFoundError as exc:
            raise LayoutError(f"{self.index_path} is missing") from exc
        try:
            return parse_index(raw, mt.OCI_INDEX, where=self.index_path)
        except ManifestError as exc:
            raise LayoutError(exc.message, hint=exc.hint) from exc

    @contextlib.contextmanager
    def _index_lock(self) -> Iterator[None]:
        # Serialises read-modify-write of index.json between processes. The lock is on the layout
        # directory itself, not a lock file in it: a layout is shipped as it is (oci and docker
        # tarballs, local caches), and a lock file left in it would ship too.
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write_index(self, entries: list[Descriptor], old: ImageIndex | None) -> ImageIndex:
        annotations = dict(old.annotations) if old is not None else None
        index = build_index(entries, mt.OCI_INDEX, annotations)
        atomic_write_bytes(self.index_path, index.raw)
        return index

    def add_manifest(self, desc: Descriptor, ref_name: str | None = None) -> ImageIndex:
        """Add ``desc`` to ``index.json``; with ``ref_name`` it is annotated
        ``org.opencontainers.image.ref.name`` and replaces an older entry with that name."""
        if ref_name is not None:
            desc = desc.with_annotations({ANNOTATION_REF_NAME: ref_name})
        with self._index_lock():
            old = self.read_index() if os.path.exists(self.index_path) else None
            entries = list(old.manifests) if old is not None else []
            if ref_name is not None:
                entries = [e for e in entries if e.annotations.get(ANNOTATION_REF_NAME) != ref_name]
            else:
                entries = [e for e in entries if not (e.digest == desc.digest and not e.ref_name)]
            entries.append(desc)
            return self._write_index(entries, old)

    def remove_ref(self, ref_name: str) -> bool:
        """Drop the ``index.json`` entries named ``ref_name``; True when one existed."""
        with self._index_lock():
            old = self.read_index()
            entries = [
                e for e in old.manifests if e.annotations.get(ANNOTATION_REF_NAME) != ref_name
            ]
            if len(entries) == len(old.manifests):
                return False
            self._write_index(entries, old)
            return True

    def refs(self) -> dict[str, Descriptor]:
        """ref name -> descriptor for every named entry of ``index.json``."""
        return {e.ref_name: e for e in self.read_index().manifests if e.ref_name is not None}

    def resolve(self, ref: str | None = None) -> Descriptor:
        """The ``index.json`` entry for a ref name or digest (``None``: the only entry,
        else ``latest``). ``io.containerd.image.name`` is matched before the OCI ref name,
        as BuildKit's local cache importer does."""
        entries = self.read_index().manifests
        if ref is None:
            if len(entries) == 1:
                return entries[0]
            ref = "latest"
        if ref.startswith(("sha256:", "sha512:")):
            for e in entries:
                if e.digest == ref:
                    return e
            raise LayoutError(f"{self.path}: no index.json entry with digest {ref}")
        for key in (ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME):
            for e in entries:
                if e.annotations.get(key) == ref:
                    return e
        known = sorted({e.ref_name for e in entries if e.ref_name})
        raise LayoutError(
            f"{self.path}: no image named {ref!r} in index.json",
            hint=f"known names: {', '.join(known)}" if known else "index.json has no named entries",
        )
