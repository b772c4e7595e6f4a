"""Image outputs: push to a registry, OCI layout (dir or tar), docker-load tar,
the filesystem (local dir or tar).

An ``ImageResult`` is what the build produced: the final stage's layers (as
``LayerRef``s, possibly only remote so far) and its config document. Exporters
ask ``Blobs.export_variant`` for each layer (layers of the images the build uses keep
their compression unless ``force-compression``; the build's own layers, run or taken
from a cache, get the output's); a push to a registry that already holds a layer (in any
repository mason knows of: pulled from, or stored to by an earlier export) mounts it
instead of moving bytes, and records where it put each layer for the exports after it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from mason.compression.kinds import get_compression
from mason.digest import Digest, sha256_bytes
from mason.engine.annotations import ResolvedAnnotations, resolve_annotations
from mason.engine.blobs import Blobs
from mason.engine.options import OutputSpec
from mason.engine.state import LayerRef
from mason.errors import BuildError, UsageError
from mason.futures import ThreadPoolExecutor
from mason.oci import mediatypes as mt
from mason.oci.atomic import output_file
from mason.oci.descriptor import Descriptor
from mason.oci.manifest import ImageIndex, ImageManifest, build_index, build_manifest
from mason.oci.platform import Platform
from mason.oci.reference import Reference
from mason.structs import Struct, eq_without, replace

if TYPE_CHECKING:
    from mason.engine.imagetar import ImageFiles

__all__ = [
    "ExportedImage",
    "ExportedIndex",
    "ImageResult",
    "assemble_index",
    "assemble_manifest",
    "export_outputs",
    "push_image",
]

_CHUNK = 1 << 20


class ImageResult(Struct, frozen=True):
    layers: tuple[LayerRef, ...]
    config: dict[str, Any]
    platform: Platform
    apply_layers: Callable[[Path], None] | None = None
    #: SOURCE_DATE_EPOCH of the build: what ``rewrite-timestamp=true`` clamps layer times to
    source_date_epoch: int | None = None
    #: merged into the config (the inline cache of this platform's image)
    config_extra: dict[str, Any] | None = None

    __eq__, __hash__ = eq_without("apply_layers", "config_extra")


class ExportedImage(Struct, frozen=True):
    """One assembled image: its manifest and config (raw bytes) and layer descriptors."""

    manifest: ImageManifest
    config_raw: bytes
    layers: tuple[LayerRef, ...]
    oci: bool

    @property
    def digest(self) -> Digest:
        return self.manifest.digest

    def descriptor(self) -> Descriptor:
        return Descriptor(self.manifest.media_type, self.manifest.digest, self.manifest.size)


class ExportedIndex(Struct, frozen=True):
    """A multi-platform image: its index (a Docker manifest list with Docker media types) and
    each platform's image, in the index's order."""

    index: ImageIndex
    images: tuple[ExportedImage, ...]

    @property
    def digest(self) -> Digest:
        return self.index.digest

    @property
    def oci(self) -> bool:
        return not self.index.is_docker

    def descriptor(self) -> Descriptor:
        return Descriptor(self.index.media_type, self.index.digest, len(self.index.raw))


def _config_bytes(doc: dict[str, Any]) -> bytes:
    from mason.engine.imageconfig import serialise_config

    return serialise_config(doc)


def assemble_manifest(
    blobs: Blobs,
    image: ImageResult,
    *,
    compression: str = "gzip",
    level: int | None = None,
    force: bool = False,
    oci: bool = True,
    config_extra: dict[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> ExportedImage:
    """Pick (or make) a blob per layer (``Blobs.export_variant``: mason's layers in
    ``compression``, a base image's as they are unless ``force``) and build manifest + config.

    ``rootfs.diff_ids`` are rewritten from the layers actually shipped: an eStargz blob's
    uncompressed stream includes its TOC, so its diff ID is not the layer tar's (and a layer
    reused from an eStargz cache has the eStargz diff ID even in a gzip image)."""
    layers = tuple(
        blobs.export_variant(lr, compression, level, force, for_image=True) for lr in image.layers
    )
    doc = dict(image.config)
    rootfs = doc.get("rootfs")
    if isinstance(rootfs, dict):
        doc["rootfs"] = {**rootfs, "diff_ids": [lr.diff_id for lr in layers]}
    if config_extra:
        doc.update(config_extra)
    raw = _config_bytes(doc)
    cfg_desc = Descriptor(mt.OCI_CONFIG if oci else mt.DOCKER_CONFIG, sha256_bytes(raw), len(raw))
    indexed = get_compression(
        compression
    ).indexed  # eStargz: its TOC annotations go into the manifest
    descs = [blobs.descriptor(lr, oci=oci, estargz=indexed) for lr in layers]
    manifest = build_manifest(
        cfg_desc,
        descs,
        media_type=mt.OCI_MANIFEST if oci else mt.DOCKER_MANIFEST,
        annotations=annotations or None,
    )
    return ExportedImage(manifest, raw, layers, oci)


def rewrite_timestamps(
    blobs: Blobs,
    image: ImageResult,
    log: Callable[[str], None],
    memo: dict[tuple[Digest, int], LayerRef],
) -> ImageResult:
    """``rewrite-timestamp=true``, as BuildKit v0.32.2's image exporter: the layers this build
    made get every file time after SOURCE_DATE_EPOCH clamped to it (new blobs, new diff IDs);
    the base image's leading layers stay as they are; without an epoch nothing changes but a
    warning. ``memo`` keeps each rewritten layer for the build's other outputs."""
    from mason.layer.diff import clamp_tar_times

    epoch = image.source_date_epoch
    if epoch is None:
        log("WARNING: rewrite-timestamp is specified, but no source-date-epoch was found")
        return image
    layers = list(image.layers)
    from_base = True
    for i, lr in enumerate(layers):
        from_base = from_base and lr.blob is not None and blobs.from_image(lr.blob)
        if from_base:
            continue
        if (lr.diff_id, epoch) not in memo:

            def write(out: BinaryIO, lr: LayerRef = lr) -> Digest:
                with blobs.open_uncompressed(lr) as src:
                    return clamp_tar_times(src, out, epoch).diff_id

            memo[lr.diff_id, epoch] = blobs.store_layer(write, "gzip")
        layers[i] = memo[lr.diff_id, epoch]
    log(f"rewriting layers with source-date-epoch {epoch} done")
    return replace(image, layers=tuple(layers))


def push_image(
    blobs: Blobs,
    client: Any,
    exported: ExportedImage | ExportedIndex,
    refs: Sequence[Reference],
    log: Callable[[str], None],
    max_workers: int = 4,
) -> None:
    """Push layers (``mason.registry.push.push_blob``: HEAD, else mount from a repository of
    the same registry known to hold it, else upload) and the config side by side, then the
    manifest under each ref. Layers already known remote on the same registry are never downloaded; every
    layer pushed is recorded (``Blobs.note_stored``) so later pushes and cache exports mount it.
    An index: every platform's image is pushed by digest first, the index under each ref last,
    so a tag never names an index whose images are missing."""
    by_repo: dict[str, list[Reference]] = {}
    for r in refs:
        by_repo.setdefault(f"{r.registry}/{r.repository}", []).append(r)
    images = exported.images if isinstance(exported, ExportedIndex) else (exported,)
    what = "manifest list" if isinstance(exported, ExportedIndex) else "manifest"
    if _maybe_pushed(blobs, images) and _already_pushed(client, exported.digest, refs):
        # every name already holds this image (a rebuild from a cache): as containerd's
        # pusher, nothing is sent; a registry holds every blob of a manifest it holds
        log("pushing layers 0.0s done")
        for r in refs:
            log(f"pushing {what} for {r.repository_ref}:{r.tag or 'latest'}@{exported.digest} done")
        return
    for targets in by_repo.values():
        for image in images:
            _push_one(blobs, client, image, targets[0], log, max_workers)
            if isinstance(exported, ExportedIndex):
                client.put_manifest(
                    targets[0].with_digest(image.digest),
                    image.manifest.raw,
                    image.manifest.media_type,
                )
        if isinstance(exported, ExportedIndex):
            raw, media_type = exported.index.raw, exported.index.media_type
        else:
            raw, media_type = exported.manifest.raw, exported.manifest.media_type
        for r in targets:
            client.put_manifest(r, raw, media_type)
            log(f"pushing {what} for {r.repository_ref}:{r.tag or 'latest'}@{exported.digest} done")


def open_pushes_ahead(
    blobs: Blobs, client: Any, images: Sequence[ImageResult], outputs: Sequence[OutputSpec]
) -> None:
    """An upload session opened now in each repository an image with a layer no registry
    holds is pushed to (``RegistryClient.open_upload_ahead``): such an image is a new one,
    whose config the push uploads, and a push beside a registry cache export starts only
    once the cache's manifest is put (``engine.builder._export``); its config then waits for
    no POST. An image that may be there already (a rebuild from a cache) opens none."""
    if client is None or _maybe_pushed(blobs, images):
        return
    for out in outputs:
        if out.type == "image" and out.push:
            for name in out.names:
                client.open_upload_ahead(Reference.parse(name))


def _maybe_pushed(blobs: Blobs, images: Sequence[ExportedImage] | Sequence[ImageResult]) -> bool:
    """Whether every layer is known to be in some registry (pulled, or stored by an export):
    only then can the image already be where it goes (a new layer means a new manifest)."""
    return all(
        lr.blob is not None and blobs.mount_hints(lr.blob) for i in images for lr in i.layers
    )


def _already_pushed(client: Any, digest: Digest, refs: Sequence[Reference]) -> bool:
    """Whether every ref already names ``digest`` (HEADs in parallel; an error is a no)."""
    from mason.registry.errors import RegistryError

    def names_it(ref: Reference) -> bool:
        try:
            return bool(client.names(ref, digest))
        except RegistryError:
            return False

    return all(client.map_bounded(names_it, list(refs)))


def _push_one(
    blobs: Blobs,
    client: Any,
    exported: ExportedImage,
    target: Reference,
    log: Callable[[str], None],
    max_workers: int,
) -> None:
    """One image's layers and config (its manifest is put by the caller)."""
    from mason.oci.descriptor import DISTRIBUTION_SOURCE_PREFIX
    from mason.registry.push import push_blob

    def push_layer(lr: LayerRef) -> None:
        assert lr.blob is not None
        desc = blobs.descriptor(lr, oci=exported.oci)
        hints = blobs.mount_hints(lr.blob)
        outcome = push_blob(
            client, target, desc.with_annotations(hints) if hints else desc, blobs.opener(lr)
        )
        if outcome == "mounted":
            # pulled from there, or put there by this build (an early cache upload)
            known = hints.get(DISTRIBUTION_SOURCE_PREFIX + target.registry) or ", ".join(
                r
                for r in client.put_repositories(target.registry, lr.blob)
                if r != target.repository
            )
            log(f"mounted {lr.blob}" + (f" (known in {known})" if known else ""))
        blobs.note_stored(lr.blob, target, desc.media_type, desc.size)

    t0 = time.monotonic()
    cfg, raw = exported.manifest.config, exported.config_raw
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        # the config goes up beside the layers (one round trip less): the manifest, put by
        # the caller, comes after both
        put_config = functools.partial(push_blob, made_here=True)
        config = pool.submit(put_config, client, target, cfg, functools.partial(io.BytesIO, raw))
        list(pool.map(push_layer, exported.layers))
        config.result()
    log(f"pushing layers {time.monotonic() - t0:.1f}s done")


# -- files -----------------------------------------------------------------------


def _write_layout(
    blobs: Blobs,
    exported: ExportedImage | ExportedIndex,
    layout_dir: Path,
    names: Sequence[str],
    desc_annotations: Mapping[str, str],
) -> None:
    from mason.oci.layout import OCILayout

    layout = OCILayout.create(str(layout_dir))
    images = exported.images if isinstance(exported, ExportedIndex) else (exported,)
    for image in images:
        for lr in image.layers:
            assert lr.blob is not None
            if not layout.has_blob(lr.blob):
                with blobs.opener(lr)() as src:
                    layout.put_blob_stream(
                        src, lr.media_type or mt.OCI_LAYER_GZIP, lr.blob, lr.blob_size
                    )
        layout.put_blob_bytes(image.config_raw, image.manifest.config.media_type)
        layout.put_blob_bytes(image.manifest.raw, image.manifest.media_type)
    if isinstance(exported, ExportedIndex):
        layout.put_blob_bytes(exported.index.raw, exported.index.media_type)
    desc = exported.descriptor()
    if desc_annotations:  # (index-|manifest-)descriptor annotations: the index.json entry
        desc = desc.with_annotations(dict(desc_annotations))
    if names:
        for n in names:
            layout.add_manifest(
                desc.with_annotations({"io.containerd.image.name": n}), ref_name=_ref_name(n)
            )
    else:
        layout.add_manifest(desc, ref_name="latest")


def _image_files(
    exported: ExportedImage | ExportedIndex, out: OutputSpec, desc_annotations: Mapping[str, str]
) -> ImageFiles:
    """An oci or docker tarball's contents: the same layout ``_write_layout`` makes (an index:
    every platform's layers, configs and manifests, then the index)."""
    from mason.engine.imagetar import ImageFiles, index_json

    desc = exported.descriptor()
    if desc_annotations:
        desc = desc.with_annotations(dict(desc_annotations))
    images = exported.images if isinstance(exported, ExportedIndex) else (exported,)
    layers = {lr.blob: lr for image in images for lr in image.layers}
    small = {sha256_bytes(b): b for i in images for b in (i.config_raw, i.manifest.raw)}
    if isinstance(exported, ExportedIndex):
        small[exported.digest] = exported.index.raw
    docker = None
    if out.type == "docker" and isinstance(exported, ExportedImage):
        docker = _docker_manifest_json(exported, out.names)
    return ImageFiles(
        tuple(layers.values()),
        tuple(small.values()),
        index_json(desc, out.names, {n: _ref_name(n) for n in out.names}),
        docker,
    )


def _ref_name(name: str) -> str:
    try:
        ref = Reference.parse(name)
        return ref.tag or "latest"
    except Exception:
        return name


def _tar_directory(src: Path, out: IO[bytes]) -> None:
    """A tar of a directory (sorted names, no user/group names; times kept)."""
    import tarfile  # only a tar output needs it (start-up, issue 14)

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, src)
            for name in sorted(dirnames + filenames):
                full = os.path.join(dirpath, name)
                arc = os.path.normpath(os.path.join(rel_dir, name))
                ti = tf.gettarinfo(full, arcname=arc)
                ti.uname = ti.gname = ""
                if ti.isfile():
                    with open(full, "rb") as f:
                        tf.addfile(ti, f)
                else:
                    tf.addfile(ti)


def _output_error(kind: str, dest: str, exc: OSError) -> BuildError:
    reason = (
        "exists and is not a directory"
        if exc.errno in (errno.EEXIST, errno.ENOTDIR)
        else exc.strerror
    )
    # name the failing path when it is not dest itself or our temp file beside it
    named = str(exc.filename or "")
    context = [f"file: {named}"] if named and named != dest and ".mason-" not in named else []
    return BuildError(
        f"cannot write the {kind} output to {dest}: {reason or exc}",
        reference="output-failed",
        context=context,
        hint="give a writable path in dest=",
    )


@contextlib.contextmanager
def _dest_file(dest: str, kind: str, stdout: BinaryIO | None) -> Iterator[IO[bytes]]:
    """Write ``dest`` all or nothing (``mason.oci.atomic.output_file``): a regular file is
    replaced by a temp file renamed into place; a FIFO or character device is written to,
    never replaced; a directory, socket or block device is refused."""
    if dest == "-":
        if stdout is None:
            raise BuildError("dest=- needs a stdout stream", reference="invalid-output")
        yield stdout
        return
    try:
        os.makedirs(os.path.dirname(os.path.abspath(dest)) or ".", exist_ok=True)
        with output_file(dest, 0o644, prefix=".mason-") as f:  # an image tar holds no secrets
            yield f
    except OSError as exc:
        raise _output_error(kind, dest, exc) from exc


def _docker_manifest_json(exported: ExportedImage, names: Sequence[str]) -> bytes:
    tags = []
    for n in names:
        try:
            r = Reference.parse(n)
            tags.append(r.familiar)
        except Exception:
            tags.append(n)
    entry = {
        "Config": "blobs/sha256/" + exported.manifest.config.digest.split(":", 1)[1],
        "RepoTags": tags,
        "Layers": ["blobs/sha256/" + lr.blob.split(":", 1)[1] for lr in exported.layers if lr.blob],
    }
    return json.dumps([entry], separators=(",", ":")).encode()


def _apply_dated(image: ImageResult, dest: Path) -> None:
    """The image's files into ``dest`` (type=local, type=tar); with SOURCE_DATE_EPOCH every
    entry this export wrote is dated the epoch, as BuildKit's local and tar exporters do
    (access and modification time). What was in ``dest`` before and is not the image's keeps
    its times: an entry counts as written when its inode changed (ctime) during the apply."""
    assert image.apply_layers is not None
    epoch = image.source_date_epoch
    started = time.time_ns() - 50_000_000  # the file system's clock is coarser than ours
    image.apply_layers(dest)
    if epoch is None:
        return
    when = (epoch * 1_000_000_000, epoch * 1_000_000_000)
    for dirpath, dirnames, filenames in os.walk(dest):  # symlinked dirs are not entered
        for name in [*filenames, *dirnames]:
            path = os.path.join(dirpath, name)
            if os.lstat(path).st_ctime_ns >= started:
                os.utime(path, ns=when, follow_symlinks=False)
    if os.lstat(dest).st_ctime_ns >= started:
        os.utime(dest, ns=when)


def output_annotations(
    out: OutputSpec, platform: Platform, built: Sequence[Platform] = ()
) -> ResolvedAnnotations:
    """An image-like output's annotations for ``platform`` of the ``built`` ones (usage errors
    name the output); several platforms and a ``docker`` output are refused, as BuildKit."""
    where = f"--output type={out.type}" + (f",dest={out.dest}" if out.dest else "")
    if out.type == "docker" and len(built) > 1:
        raise UsageError(
            f"{where}: docker exporter does not currently support exporting manifest lists",
            reference="invalid-output",
            hint="a multi-platform build writes an OCI layout (type=oci) or pushes (--push)",
        )
    return resolve_annotations(
        out.annotations, platform, oci=out.oci_mediatypes, where=where, built=built
    )


def assemble_index(
    blobs: Blobs, images: Sequence[ImageResult], out: OutputSpec
) -> ExportedImage | ExportedIndex:
    """One image (one platform), or every platform's image and their index, for ``out``."""
    built = [image.platform for image in images]
    exported: list[ExportedImage] = []
    entries: list[Descriptor] = []
    for image in images:
        notes = output_annotations(out, image.platform, built)
        one = assemble_manifest(
            blobs,
            image,
            compression=out.compression,
            level=out.compression_level,
            force=out.force_compression,
            oci=out.oci_mediatypes,
            config_extra=image.config_extra,
            annotations=notes.manifest,
        )
        if len(images) == 1:
            return one
        exported.append(one)
        entries.append(
            one.manifest.descriptor(platform=image.platform, annotations=notes.descriptor)
        )
    notes = output_annotations(out, images[0].platform, built)
    index = build_index(
        entries,
        mt.OCI_INDEX if out.oci_mediatypes else mt.DOCKER_MANIFEST_LIST,
        notes.index or None,
    )
    return ExportedIndex(index, tuple(exported))


def _descriptor_notes(
    out: OutputSpec, exported: ExportedImage | ExportedIndex, images: Sequence[ImageResult]
) -> dict[str, str]:
    """The annotations of the exported document's own descriptor (an OCI layout's entry)."""
    built = [image.platform for image in images]
    notes = output_annotations(out, images[0].platform, built)
    return notes.index_descriptor if isinstance(exported, ExportedIndex) else notes.descriptor


def export_outputs(
    blobs: Blobs,
    client: Any,
    images: Sequence[ImageResult],
    outputs: Sequence[OutputSpec],
    tmp_dir: Path,
    log: Callable[[str], None],
    *,
    stdout: BinaryIO | None = None,
) -> ExportedImage | ExportedIndex | None:
    """Write every output; returns the image (or index) of the first image-like output. Several
    platforms make an index; a local or tar output then has one folder per platform."""
    first: ExportedImage | ExportedIndex | None = None
    rewritten: dict[tuple[Digest, int], LayerRef] = {}
    for out in outputs:
        if out.type in ("image", "oci", "docker"):
            t0 = time.monotonic()
            shipped = images
            if out.rewrite_timestamp:
                shipped = [rewrite_timestamps(blobs, i, log, rewritten) for i in images]
            exported = assemble_index(blobs, shipped, out)
            first = first or exported
            log(
                f"exporting layers {time.monotonic() - t0:.1f}s done"
            )  # BuildKit's first export line
            for one in exported.images if isinstance(exported, ExportedIndex) else (exported,):
                log(f"exporting manifest {one.digest} done")
                log(f"exporting config {one.manifest.config.digest} done")
            if isinstance(exported, ExportedIndex):
                log(f"exporting manifest list {exported.digest} done")
            _image_output(blobs, client, exported, out, images, log, stdout)
        else:
            _files_output(images, out, tmp_dir, stdout)
            log(f"copying files to {out.dest} done")
    return first


def _image_output(
    blobs: Blobs,
    client: Any,
    exported: ExportedImage | ExportedIndex,
    out: OutputSpec,
    images: Sequence[ImageResult],
    log: Callable[[str], None],
    stdout: BinaryIO | None,
) -> None:
    """Push the image, or write it as an OCI layout (a directory or a tar) or docker tar."""
    if out.type == "image":
        if out.push:
            push_image(blobs, client, exported, [Reference.parse(n) for n in out.names], log)
        else:
            log("image not pushed (push=false); use --push or --output type=oci/docker to keep it")
        return
    assert out.dest is not None
    notes = _descriptor_notes(out, exported, images)
    if out.layout_dir:
        _write_layout(blobs, exported, Path(out.dest), out.names, notes)
    else:
        from mason.engine.imagetar import write_image_tar

        files = _image_files(exported, out, notes)
        with _dest_file(out.dest, out.type, stdout) as f:
            write_image_tar(blobs, files, f)
    log(f"writing {out.type} output to {out.dest} done")


def _files_output(
    images: Sequence[ImageResult], out: OutputSpec, tmp_dir: Path, stdout: BinaryIO | None
) -> None:
    """A local directory or a tar of the filesystem; one folder per platform when several
    (buildx's ``linux_arm64``)."""
    import shutil
    import tempfile

    assert out.dest is not None

    def fill(root: Path) -> None:
        for image in images:
            assert image.apply_layers is not None
            dest = root / image.platform.dir_name if len(images) > 1 else root
            dest.mkdir(mode=0o755, exist_ok=True)
            _apply_dated(image, dest)

    if out.type == "local":
        try:
            Path(out.dest).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _output_error(out.type, out.dest, exc) from exc
        fill(Path(out.dest))
        return
    work = Path(tempfile.mkdtemp(dir=tmp_dir, prefix="export-fs-"))
    try:
        fill(work)
        with _dest_file(out.dest, out.type, stdout) as f:
            _tar_directory(work, f)
    finally:
        shutil.rmtree(work, ignore_errors=True)
