"""A reproducible busybox base image, built with mason's own code (no internet needed).

The rootfs is ``/bin/busybox`` of ``busybox-static`` with one symlink per applet
(from ``busybox --list-full``), a minimal ``/etc/passwd`` and ``/etc/group``,
the usual empty directories, owner root and mtime 0 everywhere; the layer is a
deterministic gzip tar. Same machine, same busybox: same digest.

Multi-platform builds need a second platform's base: ``foreign_busybox("arm64")`` is
``/bin/busybox`` of Debian's ``busybox-static:arm64`` (``apt-get download``; the arm64
architecture is added by ``scripts/setup.sh test``), cached under ``~/.cache/mason-tests``;
``push_busybox_index`` pushes the host's image and that one under one index.

Usable without pytest (scripts, demo, benches)::

    python -m tests.support.busybox 127.0.0.1:5000/base/busybox:latest
    python -m tests.support.busybox --oci-layout DIR[:TAG]
    python -m tests.support.busybox --multi 127.0.0.1:5000/base/busybox-multi:latest
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mason.digest import Digest, sha256_bytes, sha256_file
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.layout import OCILayout
from mason.oci.manifest import ImageManifest, build_index, build_manifest
from mason.oci.platform import Platform, host_platform
from mason.oci.reference import Reference
from mason.registry.client import RegistryClient

__all__ = [
    "BUSYBOX",
    "BusyboxImage",
    "build_busybox_image",
    "foreign_busybox",
    "main",
    "push_busybox",
    "push_busybox_index",
    "write_busybox_layout",
]

BUSYBOX = "/bin/busybox"
_DIRS = {
    "bin": 0o755,
    "dev": 0o755,
    "etc": 0o755,
    "home": 0o755,
    "proc": 0o755,
    "root": 0o700,
    "sbin": 0o755,
    "sys": 0o755,
    "tmp": 0o1777,
    "usr": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
    "var": 0o755,
    "var/tmp": 0o1777,
}
_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"
_EPOCH = "1970-01-01T00:00:00Z"


@dataclass(frozen=True)
class BusyboxImage:
    layer_path: Path
    layer: Descriptor
    diff_id: Digest
    config_raw: bytes
    config: Descriptor
    manifest: ImageManifest


def _info(name: str, kind: bytes, mode: int, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = linkname
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _layer_tar(busybox: str, runner: tuple[str, ...] = ()) -> bytes:
    applets = subprocess.run(
        [*runner, busybox, "--list-full"], capture_output=True, check=True, text=True
    ).stdout.split()
    entries: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
    for path, mode in _DIRS.items():
        entries[path] = (_info(path, tarfile.DIRTYPE, mode), None)
    binary = Path(busybox).read_bytes()
    entries["bin/busybox"] = (_info("bin/busybox", tarfile.REGTYPE, 0o755, len(binary)), binary)
    for name, data in (("etc/passwd", _PASSWD), ("etc/group", _GROUP)):
        entries[name] = (_info(name, tarfile.REGTYPE, 0o644, len(data)), data)
    for applet in applets:
        applet = applet.strip("/")
        if applet and applet != "bin/busybox" and applet not in entries:
            parent = os.path.dirname(applet)
            if parent and parent not in entries:
                entries[parent] = (_info(parent, tarfile.DIRTYPE, 0o755), None)
            entries[applet] = (_info(applet, tarfile.SYMTYPE, 0o777, linkname="/bin/busybox"), None)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            info, data = entries[name]
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _gzip(data: bytes) -> bytes:
    try:
        from mason.compression.streams import compress_stream
    except ImportError:
        compress_stream = None
    if compress_stream is not None:
        out = io.BytesIO()
        compress_stream(io.BytesIO(data), out, "gzip")
        return out.getvalue()
    return gzip.compress(data, compresslevel=6, mtime=0)


def build_busybox_image(
    workdir: str | os.PathLike[str], busybox: str = BUSYBOX, platform: Platform | None = None
) -> BusyboxImage:
    """Write the layer blob into ``workdir`` and return the image's documents (``platform``:
    the busybox binary's, default the host's; a foreign one lists its applets under QEMU)."""
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    platform = platform or host_platform()
    runner: tuple[str, ...] = ()
    if platform.architecture != host_platform().architecture:
        runner = (f"/usr/bin/qemu-{_QEMU[platform.architecture]}-static",)
    tar = _layer_tar(busybox, runner)
    diff_id = sha256_bytes(tar)
    compressed = _gzip(tar)
    layer_path = work / "busybox-layer.tar.gz"
    layer_path.write_bytes(compressed)
    digest, size = sha256_file(str(layer_path))
    layer = Descriptor(mt.OCI_LAYER_GZIP, digest, size)
    config_doc = {
        "architecture": platform.architecture,
        "config": {
            "Cmd": ["sh"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "created": _EPOCH,
        "history": [{"created": _EPOCH, "created_by": "mason tests: busybox-static rootfs"}],
        "os": "linux",
        "rootfs": {"diff_ids": [diff_id], "type": "layers"},
    }
    if platform.variant:
        config_doc["variant"] = platform.variant
    config_raw = json.dumps(config_doc, sort_keys=True, separators=(",", ":")).encode()
    config = Descriptor(mt.OCI_CONFIG, sha256_bytes(config_raw), len(config_raw))
    manifest = build_manifest(config, [layer])
    return BusyboxImage(layer_path, layer, diff_id, config_raw, config, manifest)


def push_busybox(
    client: RegistryClient, ref: Reference | str, workdir: str | os.PathLike[str] | None = None
) -> Digest:
    """Build the image and push it to ``ref`` with mason's client; returns the manifest digest."""
    target = Reference.parse(ref) if isinstance(ref, str) else ref
    with tempfile.TemporaryDirectory(prefix="mason-busybox-") as tmp:
        image = build_busybox_image(workdir or tmp)
        client.push_blob(target, image.layer, lambda: open(image.layer_path, "rb"))  # noqa: SIM115
        client.push_blob(target, image.config, lambda: io.BytesIO(image.config_raw))
        return client.put_manifest(target, image.manifest.raw, image.manifest.media_type)


_QEMU = {"arm64": "aarch64", "amd64": "x86_64"}
#: Debian's name of each platform's architecture
_DEBIAN_ARCH = {"arm64": "arm64", "amd64": "amd64"}


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mason-tests"


def foreign_busybox(arch: str = "arm64") -> Path:
    """``/bin/busybox`` of Debian's ``busybox-static`` for ``arch``, downloaded once with
    ``apt-get download`` and kept in ``~/.cache/mason-tests/busybox-static-<arch>/``. Raises
    ``RuntimeError`` saying what to run when apt cannot get it."""
    dest = _cache_dir() / f"busybox-static-{arch}"
    binary = dest / "bin" / "busybox"
    if binary.is_file():
        return binary
    package = f"busybox-static:{_DEBIAN_ARCH[arch]}"
    with tempfile.TemporaryDirectory(prefix="mason-busybox-deb-") as tmp:
        os.chmod(tmp, 0o755)  # apt's _apt user writes the download here
        got = subprocess.run(
            ["apt-get", "download", package], cwd=tmp, capture_output=True, text=True, check=False
        )
        debs = list(Path(tmp).glob("*.deb"))
        if got.returncode != 0 or not debs:
            raise RuntimeError(
                f"apt-get download {package} failed ({got.stderr.strip()}); "
                f"run: dpkg --add-architecture {_DEBIAN_ARCH[arch]} && apt-get update "
                "(bash scripts/setup.sh test does)"
            )
        unpacked = Path(tmp) / "root"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
        (staged / "bin").mkdir()
        shutil.copy2(unpacked / "bin" / "busybox", staged / "bin" / "busybox")
        try:
            os.rename(staged, dest)  # all or nothing: a concurrent fetch may have won
        except OSError:
            shutil.rmtree(staged, ignore_errors=True)
    return binary


def _push_one(client: RegistryClient, target: Reference, image: BusyboxImage) -> Digest:
    client.push_blob(target, image.layer, lambda: open(image.layer_path, "rb"))  # noqa: SIM115
    client.push_blob(target, image.config, lambda: io.BytesIO(image.config_raw))
    return client.put_manifest(
        target.with_digest(image.manifest.digest), image.manifest.raw, image.manifest.media_type
    )


def push_busybox_index(
    client: RegistryClient,
    ref: Reference | str,
    workdir: str | os.PathLike[str],
    arches: tuple[str, ...] = ("amd64", "arm64"),
) -> Digest:
    """Push one busybox image per architecture and an OCI index of them to ``ref``; returns
    the index's digest. The host's architecture uses the host's busybox."""
    target = Reference.parse(ref) if isinstance(ref, str) else ref
    host = host_platform()
    entries = []
    for arch in arches:
        platform = Platform("linux", arch)
        binary = BUSYBOX if arch == host.architecture else str(foreign_busybox(arch))
        image = build_busybox_image(Path(workdir) / arch, binary, platform)
        _push_one(client, target, image)
        entries.append(image.manifest.descriptor(platform=platform))
    index = build_index(entries)
    return client.put_manifest(target, index.raw, index.media_type)


def write_busybox_layout(path: str | os.PathLike[str], tag: str = "latest") -> Descriptor:
    """Write the image into an OCI layout at ``path`` (created when missing)."""
    try:
        layout = OCILayout.open(str(path))
    except Exception:
        layout = OCILayout.create(str(path))
    with tempfile.TemporaryDirectory(prefix="mason-busybox-") as tmp:
        image = build_busybox_image(tmp)
        layout.put_blob_file(str(image.layer_path), image.layer.media_type, image.layer.digest)
        layout.put_blob_bytes(image.config_raw, image.config.media_type)
        desc = layout.put_blob_bytes(image.manifest.raw, image.manifest.media_type)
        layout.add_manifest(desc, ref_name=tag)
        return desc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.busybox", description=__doc__)
    parser.add_argument("ref", nargs="?", help="registry reference to push to")
    parser.add_argument("--oci-layout", help="write an OCI layout DIR[:TAG] instead")
    parser.add_argument("--insecure", action="append", default=[], help="plain-HTTP host")
    parser.add_argument("--multi", action="store_true", help="push an amd64+arm64 index to REF")
    args = parser.parse_args(argv)
    if args.oci_layout:
        path, _, tag = args.oci_layout.partition(":")
        desc = write_busybox_layout(path, tag or "latest")
    elif args.ref and args.multi:
        with (
            RegistryClient(insecure_hosts=args.insecure) as client,
            tempfile.TemporaryDirectory(prefix="mason-busybox-") as tmp,
        ):
            digest = push_busybox_index(client, args.ref, tmp)
        desc = Descriptor(mt.OCI_INDEX, digest, 0)
    elif args.ref:
        with RegistryClient(insecure_hosts=args.insecure) as client:
            digest = push_busybox(client, args.ref)
        desc = Descriptor(mt.OCI_MANIFEST, digest, 0)
    else:
        parser.error("give a REF or --oci-layout DIR")
    sys.stdout.write(f"{desc.digest}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
