"""Issue 9 item 13 through the CLI: a base image whose later layer writes through an earlier
layer's symlinks (``lnk -> /usr``, ``up -> ../../…/<canary>/dir``, ``abs -> <canary>``) builds
to the same filesystem with ``--snapshotter=overlay``, with ``--snapshotter=copy`` and in
``--output type=local`` / ``type=tar``: every write lands inside the rootfs, at the symlink's
in-root target (BuildKit's rule), and the canary tree outside every mason path is untouched."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.busybox import build_busybox_image
from tests.support.cli import mason_build
from tests.support.registry_server import RegistryServer

from mason.digest import sha256_bytes
from mason.layer import overlay_supported
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.manifest import build_manifest
from mason.oci.reference import Reference
from mason.registry.client import RegistryClient

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (overlayfs, runc)")

SECRET = "HOST-SECRET-must-never-change"
UP = "../" * 24


Listing = dict[str, tuple[str, str]]


def _listing(root: Path) -> Listing:
    """path -> (kind, link target or content hash) for everything under ``root``."""
    out: Listing = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = (
                    f"file {stat.S_IMODE(st.st_mode):o}",
                    hashlib.sha256(p.read_bytes()).hexdigest(),
                )
            else:
                out[rel] = (f"{stat.S_IFMT(st.st_mode):o} {stat.S_IMODE(st.st_mode):o}", "")
    return out


def _tar_listing(path: Path) -> Listing:
    out: Listing = {}
    with tarfile.open(path) as tf:
        by_name = {m.name: m for m in tf.getmembers()}
        for m in tf.getmembers():
            target = by_name[m.linkname] if m.islnk() else m
            if m.issym():
                out[m.name] = ("symlink", m.linkname)
            elif target.isreg():
                data = tf.extractfile(target)
                assert data is not None
                out[m.name] = (f"file {m.mode:o}", hashlib.sha256(data.read()).hexdigest())
            else:
                kind = stat.S_IFDIR if m.isdir() else stat.S_IFIFO if m.isfifo() else stat.S_IFCHR
                out[m.name] = (f"{kind:o} {m.mode:o}", "")
    return out


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    """A host directory no build may write; checked after every test."""
    host = tmp_path / "canary"
    (host / "dir").mkdir(parents=True)
    (host / "secret").write_text(SECRET)
    (host / "dir" / "evil.txt").write_text(SECRET)
    before = _listing(host)
    yield host
    assert _listing(host) == before, "the canary tree outside every root was changed"


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            info.mtime, info.uid, info.gid = 0, 0, 0
            info.size = len(data) if data is not None else 0
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _node(
    name: str, kind: bytes = tarfile.REGTYPE, *, linkname: str = "", mode: int = 0o644
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    return info


def _layers(canary: Path) -> list[bytes]:
    links = _tar(
        (_node("lnk", tarfile.SYMTYPE, linkname="/usr"), None),
        (_node("up", tarfile.SYMTYPE, linkname=f"{UP}{str(canary).lstrip('/')}/dir"), None),
        (_node("abs", tarfile.SYMTYPE, linkname=str(canary)), None),
        (_node("usr/", tarfile.DIRTYPE, mode=0o755), None),
        (_node("usr/gone"), b"to be deleted through lnk\n"),
    )
    # No parent directory entries: every name below goes through a symlink of the layer above.
    through = _tar(
        (_node("lnk/through.txt"), b"through\n"),
        (_node("lnk/sub/deep.txt"), b"deep\n"),
        (_node("lnk/.wh.gone"), b""),
        (_node("up/evil.txt"), b"written through up\n"),
        (_node("abs/secret"), b"written through abs\n"),
        (_node("hl", tarfile.LNKTYPE, linkname="lnk/through.txt"), None),
    )
    return [links, through]


@pytest.fixture
def symlink_image(registry: RegistryServer, tmp_path: Path, canary: Path) -> str:
    """busybox plus two layers: symlinks, then writes through them (pushed to the registry)."""
    base = build_busybox_image(tmp_path / "img")
    name = f"{registry.host}/security/layer-symlinks-{tmp_path.name.lower()}:latest"
    ref = Reference.parse(name)
    config = json.loads(base.config_raw)
    descs = [base.layer]
    with RegistryClient() as client:
        client.push_blob(ref, base.layer, lambda: open(base.layer_path, "rb"))  # noqa: SIM115
        for tar in _layers(canary):
            blob = gzip.compress(tar, mtime=0)
            desc = Descriptor(mt.OCI_LAYER_GZIP, sha256_bytes(blob), len(blob))
            client.push_blob(ref, desc, lambda blob=blob: io.BytesIO(blob))  # type: ignore[misc]
            descs.append(desc)
            config["rootfs"]["diff_ids"].append(str(sha256_bytes(tar)))
        raw = json.dumps(config).encode()
        config_desc = Descriptor(mt.OCI_CONFIG, sha256_bytes(raw), len(raw))
        client.push_blob(ref, config_desc, lambda: io.BytesIO(raw))
        manifest = build_manifest(config_desc, descs)
        client.put_manifest(ref, manifest.raw, manifest.media_type)
    return name


def _build(tmp_path: Path, image: str, label: str, *args: str) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    # The RUN sees the snapshotter's rootfs; the output is the layers applied again.
    (ctx / "Dockerfile").write_text(f"""\
FROM {image}
RUN cat /usr/through.txt /usr/sub/deep.txt /hl > /seen && \\
    if [ -e /usr/gone ]; then echo gone-still-there >> /seen; fi
""")
    proc = mason_build(tmp_path / f"root-{label}", *args, str(ctx))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_writes_through_base_image_symlinks_are_the_same_with_every_snapshotter_and_output(
    symlink_image: str, tmp_path: Path, canary: Path
) -> None:
    if overlay_supported(str(tmp_path)) is not None:
        pytest.skip("overlayfs not usable here")
    outs = {}
    for snapshotter in ("overlay", "copy"):
        out = tmp_path / f"out-{snapshotter}"
        _build(
            tmp_path,
            symlink_image,
            snapshotter,
            f"--snapshotter={snapshotter}",
            "-o",
            f"type=local,dest={out}",
        )
        outs[snapshotter] = out
    _build(tmp_path, symlink_image, "tar", "-o", f"type=tar,dest={tmp_path / 'out.tar'}")

    out = outs["overlay"]
    canary_rel = str(canary).lstrip("/")
    assert (out / "seen").read_text() == "through\ndeep\nthrough\n"
    assert os.readlink(out / "lnk") == "/usr"
    assert (out / "usr" / "through.txt").read_text() == "through\n"
    assert (out / "usr" / "sub" / "deep.txt").read_text() == "deep\n"
    assert not (out / "usr" / "gone").exists()
    assert (out / "hl").stat().st_ino == (out / "usr" / "through.txt").stat().st_ino
    assert (out / canary_rel / "dir" / "evil.txt").read_text() == "written through up\n"
    assert (out / canary_rel / "secret").read_text() == "written through abs\n"

    overlay_listing = _listing(out)
    assert _listing(outs["copy"]) == overlay_listing
    assert _tar_listing(tmp_path / "out.tar") == overlay_listing
