"""`mason imagetools copy` and `inspect` against the real registry, checked with skopeo and umoci."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.support.registry_server import RegistryServer, count_blob_gets, count_requests
from tests.support.testdata import TESTDATA

from mason.cli.main import main
from mason.digest import sha256_bytes
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.reference import Reference
from mason.registry.client import RegistryClient

DOCUMENTS = TESTDATA / "registry-documents"


@pytest.fixture(autouse=True)
def _no_host_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)


def test_copy_within_registry_mounts_and_skopeo_accepts(
    registry: RegistryServer, busybox_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dst = f"{registry.host}/imagetools/copied:v1"
    gets_before = count_blob_gets(registry)
    assert main(["imagetools", "copy", busybox_image, dst]) == 0
    out = capsys.readouterr().out
    assert "mounted: 2" in out and "blobs uploaded: 0" in out
    assert count_blob_gets(registry) == gets_before
    assert count_requests(registry, "PUT", r"^/v2/imagetools/copied/blobs/uploads/") == 0
    assert count_requests(registry, "PATCH", r"^/v2/imagetools/copied/blobs/uploads/") == 0
    result = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{dst}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    with RegistryClient() as client:
        src_digest = client.fetch_manifest(Reference.parse(busybox_image)).digest
    assert json.loads(result.stdout)["Digest"] == src_digest


def test_copy_to_oci_layout_unpacks_with_umoci(busybox_image: str, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    assert main(["imagetools", "copy", busybox_image, f"oci-layout://{layout}:v1"]) == 0
    cmd = (
        ["umoci", "unpack"]
        + (["--rootless"] if os.geteuid() != 0 else [])
        + ["--image", f"{layout}:v1", str(tmp_path / "bundle")]
    )
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    rootfs = tmp_path / "bundle" / "rootfs"
    assert (rootfs / "bin" / "busybox").is_file()
    assert os.readlink(rootfs / "bin" / "sh") == "/bin/busybox"
    assert "root:x:0:0" in (rootfs / "etc" / "passwd").read_text()


def test_copy_oci_layout_back_to_registry(
    registry: RegistryServer, busybox_image: str, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    assert main(["imagetools", "copy", busybox_image, f"oci-layout://{layout}:v1"]) == 0
    dst = f"{registry.host}/imagetools/from-layout:v1"
    assert main(["imagetools", "copy", f"oci-layout://{layout}:v1", dst]) == 0
    with RegistryClient() as client:
        assert (
            client.fetch_manifest(Reference.parse(dst)).digest
            == client.fetch_manifest(Reference.parse(busybox_image)).digest
        )


def _push_documents(registry: RegistryServer) -> list[dict[str, str]]:
    with open(DOCUMENTS / "INDEX.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:  # under vectors/ so they never shadow the busybox fixture's repository
        row["repo"] = f"vectors/{row['repo']}"
    with RegistryClient() as client:
        for row in rows:  # blobs first: manifests need them
            if row["reference"] != "blob":
                continue
            data = (DOCUMENTS / row["file"]).read_bytes()
            ref = Reference.parse(f"{registry.host}/{row['repo']}:x")
            client.push_blob(
                ref,
                Descriptor(row["mediaType(Content-Type)"], sha256_bytes(data), len(data)),
                lambda data=data: io.BytesIO(data),
            )  # type: ignore[misc]
        for row in rows:
            if row["reference"] == "blob":
                continue
            raw = (DOCUMENTS / row["file"]).read_bytes()
            doc = json.loads(raw)
            referenced = [doc["config"]] if "config" in doc else []
            referenced += doc.get("layers", []) + doc.get("manifests", [])
            for desc in referenced:
                # layer bytes are not part of the test vectors: stand-ins, never pulled
                if not client.blob_exists(
                    Reference.parse(f"{registry.host}/{row['repo']}:x"), desc["digest"]
                ):
                    registry.seed_placeholder_blob(row["repo"], desc["digest"])
            ref = Reference.parse(f"{registry.host}/{row['repo']}:{row['reference']}")
            # the index files share a tag: push each also by digest so every one stays readable
            client.put_manifest(
                Reference(ref.registry, ref.repository, None, sha256_bytes(raw)),
                raw,
                row["mediaType(Content-Type)"],
            )
            client.put_manifest(ref, raw, row["mediaType(Content-Type)"])
    return rows


def test_inspect_reads_every_registry_document(
    placeholder_registry: RegistryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = placeholder_registry
    assert DOCUMENTS.is_dir(), f"test vectors missing at {DOCUMENTS}"
    rows = _push_documents(registry)
    by_digest = {sha256_bytes((DOCUMENTS / r["file"]).read_bytes()): r for r in rows}
    manifests = [r for r in rows if r["reference"] != "blob"]
    assert manifests
    for row in manifests:
        raw = (DOCUMENTS / row["file"]).read_bytes()
        digest = sha256_bytes(raw)
        ref = f"{registry.host}/{row['repo']}@{digest}"
        assert main(["imagetools", "inspect", "--raw", ref]) == 0
        assert capsys.readouterr().out.encode() == raw
        assert main(["imagetools", "inspect", ref]) == 0
        out = capsys.readouterr().out
        doc = json.loads(raw)
        assert f"Digest:      {digest}" in out
        assert row["mediaType(Content-Type)"] in out
        entries = doc.get("layers") or doc.get("manifests") or []
        for entry in entries:
            assert entry["digest"] in out
        cache_cfgs = [
            e for e in doc.get("manifests", []) if e["mediaType"] == mt.BUILDKIT_CACHE_CONFIG
        ]
        if cache_cfgs:
            cfg = json.loads((DOCUMENTS / by_digest[cache_cfgs[0]["digest"]]["file"]).read_bytes())
            assert "BuildKit cache (index form)" in out
            assert f"Records:      {len(cfg['records'])} " in out
            assert f"Layers:       {len(cfg['layers'])}" in out
        elif "config" in doc:
            assert "Kind:        image" in out
            cfg = json.loads((DOCUMENTS / by_digest[doc["config"]["digest"]]["file"]).read_bytes())
            assert f"History:    {len(cfg.get('history', []))} entries" in out


def test_inspect_oci_layout(
    busybox_image: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = tmp_path / "l"
    assert main(["imagetools", "copy", busybox_image, f"oci-layout://{layout}:t"]) == 0
    capsys.readouterr()
    assert main(["imagetools", "inspect", f"oci-layout://{layout}:t"]) == 0
    out = capsys.readouterr().out
    assert "Kind:        image" in out and "application/vnd.oci.image.layer.v1.tar+gzip" in out
    shutil.rmtree(layout)


def test_inspect_shows_the_whole_config_and_json(
    registry: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.busybox import build_busybox_image

    image = build_busybox_image(tmp_path / "img")
    config = json.loads(image.config_raw)
    config["config"].update(
        {
            "Env": ["A=1"],
            "Labels": {"org.example": "x"},
            "ExposedPorts": {"80/tcp": {}},
            "Volumes": {"/data": {}},
            "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30000000000},
        }
    )
    raw = json.dumps(config).encode()
    config_desc = Descriptor(mt.OCI_CONFIG, sha256_bytes(raw), len(raw))
    from mason.oci.manifest import build_manifest

    manifest = build_manifest(config_desc, [image.layer])
    ref = Reference.parse(f"{registry.host}/inspect/full:1")
    with RegistryClient() as client:
        client.push_blob(ref, image.layer, lambda: open(image.layer_path, "rb"))  # noqa: SIM115
        client.push_blob(ref, config_desc, lambda: io.BytesIO(raw))
        client.put_manifest(ref, manifest.raw, manifest.media_type)
    assert main(["imagetools", "inspect", str(ref)]) == 0
    out = capsys.readouterr().out
    for shown in (
        'Env:        ["A=1"]',
        '"org.example": "x"',
        '"80/tcp"',
        '"/data"',
        '"Interval": 30000000000',
    ):
        assert shown in out, out
    assert main(["imagetools", "inspect", "--format", "json", str(ref)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["manifest"] == json.loads(manifest.raw) and doc["image"] == config
    assert doc["digest"] == str(sha256_bytes(manifest.raw))
