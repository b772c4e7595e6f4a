"""Registry and local cache backends against the real CNCF registry (and skopeo/umoci)."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
from pathlib import Path

import pytest
from tests.support.registry_server import RegistryServer, count_blob_gets, count_requests
from tests.support.testdata import TESTDATA
from tests.unit.cache.cache_fakes import FakeBlobStore, key

from mason.cache import export_cache, load_cache_source
from mason.cache.model import DISTRIBUTION_SOURCE_PREFIX, SolvedRecord
from mason.cache.options import parse_cache_from, parse_cache_to
from mason.cli.main import main as mason_main
from mason.digest import Digest, sha256_bytes
from mason.errors import MasonError
from mason.oci import mediatypes as mt
from mason.oci.descriptor import ANNOTATION_UNCOMPRESSED, Descriptor
from mason.oci.reference import Reference
from mason.registry.auth import Credentials, CredentialStore
from mason.registry.client import RegistryClient


def _clock() -> object:
    counter = itertools.count(1)
    return lambda: f"2026-01-01T00:00:{next(counter):02d}Z"


def _build(store: FakeBlobStore, salt: str) -> tuple[list[SolvedRecord], list[Digest]]:
    base = store.add_layer(f"{salt}-base".encode() * 2000)
    b1 = store.add_layer(f"{salt}-build".encode() * 500)
    f1 = store.add_layer(f"{salt}-copy".encode() * 300)
    f2 = store.add_layer(f"{salt}-run".encode() * 100)
    records = [
        SolvedRecord(key(f"{salt}from"), (), (base,), step="[build 1/2] FROM base"),
        SolvedRecord(
            key(f"{salt}b1"), (key(f"{salt}from"),), (base, b1), step="[build 2/2] RUN make"
        ),
        SolvedRecord(
            key(f"{salt}f1"),
            (key(f"{salt}from"), key(f"{salt}b1")),
            (base, f1),
            step="[stage-1 2/3] COPY --from=build",
        ),
        SolvedRecord(
            key(f"{salt}f2"), (key(f"{salt}f1"),), (base, f1, f2), step="[stage-1 3/3] RUN x"
        ),
    ]
    return records, [Digest(d.annotations[ANNOTATION_UNCOMPRESSED]) for d in (base, f1, f2)]


def _uploads(registry: RegistryServer, repo: str) -> int:
    return count_requests(registry, "PUT", rf"^/v2/{repo}/blobs/uploads/")


def _skopeo_raw(ref: str) -> bytes:
    result = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


COMBOS = [
    (comp, oci, im)
    for comp in ("uncompressed", "gzip", "zstd")
    for oci, im in ((True, True), (True, False), (False, False))
]


@pytest.mark.parametrize(("compression", "oci", "image_manifest"), COMBOS)
def test_registry_round_trip_every_form(
    registry: RegistryServer, compression: str, oci: bool, image_manifest: bool
) -> None:
    store = FakeBlobStore()
    salt = f"{compression}-{oci}-{image_manifest}"
    records, image = _build(store, salt)
    repo = f"cache/combo-{compression}-{int(oci)}{int(image_manifest)}"
    ref = f"{registry.host}/{repo}:latest"
    [opts] = parse_cache_to(
        f"type=registry,ref={ref},mode=max,compression={compression},force-compression=true,"
        f"oci-mediatypes={str(oci).lower()},image-manifest={str(image_manifest).lower()}"
    )
    with RegistryClient() as client:
        result = export_cache(
            opts, records, blobs=store, image_diff_ids=image, client=client, clock=_clock()
        )  # type: ignore[arg-type]
    assert result.manifest is not None and len(result.uploaded) == 5  # 4 layers + config
    raw = _skopeo_raw(ref)
    assert sha256_bytes(raw) == result.manifest.digest
    doc = json.loads(raw)
    expected_top = (
        mt.OCI_MANIFEST if image_manifest else (mt.OCI_INDEX if oci else mt.DOCKER_MANIFEST_LIST)
    )
    assert doc["mediaType"] == expected_top
    layers = doc["layers"] if image_manifest else doc["manifests"][:-1]
    assert {entry["mediaType"] for entry in layers} == {mt.layer_media_type(compression, oci)}
    assert all(ANNOTATION_UNCOMPRESSED in entry["annotations"] for entry in layers)
    # a fresh client imports it: only the manifest and the config are read
    gets_before = count_blob_gets(registry, repo)
    with RegistryClient() as fresh:
        source = load_cache_source(parse_cache_from(ref)[0], fresh)
        assert source.warning is None
        for rec in records:
            hit = source.lookup(rec.key)
            assert hit is not None and hit.source == f"registry {ref}"
            assert hit.diff_ids == tuple(
                d.annotations[ANNOTATION_UNCOMPRESSED] for d in rec.layers or ()
            )
        assert count_blob_gets(registry, repo) == gets_before + 1  # the config only
        top = source.lookup(records[-1].key)
        assert top is not None
        with top.open_blob(top.layers[-1]) as stream:  # lazily, verified
            assert sha256_bytes(stream.read()) == top.layers[-1].digest


def test_unchanged_reexport_uploads_nothing_and_keeps_the_digest(registry: RegistryServer) -> None:
    store = FakeBlobStore()
    records, image = _build(store, "reexport")
    ref = f"{registry.host}/cache/reexport:latest"
    [opts] = parse_cache_to(f"type=registry,ref={ref},mode=max")
    with RegistryClient() as client:
        first = export_cache(opts, records, blobs=store, image_diff_ids=image, client=client)
    uploads = _uploads(registry, "cache/reexport")
    puts = count_requests(registry, "PUT", r"^/v2/cache/reexport/manifests/")
    with RegistryClient() as client:
        prior = load_cache_source(parse_cache_from(ref)[0], client)
        again = export_cache(
            opts, records, blobs=store, image_diff_ids=image, client=client, prior=prior
        )
    assert again.unchanged and again.manifest == first.manifest
    assert _uploads(registry, "cache/reexport") == uploads
    assert count_requests(registry, "PUT", r"^/v2/cache/reexport/manifests/") == puts
    # without the import of the same ref the exporter reads the ref itself, with the same outcome
    with RegistryClient() as client:
        third = export_cache(opts, records, blobs=store, image_diff_ids=image, client=client)
    assert third.unchanged and _uploads(registry, "cache/reexport") == uploads


def test_export_mounts_blobs_from_another_repository(registry: RegistryServer) -> None:
    store = FakeBlobStore()
    records, image = _build(store, "mount")
    base = (records[0].layers or ())[0]
    with RegistryClient() as client:
        client.push_blob(
            Reference.parse(f"{registry.host}/base/mount-src"), base, lambda: store.open_blob(base)
        )
        hinted = base.with_annotations(
            {DISTRIBUTION_SOURCE_PREFIX + registry.host: "base/mount-src"}
        )
        records = [
            SolvedRecord(
                r.key,
                r.inputs,
                tuple(hinted if d.digest == base.digest else d for d in r.layers or ()),
            )
            for r in records
        ]
        [opts] = parse_cache_to(f"type=registry,ref={registry.host}/cache/mounted,mode=max")
        result = export_cache(opts, records, blobs=store, image_diff_ids=image, client=client)
    assert result.mounted == (base.digest,)
    assert base.digest not in result.uploaded


def test_import_failures_warn(registry: RegistryServer, registry_tls_basic: RegistryServer) -> None:
    with RegistryClient() as client:
        missing = load_cache_source(
            parse_cache_from(f"{registry.host}/cache/never-written")[0], client
        )
    # nothing stored there yet: a first build's normal case, said quietly, not a warning
    assert (
        missing.warning is None
        and missing.missing == f"no cache at {registry.host}/cache/never-written:latest yet"
    )
    assert missing.lookup(key("anything")) is None
    # wrong password
    creds = CredentialStore(
        static={registry_tls_basic.host: Credentials(registry_tls_basic.username or "", "wrong")}
    )
    with RegistryClient(creds, ca_file=str(registry_tls_basic.ca_file)) as client:
        denied = load_cache_source(
            parse_cache_from(f"{registry_tls_basic.host}/cache/x")[0], client
        )
    assert denied.warning is not None and "wrong" not in denied.warning
    # a corrupt cache config (valid blob, not JSON)
    garbage = b"\x00not json"
    config = Descriptor(mt.BUILDKIT_CACHE_CONFIG, sha256_bytes(garbage), len(garbage))
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config.to_json(), "layers": []}
    ).encode()
    ref = Reference.parse(f"{registry.host}/cache/corrupt:latest")
    with RegistryClient() as client:
        client.push_blob(ref, config, lambda: io.BytesIO(garbage))
        client.put_manifest(ref, manifest, mt.OCI_MANIFEST)
        corrupt = load_cache_source(parse_cache_from(str(ref))[0], client)
    assert corrupt.warning is not None and "not valid JSON" in corrupt.warning


def test_unreachable_cache_to_fails_unless_ignore_error() -> None:
    store = FakeBlobStore()
    records, image = _build(store, "unreachable")
    from mason.registry.transport import RetryPolicy

    with RegistryClient(retry=RetryPolicy(attempts=1)) as client:
        [strict] = parse_cache_to("type=registry,ref=127.0.0.1:9/cache/x")
        with pytest.raises(MasonError):
            export_cache(strict, records, blobs=store, image_diff_ids=image, client=client)
        [lenient] = parse_cache_to("type=registry,ref=127.0.0.1:9/cache/x,ignore-error=true")
        result = export_cache(lenient, records, blobs=store, image_diff_ids=image, client=client)
    assert result.warning is not None and "127.0.0.1:9" in result.warning


def test_local_round_trip_is_a_valid_layout(tmp_path: Path) -> None:
    store = FakeBlobStore()
    records, image = _build(store, "local")
    dest = tmp_path / "cache"
    [opts] = parse_cache_to(f"type=local,dest={dest},mode=max")
    result = export_cache(opts, records, blobs=store, image_diff_ids=image)
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{dest}:latest"], capture_output=True, check=True
    ).stdout
    assert sha256_bytes(raw) == result.manifest.digest  # type: ignore[union-attr]
    source = load_cache_source(parse_cache_from(f"type=local,src={dest}")[0])
    assert source.warning is None and all(source.lookup(r.key) for r in records)
    again = export_cache(opts, records, blobs=store, image_diff_ids=image)
    assert again.unchanged and again.uploaded == ()


@pytest.mark.parametrize(
    "index_file",
    [
        "buildkit-v0.11.6-cache-mode-max-index.cold.json",
        "buildkit-v0.11.6-cache-mode-max-index.warm-reexport.json",
        "buildkit-v0.11.6-cache-mode-min-index.json",
    ],
)
def test_cache_inspect_reads_buildkit_documents(
    placeholder_registry: RegistryServer, index_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = placeholder_registry
    docs = TESTDATA / "registry-documents"
    raw = (docs / index_file).read_bytes()
    index = json.loads(raw)
    repo = "cache/inspect-" + sha256_bytes(index_file.encode())[7:19]
    config_entry = index["manifests"][-1]
    config_raw = next(
        p.read_bytes()
        for p in docs.glob("*cacheconfig*")
        if sha256_bytes(p.read_bytes()) == config_entry["digest"]
    )
    for entry in index["manifests"][:-1]:
        registry.seed_placeholder_blob(repo, entry["digest"])  # inspected, never pulled
    ref = Reference.parse(f"{registry.host}/{repo}:latest")
    with RegistryClient() as client:
        client.push_blob(
            ref,
            Descriptor(mt.BUILDKIT_CACHE_CONFIG, config_entry["digest"], len(config_raw)),
            lambda: io.BytesIO(config_raw),
        )
        client.put_manifest(ref, raw, mt.OCI_INDEX)
    assert mason_main(["cache", "inspect", str(ref), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    config = json.loads(config_raw)
    assert summary["records"] == len(config["records"])
    assert summary["recordsWithResults"] == sum(1 for r in config["records"] if r.get("layers"))
    assert summary["totalSize"] == sum(e["size"] for e in index["manifests"][:-1])
    assert all(layer["compression"] == "gzip" for layer in summary["layers"])
