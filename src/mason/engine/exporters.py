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
import dataclasses
import errno
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from mason.compression.kinds import get_compression
from mason.digest import Digest, sha256_bytes
from mason.engine.annotations import ResolvedAnnotations, resolve_annotations
from mason.engine.blobs import Blobs
from mason.engine.options import OutputSpec
from mason.engine.state import LayerRef
from mason.errors import BuildError
from mason.oci import mediatypes as mt
from mason.oci.atomic import output_file
from mason.oci.descriptor import Descriptor
from mason.oci.manifest import ImageManifest, build_manifest
from mason.oci.platform import Platform
from mason.oci.reference import Reference

if TYPE_CHECKING:
    from mason.engine.imagetar import ImageFiles

__all__ = ["ExportedImage", "ImageResult", "assemble_manifest", "export_outputs", "push_image"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageResult:
    layers: tuple[LayerRef, ...]
    config: dict[str, Any]
    platform: Platform
    apply_layers: Callable[[Path], None] | None = field(default=None, compare=False)
    #: SOURCE_DATE_EPOCH of the build: what ``rewrite-timestamp=true`` clamps layer times to
    source_date_epoch: int | None = None


@dataclass(frozen=True)
class ExportedImage:
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
    from mason.layer import clamp_tar_times

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
    return dataclasses.replace(image, layers=tuple(layers))


def push_image(
    blobs: Blobs,
    client: Any,
    exported: ExportedImage,
    refs: Sequence[Reference],
    log: Callable[[str], None],
    max_workers: int = 4,
) -> None:
    """Push layers (``mason.registry.push.push_blob``: HEAD, else mount from a repository of
    the same registry known to hold it, else upload), then the config, then the manifest under
    each ref. Layers already known remote on the same registry are never downloaded; every
    layer pushed is recorded (``Blobs.note_stored``) so later pushes and cache exports mount it."""
    from mason.oci.descriptor import DISTRIBUTION_SOURCE_PREFIX
    from mason.registry.push import push_blob

    by_repo: dict[str, list[Reference]] = {}
    for r in refs:
        by_repo.setdefault(f"{r.registry}/{r.repository}", []).append(r)
    for targets in by_repo.values():
        target = targets[0]

        def push_layer(lr: LayerRef, target: Reference = target) -> None:
            assert lr.blob is not None
            desc = blobs.descriptor(lr, oci=exported.oci)
            hints = blobs.mount_hints(lr.blob)
            outcome = push_blob(
                client, target, desc.with_annotations(hints) if hints else desc, blobs.opener(lr)
            )
            if outcome == "mounted":
                known = hints.get(DISTRIBUTION_SOURCE_PREFIX + target.registry, "")
                log(f"mounted {lr.blob} (known in {known})")
            blobs.note_stored(lr.blob, target, desc.media_type, desc.size)

        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            list(pool.map(push_layer, exported.layers))
        log(f"pushing layers {time.monotonic() - t0:.1f}s done")
        cfg = exported.manifest.config
        raw = exported.config_raw
        client.push_blob(target, cfg, lambda raw=raw: io.BytesIO(raw))
        for r in targets:
            client.put_manifest(r, exported.manifest.raw, exported.manifest.media_type)
            log(
                f"pushing manifest for {r.repository_ref}:{r.tag or 'latest'}@{exported.digest} done"
            )


# -- files -----------------------------------------------------------------------


def _write_layout(
    blobs: Blobs,
    exported: ExportedImage,
    layout_dir: Path,
    names: Sequence[str],
    desc_annotations: Mapping[str, str],
) -> None:
    from mason.oci.layout import OCILayout

    layout = OCILayout.create(str(layout_dir))
    for lr in exported.layers:
        assert lr.blob is not None
        if not layout.has_blob(lr.blob):
            with blobs.opener(lr)() as src:
                layout.put_blob_stream(
                    src, lr.media_type or mt.OCI_LAYER_GZIP, lr.blob, lr.blob_size
                )
    layout.put_blob_bytes(exported.config_raw, exported.manifest.config.media_type)
    layout.put_blob_bytes(exported.manifest.raw, exported.manifest.media_type)
    desc = exported.descriptor()
    if desc_annotations:  # manifest-descriptor annotations: the layout's index.json entry
        desc = desc.with_annotations(dict(desc_annotations))
    if names:
        for n in names:
            layout.add_manifest(
                desc.with_annotations({"io.containerd.image.name": n}), ref_name=_ref_name(n)
            )
    else:
        layout.add_manifest(desc, ref_name="latest")


def _image_files(
    exported: ExportedImage, out: OutputSpec, desc_annotations: Mapping[str, str]
) -> ImageFiles:
    """An oci or docker tarball's contents: the same layout ``_write_layout`` makes."""
    from mason.engine.imagetar import ImageFiles, index_json

    desc = exported.descriptor()
    if desc_annotations:
        desc = desc.with_annotations(dict(desc_annotations))
    return ImageFiles(
        exported.layers,
        (exported.config_raw, exported.manifest.raw),
        index_json(desc, out.names, {n: _ref_name(n) for n in out.names}),
        _docker_manifest_json(exported, out.names) if out.type == "docker" else None,
    )


def _ref_name(name: str) -> str:
    try:
        ref = Reference.parse(name)
        return ref.tag or "latest"
    except Exception:
        return name


def _tar_directory(src: Path, out: IO[bytes]) -> None:
    """A tar of a directory (sorted names, no user/group names; times kept)."""
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


def output_annotations(out: OutputSpec, platform: Platform) -> ResolvedAnnotations:
    """An image-like output's annotations for ``platform`` (usage errors name the output)."""
    where = f"--output type={out.type}" + (f",dest={out.dest}" if out.dest else "")
    return resolve_annotations(out.annotations, platform, oci=out.oci_mediatypes, where=where)


def export_outputs(
    blobs: Blobs,
    client: Any,
    image: ImageResult,
    outputs: Sequence[OutputSpec],
    tmp_dir: Path,
    log: Callable[[str], None],
    *,
    stdout: BinaryIO | None = None,
    config_extra: dict[str, Any] | None = None,
) -> ExportedImage | None:
    """Write every output; returns the image of the first image-like output (for metadata)."""
    first: ExportedImage | None = None
    rewritten: dict[tuple[Digest, int], LayerRef] = {}
    for out in outputs:
        if out.type in ("image", "oci", "docker"):
            t0 = time.monotonic()
            notes = output_annotations(out, image.platform)
            shipped = (
                rewrite_timestamps(blobs, image, log, rewritten) if out.rewrite_timestamp else image
            )
            exported = assemble_manifest(
                blobs,
                shipped,
                compression=out.compression,
                level=out.compression_level,
                force=out.force_compression,
                oci=out.oci_mediatypes,
                config_extra=config_extra,
                annotations=notes.manifest,
            )
            first = first or exported
            log(
                f"exporting layers {time.monotonic() - t0:.1f}s done"
            )  # BuildKit's first export line
            log(f"exporting manifest {exported.digest} done")
            log(f"exporting config {exported.manifest.config.digest} done")
            if out.type == "image":
                if out.push:
                    refs = [Reference.parse(n) for n in out.names]
                    push_image(blobs, client, exported, refs, log)
                else:
                    log(
                        "image not pushed (push=false); use --push or --output type=oci/docker to keep it"
                    )
            else:
                assert out.dest is not None
                if out.layout_dir:
                    _write_layout(blobs, exported, Path(out.dest), out.names, notes.descriptor)
                else:
                    from mason.engine.imagetar import write_image_tar

                    files = _image_files(exported, out, notes.descriptor)
                    with _dest_file(out.dest, out.type, stdout) as f:
                        write_image_tar(blobs, files, f)
                log(f"writing {out.type} output to {out.dest} done")
        else:
            assert out.dest is not None and image.apply_layers is not None
            if out.type == "local":
                try:
                    Path(out.dest).mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise _output_error(out.type, out.dest, exc) from exc
                _apply_dated(image, Path(out.dest))
            else:
                work = Path(tempfile.mkdtemp(dir=tmp_dir, prefix="export-fs-"))
                try:
                    _apply_dated(image, work)
                    with _dest_file(out.dest, out.type, stdout) as f:
                        _tar_directory(work, f)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
            log(f"copying files to {out.dest} done")
    return first
