"""Blob push/pull throughput of mason's registry client against the real registry on loopback,
next to `skopeo copy` of the same image.

For each compression (uncompressed, gzip, zstd) it builds a one-layer OCI image whose layer is a
tar holding SIZE bytes of random (incompressible) data, then times:
- mason push: push_blob of the layer + config + manifest into a fresh repository;
- mason pull: fetch_blob of the layer (verified, atomic write to disk);
- skopeo push: `skopeo copy oci:LAYOUT docker://...` into a fresh, empty registry per run (so no mounts);
- skopeo pull: `skopeo copy docker://... oci:DIR`.

Run: .venv/bin/python bench/bench_registry.py [--size-mib 256] [--runs 3]   (prints a table; medians)
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.registry_server import start_registry

from mason.compression.streams import compress_stream
from mason.digest import sha256_bytes, sha256_file
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.layout import OCILayout
from mason.oci.manifest import build_manifest
from mason.oci.reference import Reference
from mason.registry.client import RegistryClient


def make_layer(work: Path, size: int, compression: str) -> tuple[Path, Descriptor, str]:
    tar_path = work / "layer.tar"
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("random.bin")
        info.size = size
        with open("/dev/urandom", "rb") as rnd:
            tar.addfile(info, rnd)
    diff_id, _ = sha256_file(str(tar_path))
    out = work / f"layer.{compression}"
    with open(tar_path, "rb") as src, open(out, "wb") as dst:
        compress_stream(src, dst, compression)
    tar_path.unlink()
    digest, blob_size = sha256_file(str(out))
    return out, Descriptor(mt.layer_media_type(compression, True), digest, blob_size), diff_id


def mib_s(size: int, seconds: float) -> float:
    return size / (1 << 20) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compressions", default="uncompressed,gzip,zstd")
    args = parser.parse_args()
    size = args.size_mib << 20
    base = Path(tempfile.mkdtemp(prefix="mason-bench-registry-"))
    reg = start_registry(base / "reg-mason", "plain")
    rows = []
    try:
        with RegistryClient(max_workers=4) as client:
            for compression in args.compressions.split(","):
                work = base / compression
                work.mkdir()
                t0 = time.perf_counter()
                layer_path, layer, diff_id = make_layer(work, size, compression)
                make_s = time.perf_counter() - t0
                cfg = (
                    b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["'
                    + diff_id.encode()
                    + b'"]}}'
                )
                cdesc = Descriptor(mt.OCI_CONFIG, sha256_bytes(cfg), len(cfg))
                manifest = build_manifest(cdesc, [layer])
                layout = OCILayout.create(str(work / "oci"))
                layout.put_blob_file(str(layer_path), layer.media_type, layer.digest)
                layout.put_blob_bytes(cfg, mt.OCI_CONFIG)
                layout.add_manifest(
                    layout.put_blob_bytes(manifest.raw, manifest.media_type), ref_name="bench"
                )
                m_push, m_pull, s_push, s_pull = [], [], [], []
                for run in range(args.runs):
                    ref = Reference.parse(f"{reg.host}/bench/{compression}-{run}:latest")
                    t = time.perf_counter()
                    client.push_blob(ref, layer, lambda p=layer_path: open(p, "rb"))  # type: ignore[misc]  # noqa: SIM115
                    client.push_blob(ref, cdesc, lambda c=cfg: io.BytesIO(c))  # type: ignore[misc]
                    client.put_manifest(ref, manifest.raw, manifest.media_type)
                    m_push.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    client.fetch_blob(ref, layer, work / "pulled.blob")
                    m_pull.append(time.perf_counter() - t)
                    (work / "pulled.blob").unlink()
                    # a fresh registry per run: skopeo would otherwise mount the blob from the last run
                    reg2 = start_registry(base / f"reg-skopeo-{compression}-{run}", "plain")
                    dst = f"docker://{reg2.host}/bench/{compression}-{run}:latest"
                    t = time.perf_counter()
                    subprocess.run(
                        [
                            "skopeo",
                            "copy",
                            "--quiet",
                            "--dest-tls-verify=false",
                            f"oci:{work / 'oci'}:bench",
                            dst,
                        ],
                        check=True,
                    )
                    s_push.append(time.perf_counter() - t)
                    pulled = work / f"skopeo-pull-{run}"
                    t = time.perf_counter()
                    subprocess.run(
                        [
                            "skopeo",
                            "copy",
                            "--quiet",
                            "--src-tls-verify=false",
                            dst,
                            f"oci:{pulled}:bench",
                        ],
                        check=True,
                    )
                    s_pull.append(time.perf_counter() - t)
                    reg2.stop()
                    shutil.rmtree(pulled)
                    shutil.rmtree(reg2.workdir, ignore_errors=True)
                rows.append(
                    (
                        compression,
                        layer.size,
                        make_s,
                        *(statistics.median(x) for x in (m_push, m_pull, s_push, s_pull)),
                    )
                )
                shutil.rmtree(work)
    finally:
        reg.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(
        f"\nblob throughput on loopback, {args.size_mib} MiB random data in a tar, median of {args.runs} (MiB/s of blob bytes)"
    )
    header = f"{'compression':<13}{'blob MiB':>9}{'compress s':>11}{'mason push':>12}{'skopeo push':>13}{'mason pull':>12}{'skopeo pull':>13}"
    print(header)
    print("-" * len(header))
    for compression, blob_size, make_s, mp, ml, sp, sl in rows:
        print(
            f"{compression:<13}{blob_size / (1 << 20):>9.1f}{make_s:>11.2f}"
            f"{mib_s(blob_size, mp):>12.0f}{mib_s(blob_size, sp):>13.0f}"
            f"{mib_s(blob_size, ml):>12.0f}{mib_s(blob_size, sl):>13.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
