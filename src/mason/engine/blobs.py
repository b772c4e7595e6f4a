"""Layer blobs: where each layer's bytes are (content store, a remote repository), and
its compressed variants, so nothing is compressed twice and nothing is downloaded
before it is needed.

A layer is known by its diff ID (sha256 of the uncompressed tar). Its blobs are
recorded in the metadata as variants ``(diff_id, compression, level) -> blob``.
A blob may be only *remote*: known to exist in some repository (an imported
cache, a base image); ``ensure_local`` downloads it on first need.

eStargz and diff IDs. An eStargz blob's uncompressed stream is the layer tar *plus*
the TOC entry, so its diff ID (``containerd.io/uncompressed``, as BuildKit writes it)
differs from the tar's. mason keeps one invariant: a ``LayerRef``'s ``diff_id`` is
always the digest of the uncompressed stream of *its* blob. Converting a layer to or
from eStargz therefore returns a ``LayerRef`` with a different diff ID, and image
exporters write ``rootfs.diff_ids`` from the layers they actually ship; cache records
refer to eStargz blobs by their own diff ID, so an import gives hits whose layers
unpack to exactly that diff ID (a snapshot is checked against it). Cache *keys* do
not involve diff IDs, so they are unaffected. Facts about an eStargz blob (its diff
ID, TOC digest, uncompressed size, and the diff ID of the tar inside) are content
facts, kept in the metadata as a pseudo-variant row keyed by the blob digest.

Where blobs live. Besides the repositories a blob was pulled from (a base image's, an
imported cache's), every export that leaves a blob in a repository -- an image push, a
registry cache export -- records it (``note_stored``, a pseudo-variant row per repository,
so it outlives the build). ``mount_hints`` turns both into
``containerd.io/distribution.source.<host>`` annotations: the one place the image push and
the cache export learn which repository of the target registry to cross-repo mount from.
A recorded location is only a hint: a registry that no longer has the blob there opens an
upload session instead, and the upload happens in it.

Compression on export. ``export_variant`` is BuildKit's rule for both image outputs and
caches: a blob that came from a registry is kept in the compression it has unless
``force-compression``; layers mason made are converted (once) to the requested one.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, BinaryIO

from mason.cache.blobcheck import MAGIC_BYTES, compression_mismatch
from mason.compression.annotations import ANNOTATION_TOC_DIGEST, ANNOTATION_UNCOMPRESSED_SIZE
from mason.compression.errors import EStargzError
from mason.compression.kinds import get_compression
from mason.digest import Digest, HashingWriter, VerifyingReader
from mason.engine.state import BlobInfo, LayerRef, StateError, StateRoot
from mason.oci import mediatypes as mt
from mason.oci.descriptor import ANNOTATION_UNCOMPRESSED, DISTRIBUTION_SOURCE_PREFIX, Descriptor
from mason.oci.reference import Reference
from mason.structs import Struct, eq_without, field

if TYPE_CHECKING:
    from mason.compression.estargz import EStargzInfo, EStargzResult

__all__ = ["Blobs", "EStargzFacts", "RemoteLocation"]

#: Pseudo-compression of the metadata row that holds an eStargz blob's facts (keyed by the
#: blob digest, which is never a diff ID, so it never mixes with real variants).
_FACTS = "estargz-facts"
#: Pseudo-compression of the row that marks a blob as downloaded from a registry (keyed and
#: valued by the blob digest, so pruning the blob drops the mark).
_PULLED = "pulled"
#: Prefix of the pseudo-compression of a row saying repository ``<host>/<repo>`` holds the
#: blob (keyed and valued by the blob digest, like ``_PULLED``).
_STORED_AT = "at:"
#: Pseudo-compression of the row that says a local gzip blob is plain gzip, not eStargz
#: (keyed and valued by the blob digest): its footer is not read again by later builds.
_PLAIN_GZIP = "not-estargz"
_UNKNOWN = object()
_CHUNK = 1 << 20


class EStargzFacts(Struct, frozen=True):
    """What identifies an eStargz blob: the digest and size of its whole uncompressed stream
    (TOC included), its TOC digest, and the diff ID of the layer tar inside (None when only
    claimed by annotations of a blob not yet downloaded)."""

    diff_id: Digest
    toc_digest: Digest
    uncompressed_size: int
    tar_diff_id: Digest | None = None

    def annotations(self) -> dict[str, str]:
        """The eStargz descriptor annotations (``containerd.io/uncompressed`` is added by the caller)."""
        return {
            ANNOTATION_TOC_DIGEST: self.toc_digest,
            ANNOTATION_UNCOMPRESSED_SIZE: str(self.uncompressed_size),
        }

    @staticmethod
    def of(result: EStargzResult | EStargzInfo, tar_diff_id: Digest | None) -> EStargzFacts:
        return EStargzFacts(
            result.diff_id, result.toc_digest, result.uncompressed_size, tar_diff_id
        )

    @staticmethod
    def claimed(annotations: Mapping[str, str], diff_id: Digest | None) -> EStargzFacts | None:
        toc = annotations.get(ANNOTATION_TOC_DIGEST)
        size = annotations.get(ANNOTATION_UNCOMPRESSED_SIZE)
        if not toc or diff_id is None or size is None or not size.isdigit():
            return None
        return EStargzFacts(diff_id, Digest(toc), int(size))


class RemoteLocation(Struct, frozen=True):
    """Where a blob can be had: a repository (``ref``; tag/digest ignored, also used for
    cross-repo mounts) and/or an ``opener`` (an imported cache's lazy blob stream)."""

    ref: Reference | None
    media_type: str
    size: int
    opener: Callable[[], AbstractContextManager[BinaryIO]] | None = None
    #: The descriptor's annotations, when known: eStargz annotations let the blob be used
    #: (and re-exported) as eStargz without downloading it.
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: A layer of an image the build uses (FROM, COPY --from=IMAGE): exports keep its blob as it
    #: came. A cache's blobs are the build's own steps: they follow the export's compression.
    image: bool = False

    __eq__, __hash__ = eq_without("opener", "annotations")


def _media_type_error(blob: Digest, loc: RemoteLocation, mismatch: str) -> StateError:
    where = f" from {loc.ref.repository_ref}" if loc.ref is not None else ""
    return StateError(
        f"layer blob {blob}{where} was not used: {mismatch}",
        reference="blob-media-type-mismatch",
        hint="the image or cache that describes this blob is wrong: rebuild or re-export it",
    )


class Blobs:
    """Layer blobs of one build. ``client`` is a ``mason.registry`` client (or None offline)."""

    def __init__(self, state: StateRoot, client: Any | None = None) -> None:
        self.state = state
        self.client = client
        self._lock = threading.Lock()
        self._remote: dict[Digest, list[RemoteLocation]] = {}
        self._diff_ids: dict[Digest, Digest] = {}
        self._fetch_locks: dict[Digest, threading.Lock] = {}
        self._facts: dict[Digest, EStargzFacts | None] = {}
        self.downloaded: list[Digest] = []

    # remote knowledge -----------------------------------------------------------

    def add_remote(self, blob: Digest, diff_id: Digest | None, location: RemoteLocation) -> None:
        with self._lock:
            locs = self._remote.setdefault(blob, [])
            if location.ref is None or all(
                loc.ref is None or str(loc.ref.repository_ref) != str(location.ref.repository_ref)
                for loc in locs
            ):
                locs.append(location)
            if diff_id is not None:
                self._diff_ids[blob] = diff_id
            claimed = EStargzFacts.claimed(location.annotations, diff_id)
            if claimed is not None and blob not in self._facts:
                self._facts[blob] = claimed

    def known_diff_id(self, blob: Digest) -> Digest | None:
        """The diff ID this build already holds for ``blob`` (a base image's config, an accepted
        cache hit): a cache that claims another one for the same bytes is wrong."""
        with self._lock:
            return self._diff_ids.get(blob)

    def peek_local(self, blob: Digest, n: int) -> bytes | None:
        """The first ``n`` bytes of ``blob`` from the content store, or ``None`` if it is not there."""
        try:
            with open(self.state.store.path(blob), "rb") as f:
                return f.read(n)
        except FileNotFoundError:
            return None

    def remote_locations(self, blob: Digest) -> list[RemoteLocation]:
        with self._lock:
            return list(self._remote.get(blob, ()))

    def has_local(self, blob: Digest) -> bool:
        return self.state.store.has(blob)

    def note_stored(self, blob: Digest, ref: Reference, media_type: str, size: int) -> None:
        """Record that ``ref``'s repository now holds ``blob`` (an export pushed, mounted or found
        it there): later pushes to other repositories of that registry mount it from there.
        Unlike ``add_remote`` this does not make the blob count as pulled."""
        where = f"{_STORED_AT}{ref.registry}/{ref.repository}"
        self.state.meta.put_variant(blob, where, None, BlobInfo(blob, size, media_type))

    def _stored_at(self, blob: Digest) -> list[tuple[str, str]]:
        found = []
        for comp, _level, _info in self.state.meta.variants_of(blob):
            if comp.startswith(_STORED_AT):
                host, _, repo = comp[len(_STORED_AT) :].partition("/")
                found.append((host, repo))
        return found

    def mount_hints(self, blob: Digest) -> dict[str, str]:
        """``containerd.io/distribution.source.<host>: repo[,repo...]`` for every repository
        known to hold ``blob``: pulled from (first) or stored to by an export."""
        repos: dict[str, list[str]] = {}
        pulled = [
            (loc.ref.registry, loc.ref.repository)
            for loc in self.remote_locations(blob)
            if loc.ref is not None
        ]
        for host, repo in pulled + self._stored_at(blob):
            if repo not in repos.setdefault(host, []):
                repos[host].append(repo)
        return {DISTRIBUTION_SOURCE_PREFIX + host: ",".join(names) for host, names in repos.items()}

    # storing new layers -----------------------------------------------------------

    def store_layer(
        self,
        write_tar: Callable[[BinaryIO], Digest],
        compression: str = "gzip",
        level: int | None = None,
    ) -> LayerRef:
        """Run ``write_tar(stream)`` (it writes an uncompressed layer tar and returns its diff ID)
        through the compressor into the content store, in one pass."""
        with self.state.store.writer() as hw:
            comp = get_compression(compression).writer(hw, level)  # type: ignore[arg-type]
            diff_id = write_tar(comp)
            comp.close()
        blob = hw.digest
        media = mt.layer_media_type(compression, True)
        info = BlobInfo(blob, hw.size, media)
        self.state.meta.put_blob(info)
        self.state.meta.put_variant(diff_id, compression, level, info)
        if compression == "gzip":
            self._mark_plain_gzip(blob, hw.size)
        return LayerRef(diff_id, blob, hw.size, media)

    # eStargz facts ----------------------------------------------------------------

    def estargz_facts(self, blob: Digest | None) -> EStargzFacts | None:
        """The facts of ``blob`` if it is an eStargz blob, else None.

        Known from (in order): this process, the metadata, the annotations of a remote
        location; otherwise a local blob is checked (its footer and TOC; a blob that has one
        is then verified in full, chunk by chunk). A remote-only blob without eStargz
        annotations counts as plain gzip."""
        if blob is None:
            return None
        with self._lock:
            known = self._facts.get(blob, _UNKNOWN)
        if known is None:
            return None
        if isinstance(known, EStargzFacts) and (
            known.tar_diff_id is not None or not self.has_local(blob)
        ):
            return known
        facts: EStargzFacts | None
        row = self.state.meta.variant(blob, _FACTS, None)
        if row is not None:
            extra = json.loads(row.media_type)
            facts = EStargzFacts(row.digest, Digest(extra["toc"]), row.size, Digest(extra["tar"]))
        elif self.state.meta.variant(blob, _PLAIN_GZIP, None) is not None:
            facts = None
        elif self.has_local(blob):
            facts = self._check_local(blob)
        else:
            return None
        with self._lock:
            self._facts[blob] = facts
        return facts

    def _check_local(
        self, blob: Digest, expected: EStargzFacts | None = None
    ) -> EStargzFacts | None:
        path = self.state.store.path(blob)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if not _is_estargz(f, size):
                if expected is not None:
                    raise EStargzError(
                        f"blob {blob} should be eStargz (its descriptor has a TOC digest) "
                        "but has no valid eStargz footer and TOC",
                        reference="estargz-bad-footer",
                    )
                self._mark_plain_gzip(blob, size)
                return None
            from mason.compression.estargz import verify_estargz

            tar_hash = HashingWriter()
            info = verify_estargz(
                f,
                tar_out=tar_hash,  # type: ignore[arg-type]
                expected_toc_digest=expected.toc_digest if expected else None,
                expected_diff_id=expected.diff_id if expected else None,
                expected_uncompressed_size=expected.uncompressed_size if expected else None,
            )
        facts = EStargzFacts.of(info, tar_hash.digest)
        self._remember(blob, facts)
        return facts

    def _mark_plain_gzip(self, blob: Digest, size: int) -> None:
        self.state.meta.put_variant(blob, _PLAIN_GZIP, None, BlobInfo(blob, size, ""))

    def _remember(self, blob: Digest, facts: EStargzFacts) -> None:
        extra = json.dumps({"toc": facts.toc_digest, "tar": facts.tar_diff_id}, sort_keys=True)
        self.state.meta.put_variant(
            blob, _FACTS, None, BlobInfo(facts.diff_id, facts.uncompressed_size, extra)
        )
        with self._lock:
            self._facts[blob] = facts

    def compression_of(self, lr: LayerRef) -> str | None:
        """``estargz`` for a known eStargz blob, else the media type's compression (None if unknown)."""
        if not lr.media_type:
            return None
        comp = mt.compression_of(lr.media_type)
        if comp == "gzip" and self.estargz_facts(lr.blob) is not None:
            return "estargz"
        return comp

    # getting bytes --------------------------------------------------------------

    def _usable(self, diff_id: Digest, comp: str, info: BlobInfo) -> bool:
        """A variant row of ``diff_id`` whose blob really unpacks to ``diff_id`` (an eStargz
        variant of a tar has the diff ID of its own stream) and is in the content store."""
        if (
            comp in (_FACTS, _PULLED, _PLAIN_GZIP)
            or comp.startswith(_STORED_AT)
            or not self.has_local(info.digest)
        ):
            return False
        if get_compression(comp).indexed:
            facts = self.estargz_facts(info.digest)
            return facts is not None and facts.diff_id == diff_id
        return True

    def ensure_local(self, lr: LayerRef) -> LayerRef:
        """Make sure some blob of this layer is in the content store (download if only remote)."""
        if lr.blob is not None and self.has_local(lr.blob):
            return lr
        for comp, _level, info in self.state.meta.variants_of(lr.diff_id):
            if self._usable(lr.diff_id, comp, info):
                return LayerRef(lr.diff_id, info.digest, info.size, info.media_type)
        if lr.blob is None:
            raise StateError(f"layer {lr.diff_id} has no blob to fetch", reference="blob-missing")
        self._download(lr.blob, lr.diff_id)
        return lr

    def _download(self, blob: Digest, diff_id: Digest) -> None:
        with self._lock:
            lock = self._fetch_locks.setdefault(blob, threading.Lock())
        with lock:
            if self.has_local(blob):
                return
            locs = self.remote_locations(blob)
            if not locs:
                raise StateError(
                    f"blob {blob} is neither in the content store nor in a known repository",
                    reference="blob-missing",
                )
            last: Exception | None = None
            for loc in locs:
                try:
                    cm = self._open_location(blob, loc)
                    if cm is None:
                        continue
                    with cm as stream:
                        # a registry serves it again, and every read of the store checks it
                        # (a torn copy is deleted, the next build fetches it): no fsyncs on
                        # the way to the first step that unpacks it (start-up, issue 14)
                        self.state.store.put_stream(stream, expected=blob, durable=False)
                except EStargzError:
                    raise  # the bytes are wrong, not the location: every location serves these bytes
                except Exception as exc:  # try the next location
                    last = exc
                    continue
                self._check_media_type(blob, loc)
                comp = mt.compression_of(loc.media_type)
                if comp == "gzip":
                    comp = self._verify_download(blob, diff_id, comp)
                info = BlobInfo(blob, loc.size, loc.media_type)
                self.state.meta.put_blob(info)
                self.state.meta.put_variant(diff_id, comp, None, info)
                self.state.meta.put_variant(blob, _PULLED, None, info)
                with self._lock:
                    self.downloaded.append(blob)
                return
            if last is None:
                raise StateError(f"blob {blob}: no way to fetch it", reference="blob-missing")
            raise last

    def _open_location(
        self, blob: Digest, loc: RemoteLocation
    ) -> AbstractContextManager[BinaryIO] | None:
        """The blob's bytes at ``loc`` (None: no way to fetch them from there)."""
        if loc.opener is not None:
            return loc.opener()
        if loc.ref is not None and self.client is not None:
            # the client's stream verifies digest and size as it is read to the end
            stream: AbstractContextManager[BinaryIO] = self.client.open_blob(
                loc.ref, Descriptor(loc.media_type, blob, loc.size)
            )
            return stream
        return None

    def spool(self, lr: LayerRef) -> BinaryIO | None:
        """A remote-only blob in an anonymous temp file (at offset 0), verified as it streams
        (digest, size, the media type's magic bytes) and never stored: an output that only
        passes the bytes on (an OCI or docker tarball) needs no durable copy, and the store's
        fsyncs and second hash are the price of one. ``None``: read it from the content store
        (it is there, or now is: a blob that claims to be eStargz is downloaded through
        ``ensure_local``, which verifies its TOC)."""
        assert lr.blob is not None
        with self._lock:
            claimed = self._facts.get(lr.blob) is not None
        if self.has_local(lr.blob) or claimed or not self.remote_locations(lr.blob):
            self.ensure_local(lr)
            return None
        last: Exception | None = None
        for loc in self.remote_locations(lr.blob):
            try:
                spooled = self._spool_from(lr.blob, loc)
            except EStargzError:
                raise
            except Exception as exc:  # try the next location, as _download does
                last = exc
                continue
            if spooled is not None:
                return spooled
        raise last or StateError(f"blob {lr.blob}: no way to fetch it", reference="blob-missing")

    def _spool_from(self, blob: Digest, loc: RemoteLocation) -> BinaryIO | None:
        import shutil
        import tempfile

        cm = self._open_location(blob, loc)
        if cm is None:
            return None
        out = tempfile.TemporaryFile(dir=self.state.tmp)  # noqa: SIM115 - handed to the caller
        try:
            with cm as stream:
                src = stream if loc.opener is None else VerifyingReader(stream, blob, loc.size)
                shutil.copyfileobj(src, out, _CHUNK)
            out.seek(0)
            mismatch = compression_mismatch(loc.media_type, out.read(MAGIC_BYTES))
            if mismatch is not None:
                raise _media_type_error(blob, loc, mismatch)
            out.seek(0)
            return out
        except BaseException:
            out.close()
            raise

    def _check_media_type(self, blob: Digest, loc: RemoteLocation) -> None:
        """A downloaded blob must start the way its media type says (gzip, zstd, tar magic):
        the digest proves the bytes are the ones the descriptor named, not that the descriptor's
        media type is true. A wrong one is removed again before anything uses it."""
        mismatch = compression_mismatch(loc.media_type, self.peek_local(blob, MAGIC_BYTES) or b"")
        if mismatch is None:
            return
        self.state.store.delete(blob)
        raise _media_type_error(blob, loc, mismatch)

    def _verify_download(self, blob: Digest, diff_id: Digest, comp: str) -> str:
        """A downloaded gzip blob that is (or claims to be) eStargz is verified chunk by chunk
        against its claims before anything uses it; a corrupt one is removed again."""
        with self._lock:
            claimed = self._facts.get(blob)
        try:
            facts = self._check_local(blob, claimed)
            if facts is not None and facts.diff_id != diff_id:
                raise EStargzError(
                    f"eStargz blob {blob} decompresses to {facts.diff_id}, its descriptor "
                    f"says {diff_id}",
                    reference="estargz-diff-id-mismatch",
                )
        except EStargzError as exc:
            self.state.store.delete(blob)
            with self._lock:
                self._facts.pop(blob, None)
            raise EStargzError(
                f"eStargz blob {blob} is corrupt and was not used: {exc.message}",
                reference=exc.reference,
                hint="re-export the cache (or delete it)",
            ) from exc
        return "estargz" if facts is not None else comp

    def open_uncompressed(self, lr: LayerRef) -> BinaryIO:
        """The layer's tar stream (verified blob, decompressed). Caller closes.

        The blob is read, checked and decompressed in a thread, ahead of the caller, who
        unpacks or indexes the tar meanwhile (issue 14: a 1 MB base layer's gunzip and
        digest were ~5 ms of its unpack, on a CPU the unpack left idle)."""
        lr = self.ensure_local(lr)
        assert lr.blob is not None
        reader = self.state.store.open(lr.blob)
        comp = get_compression(mt.compression_of(lr.media_type) if lr.media_type else "gzip")
        if comp.wire == "uncompressed":  # the store's verifying reader itself, closed by the caller
            return reader
        return comp.reader(reader, ahead=True)

    # variants for export ---------------------------------------------------------

    def export_variant(
        self,
        lr: LayerRef,
        compression: str,
        level: int | None,
        force: bool,
        *,
        for_image: bool = False,
    ) -> LayerRef:
        """The blob an export ships for this layer -- BuildKit's rule: ``compression`` is the
        compression of the layers the build makes, and ``force`` ("force-compression")
        re-compresses every layer whose compression differs. Without it:

        - a cache export keeps a layer pulled from a registry (a base image's, an imported
          cache's; downloaded since or not) as it came;
        - an image output keeps only a base image's layers: the build's own layers, run or
          taken from a cache, get the output's compression exactly (an eStargz or zstd cache
          never changes the image).

        mason stores the layers it makes as gzip; other compressions are converted once (kept)."""
        if (
            not force
            and lr.blob is not None
            and (self.from_image(lr.blob) if for_image else self.pulled(lr.blob))
        ):
            return lr
        return self.variant(lr, compression, level, force, exact=for_image)

    def pulled(self, blob: Digest) -> bool:
        """Whether the blob came from a registry (a base image's or an imported cache's layer,
        downloaded or not) rather than being made by this builder."""
        return (
            bool(self.remote_locations(blob))
            or self.state.meta.variant(blob, _PULLED, None) is not None
        )

    def from_image(self, blob: Digest) -> bool:
        """Whether ``blob`` is a layer of an image this build uses (not only of a cache)."""
        with self._lock:
            return any(loc.image for loc in self._remote.get(blob, ()))

    def variant(
        self, lr: LayerRef, compression: str, level: int | None, force: bool, *, exact: bool = False
    ) -> LayerRef:
        """A blob of this layer in ``compression``: an existing one (local or remote) unless ``force``
        asks for exactly that level, else compressed now (once) and recorded.

        Without ``force`` or ``exact`` an eStargz blob serves as gzip (it is one). The result's
        ``diff_id`` is that of the returned blob's own stream: converting to or from eStargz
        changes it."""
        current = None if (name := self.compression_of(lr)) is None else get_compression(name)
        same = current is not None and (
            compression == current.name if exact else compression in (current.name, current.wire)
        )
        if not force and lr.blob is not None and same:
            return lr
        facts = self.estargz_facts(lr.blob) if current is not None and current.indexed else None
        keys = [lr.diff_id] + (
            [facts.tar_diff_id] if facts is not None and facts.tar_diff_id else []
        )
        for key in keys:
            for comp, lvl, info in self.state.meta.variants_of(key):
                if comp == compression and (not force or level is None or lvl == level):
                    if get_compression(comp).indexed:
                        found = (
                            self.estargz_facts(info.digest) if self.has_local(info.digest) else None
                        )
                        if found is not None:
                            return LayerRef(found.diff_id, info.digest, info.size, info.media_type)
                    elif self._usable(key, comp, info):
                        return LayerRef(key, info.digest, info.size, info.media_type)
        if not force and lr.blob is not None and not lr.media_type:
            return lr
        return self._convert(lr, compression, level)

    def _convert(self, lr: LayerRef, compression: str, level: int | None) -> LayerRef:
        """Recompress: needs the bytes. An eStargz source is turned back into its layer tar
        first (``estargz_to_tar`` verifies it), so no TOC ever ends up inside another layer."""
        import tempfile

        src_lr = self.ensure_local(lr)
        assert src_lr.blob is not None
        store = self.state.store
        src_facts = (
            self.estargz_facts(src_lr.blob)
            if src_lr.media_type and mt.compression_of(src_lr.media_type) == "gzip"
            else None
        )
        with contextlib.ExitStack() as stack:
            if src_facts is not None:
                from mason.compression.estargz import estargz_to_tar

                tar_file = stack.enter_context(tempfile.TemporaryFile(dir=store.tmp))
                with open(store.path(src_lr.blob), "rb") as blob_file:
                    tar_hash = HashingWriter(tar_file)
                    estargz_to_tar(blob_file, tar_hash)  # type: ignore[arg-type]
                tar_diff = tar_hash.digest
                tar_file.seek(0)
                src: BinaryIO = tar_file
            else:
                tar_diff = src_lr.diff_id
                # the layer is decompressed here anyway: check the diff ID it claims (a lazily
                # imported cache hit's comes from the cache's metadata), so a wrong one fails
                # the export instead of going into an image's rootfs.diff_ids
                src = VerifyingReader(
                    stack.enter_context(self.open_uncompressed(src_lr)),
                    tar_diff,
                    what=f"layer {src_lr.blob} (uncompressed; its diff ID)",
                )  # type: ignore[assignment]
            with store.writer() as hw:
                result = get_compression(compression).compress(src, hw, level)  # type: ignore[arg-type]
        blob = hw.digest
        info = BlobInfo(blob, hw.size, mt.layer_media_type(compression, True))
        self.state.meta.put_blob(info)
        self.state.meta.put_variant(tar_diff, compression, level, info)
        if result is None:
            return LayerRef(tar_diff, blob, hw.size, info.media_type)
        facts = EStargzFacts.of(result, tar_diff)
        self._remember(blob, facts)
        self.state.meta.put_variant(facts.diff_id, compression, level, info)
        return LayerRef(facts.diff_id, blob, hw.size, info.media_type)

    def descriptor(
        self, lr: LayerRef, *, oci: bool, annotate: bool = False, estargz: bool | None = None
    ) -> Descriptor:
        """The layer's descriptor. ``annotate`` adds ``containerd.io/uncompressed`` (cache manifests);
        eStargz annotations are added when ``estargz`` is True, or (``None``) with ``annotate``
        whenever the blob is known to be eStargz."""
        assert lr.blob is not None
        comp = mt.compression_of(lr.media_type) if lr.media_type else "gzip"
        annotations: dict[str, str] = {ANNOTATION_UNCOMPRESSED: lr.diff_id} if annotate else {}
        if (estargz or (estargz is None and annotate)) and comp == "gzip":
            facts = self.estargz_facts(lr.blob)
            if facts is not None:
                annotations.update(facts.annotations())
        return Descriptor(
            mt.layer_media_type(comp, oci), lr.blob, lr.blob_size, annotations=annotations
        )

    def opener(self, lr: LayerRef) -> Callable[[], BinaryIO]:
        def _open() -> BinaryIO:
            local = self.ensure_local(lr)
            assert local.blob is not None
            return self.state.store.open(local.blob, local.blob_size or None)

        return _open


def _is_estargz(f: BinaryIO, size: int) -> bool:
    """Whether the blob open as ``f`` (of ``size`` bytes) has a valid eStargz footer and TOC.
    The footer is read first, alone: the eStargz reader loads only for a blob that has one."""
    from mason.compression.footer import FOOTER_SIZE, parse_footer

    f.seek(max(0, size - FOOTER_SIZE))
    try:
        parse_footer(f.read(FOOTER_SIZE))
    except EStargzError:
        return False
    finally:
        f.seek(0)
    from mason.compression.estargz import is_estargz

    return is_estargz(f)
