"""mason.registry.prefetch: a build's first documents read while the engine imports, and the
registry client taking them, verified as its own answers are (start-up, issue 14)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.http_server import serving

from mason.cache.options import parse_cache_from
from mason.cli.early_reads import _base_images, start_reads
from mason.digest import sha256_bytes
from mason.engine.options import BuildOptions
from mason.errors import DigestMismatchError
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.platform import Platform
from mason.oci.reference import Reference
from mason.registry.client import RegistryClient
from mason.registry.early import EarlyPings, start_pings
from mason.registry.errors import RegistryNotFoundError
from mason.registry.prefetch import Prefetch
from mason.registry.regconf import load_registries_conf

_ACCEPT = ", ".join(mt.MANIFEST_MEDIA_TYPES)


class _Server(http.server.ThreadingHTTPServer):
    ping_status = 200
    honours_range = True  # a blob GET with a Range answers 206 with those bytes
    #: set: ranged GETs are answered only once it is set (a server stuck on pipelined requests)
    ranges_released: threading.Event | None = None
    #: path -> (status, headers, body)
    documents: dict[str, tuple[int, dict[str, str], bytes]]
    requests: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # kept-alive connections, as registries serve them
    server: _Server

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.path == "/v2/":
            status, headers, body = self.server.ping_status, {}, b""
            if status == 401:
                headers = {"WWW-Authenticate": 'Bearer realm="http://127.0.0.1:1/t",service="r"'}
        else:
            status, headers, body = self.server.documents.get(self.path, (404, {}, b"{}"))
        wanted = self.headers.get("Range", "")
        if wanted and self.server.ranges_released is not None:
            self.server.ranges_released.wait(10)
        if wanted and status == 200 and self.server.honours_range:
            self.server.requests[-1] += f" {wanted}"
            end = min(int(wanted.rpartition("-")[2]), len(body) - 1)
            headers = {**headers, "Content-Range": f"bytes 0-{end}/{len(body)}"}
            status, body = 206, body[: end + 1]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.server.requests.append(f"HEAD {self.path}")
        status, _, body = self.server.documents.get(self.path, (404, {}, b"{}"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.documents, srv.requests = {}, []
    with serving(srv):
        yield srv


def _host(srv: _Server) -> str:
    return f"127.0.0.1:{srv.server_address[1]}"


def _image(
    srv: _Server,
    repo: str,
    tag: str,
    config: bytes = b'{"rootfs":{}}',
    layers: tuple[bytes, ...] = (),
) -> Descriptor:
    """An image manifest under ``tag``, its config and ``layers``; the config's descriptor."""
    cfg = Descriptor(mt.OCI_CONFIG, sha256_bytes(config), len(config))
    srv.documents[f"/v2/{repo}/blobs/{cfg.digest}"] = (200, {}, config)
    for layer in layers:
        srv.documents[f"/v2/{repo}/blobs/{sha256_bytes(layer)}"] = (200, {}, layer)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": cfg.media_type, "digest": cfg.digest, "size": cfg.size},
            "layers": [
                {"mediaType": mt.OCI_LAYER_GZIP, "digest": sha256_bytes(b), "size": len(b)}
                for b in layers
            ],
        }
    ).encode()
    headers = {"Content-Type": mt.OCI_MANIFEST, "Docker-Content-Digest": sha256_bytes(manifest)}
    srv.documents[f"/v2/{repo}/manifests/{tag}"] = (200, headers, manifest)
    srv.documents[f"/v2/{repo}/manifests/{sha256_bytes(manifest)}"] = (200, headers, manifest)
    return cfg


def _prefetch(srv: _Server) -> EarlyPings:
    pings = start_pings([_host(srv)])
    assert pings is not None
    pings.prefetch = Prefetch(pings, _ACCEPT)
    return pings


def _reads_ended(before: set[threading.Thread]) -> None:
    """Until every prefetch thread started since ``before`` has ended: what it did not read
    by then, it never will (a check of what was not asked for that cannot pass early)."""
    for thread in set(threading.enumerate()) - before:
        if thread.name == "prefetch":
            thread.join(10)
            assert not thread.is_alive(), "a prefetch thread did not end"


def _wait(pings: EarlyPings, host: str, path: str, variant: str = "") -> None:
    """Until the early read of ``path`` in ``variant`` is settled (its answer left for the
    client)."""
    assert pings.prefetch is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        expected = pings.prefetch._expected.get((host, path, variant))
        if expected is not None and expected.wait(0.01):
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} was not read early")


def test_the_client_takes_what_was_read_early_without_asking_again(server: _Server) -> None:
    cfg = _image(server, "app", "v1")
    pings, host = _prefetch(server), _host(server)
    assert pings.prefetch is not None
    pings.prefetch.start(host, "app", "v1")
    _wait(pings, host, f"/v2/app/blobs/{cfg.digest}")
    early = list(server.requests)
    assert early == ["/v2/", "/v2/app/manifests/v1", f"/v2/app/blobs/{cfg.digest}"]
    with RegistryClient(early=pings) as client:
        ref = Reference.parse(f"{host}/app:v1")
        fetched = client.prefetched_manifest(ref)
        assert fetched is not None and fetched.media_type == mt.OCI_MANIFEST
        with client.open_blob(ref, cfg) as blob:
            assert blob.read() == b'{"rootfs":{}}'
        assert server.requests == early  # nothing asked twice (the ping's answer taken too)
        assert client.prefetched_manifest(ref) is None  # once
        assert client.fetch_manifest(ref).raw == fetched.raw  # then asked for
    assert server.requests[-1] == "/v2/app/manifests/v1"


def test_an_index_gives_the_platforms_manifest_and_its_config(server: _Server) -> None:
    cfg = _image(server, "app", "amd64")
    _, _, child = server.documents["/v2/app/manifests/amd64"]
    other = _image(server, "app", "arm64", b'{"other":1}')
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": sha256_bytes(server.documents["/v2/app/manifests/arm64"][2]),
                    "size": 10,
                    "platform": {"os": "linux", "architecture": "arm64"},
                },
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": sha256_bytes(child),
                    "size": len(child),
                    "platform": {"os": "linux", "architecture": "amd64"},
                },
            ],
        }
    ).encode()
    server.documents["/v2/app/manifests/multi"] = (200, {"Content-Type": mt.OCI_INDEX}, index)
    pings, host = _prefetch(server), _host(server)
    assert pings.prefetch is not None
    pings.prefetch.start(host, "app", "multi", "linux/amd64")
    _wait(pings, host, f"/v2/app/blobs/{cfg.digest}")
    assert f"/v2/app/blobs/{other.digest}" not in server.requests
    early = list(server.requests)
    with RegistryClient(early=pings) as client:
        ref = Reference.parse(f"{host}/app:multi")
        assert client.fetch_manifest(ref).raw == index
        assert client.fetch_manifest(ref.with_digest(sha256_bytes(child))).raw == child
        with client.open_blob(ref, cfg) as blob:
            assert blob.read() == b'{"rootfs":{}}'
    assert server.requests == early


def test_a_cache_index_gives_its_cache_config(server: _Server) -> None:
    config = b'{"layers":[],"records":[]}'
    digest = sha256_bytes(config)
    server.documents[f"/v2/cache/blobs/{digest}"] = (200, {}, config)
    entry = {"mediaType": mt.BUILDKIT_CACHE_CONFIG, "digest": digest, "size": len(config)}
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [entry]})
    server.documents["/v2/cache/manifests/latest"] = (200, {}, index.encode())
    pings, host = _prefetch(server), _host(server)
    assert pings.prefetch is not None
    pings.prefetch.start(host, "cache", "latest")
    _wait(pings, host, f"/v2/cache/blobs/{digest}")
    assert server.requests[-1] == f"/v2/cache/blobs/{digest}"


def _cache_with_layers(srv: _Server, count: int) -> list[Descriptor]:
    """A cache manifest (the image-manifest form) with ``count`` layers; their descriptors."""
    config = b'{"layers":[],"records":[]}'
    srv.documents[f"/v2/cache/blobs/{sha256_bytes(config)}"] = (200, {}, config)
    layers = []
    for i in range(count):
        blob = b"\x1f\x8b" + bytes([i % 256]) * 700
        layers.append(Descriptor(mt.OCI_LAYER_GZIP, sha256_bytes(blob), len(blob)))
        srv.documents[f"/v2/cache/blobs/{layers[-1].digest}"] = (200, {}, blob)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {
            "mediaType": mt.BUILDKIT_CACHE_CONFIG,
            "digest": sha256_bytes(config),
            "size": len(config),
        },
        "layers": [{"mediaType": d.media_type, "digest": d.digest, "size": d.size} for d in layers],
    }
    srv.documents["/v2/cache/manifests/latest"] = (200, {}, json.dumps(manifest).encode())
    return layers


def _peeking(server: _Server) -> tuple[EarlyPings, str]:
    """Pings and a prefetch of the server's cache ref that reads its layers' first 512 bytes."""
    pings, host = _prefetch(server), _host(server)
    assert pings.prefetch is not None
    pings.prefetch.peek_bytes = 512
    pings.prefetch.start(host, "cache", "latest")
    return pings, host


def test_a_caches_layers_first_bytes_are_read_early(server: _Server) -> None:
    layers = _cache_with_layers(server, 3)
    pings, host = _peeking(server)
    for layer in layers:
        _wait(pings, host, f"/v2/cache/blobs/{layer.digest}", "bytes=0-511")
    early = list(server.requests)
    assert early[-3:] == [f"/v2/cache/blobs/{d.digest} bytes=0-511" for d in layers]
    with RegistryClient(early=pings) as client:
        ref = Reference.parse(f"{host}/cache:latest")
        heads = [client.peek_blob(ref, d, 512) for d in layers]
        assert heads == [server.documents[f"/v2/cache/blobs/{d.digest}"][2][:512] for d in layers]
        assert server.requests == early  # taken, not asked again
        assert client.peek_blob(ref, layers[0], 512) is not None  # once: then asked for
        assert client.peek_blob(ref, layers[1], 100) is not None  # another range: asked for
    assert len(server.requests) == len(early) + 2


def test_a_blob_seen_in_a_repository_is_not_asked_about_again(server: _Server) -> None:
    layers = _cache_with_layers(server, 2)
    pings, host = _peeking(server)
    _wait(pings, host, f"/v2/cache/blobs/{layers[1].digest}", "bytes=0-511")
    ref = Reference.parse(f"{host}/cache:latest")
    with RegistryClient(early=pings) as client:
        assert client.peek_blob(ref, layers[0], 512) is not None
        assert client.blob_exists(ref, layers[0].digest, for_push=True)  # peeked: no HEAD
        assert f"HEAD /v2/cache/blobs/{layers[0].digest}" not in server.requests
        assert client.blob_exists(ref, layers[1].digest, for_push=True)  # not taken: asked
        assert client.blob_exists(ref, layers[1].digest, for_push=True)  # then known
        other = Reference.parse(f"{host}/other:latest")
        assert not client.blob_exists(other, layers[0].digest)  # another repository: asked
    heads = [r for r in server.requests if r.startswith("HEAD ")]
    assert heads == [
        f"HEAD /v2/cache/blobs/{layers[1].digest}",
        f"HEAD /v2/other/blobs/{layers[0].digest}",
    ]


def test_a_stalled_connection_costs_one_wait_not_one_per_answer(server: _Server) -> None:
    server.ranges_released = threading.Event()
    layers = _cache_with_layers(server, 3)
    pings, host = _peeking(server)
    prefetch = pings.prefetch
    assert prefetch is not None
    try:
        paths = [f"/v2/cache/blobs/{d.digest}" for d in layers]
        deadline = time.monotonic() + 10
        while (host, paths[-1], "bytes=0-511") not in prefetch._expected:
            assert time.monotonic() < deadline, "the layers were never expected"
            time.sleep(0.01)
        start = time.monotonic()
        assert prefetch.take(host, paths[0], "bytes=0-511", wait=0.3) is None  # waited in vain
        assert time.monotonic() - start >= 0.3
        start = time.monotonic()
        assert prefetch.take(host, paths[1], "bytes=0-511", wait=5) is None  # at once
        assert prefetch.take(host, paths[2], "bytes=0-511", wait=5) is None
        assert time.monotonic() - start < 1
    finally:
        server.ranges_released.set()


def test_a_registry_ignoring_ranges_leaves_the_first_bytes_to_the_client(server: _Server) -> None:
    server.honours_range = False
    layers = _cache_with_layers(server, 2)
    pings, host = _peeking(server)
    _wait(pings, host, f"/v2/cache/blobs/{layers[1].digest}", "bytes=0-511")
    with RegistryClient(early=pings) as client:
        head = client.peek_blob(Reference.parse(f"{host}/cache:latest"), layers[0], 512)
    assert head == server.documents[f"/v2/cache/blobs/{layers[0].digest}"][2][:512]
    assert server.requests.count(f"/v2/cache/blobs/{layers[0].digest}") == 2


def test_only_the_first_layers_of_a_large_cache_are_read_early(server: _Server) -> None:
    layers = _cache_with_layers(server, 40)
    pings, host = _peeking(server)
    _wait(pings, host, f"/v2/cache/blobs/{layers[31].digest}", "bytes=0-511")
    peeked = [r for r in server.requests if r.endswith("bytes=0-511")]
    assert peeked == [f"/v2/cache/blobs/{d.digest} bytes=0-511" for d in layers[:32]]


def test_bytes_read_early_are_verified_as_the_clients_own(server: _Server) -> None:
    cfg = _image(server, "app", "v1")
    server.documents[f"/v2/app/blobs/{cfg.digest}"] = (200, {}, b'{"rootfs":{}')  # short
    status, headers, manifest = server.documents["/v2/app/manifests/v1"]
    lying = {**headers, "Docker-Content-Digest": "sha256:" + "0" * 64}
    server.documents["/v2/app/manifests/v1"] = (status, lying, manifest)
    pings, host = _prefetch(server), _host(server)
    assert pings.prefetch is not None
    pings.prefetch.start(host, "app", "v1")
    _wait(pings, host, f"/v2/app/blobs/{cfg.digest}")
    with RegistryClient(early=pings) as client:
        ref = Reference.parse(f"{host}/app:v1")
        with pytest.raises(DigestMismatchError, match=r"manifest .* failed verification"):
            client.fetch_manifest(ref)
        with pytest.raises(DigestMismatchError), client.open_blob(ref, cfg) as blob:
            blob.read()


def test_a_registry_asking_for_credentials_is_read_by_the_client_only(server: _Server) -> None:
    server.ping_status = 401
    _image(server, "app", "v1")
    pings, host = _prefetch(server), _host(server)
    assert pings.prefetch is not None
    pings.prefetch.start(host, "app", "v1")
    assert pings.prefetch.take(host, "/v2/app/manifests/v1", _ACCEPT) is None
    assert server.requests == ["/v2/"]


def test_an_error_answer_is_left_to_the_client_to_report(server: _Server) -> None:
    pings, host = _prefetch(server), _host(server)
    assert pings.prefetch is not None
    pings.prefetch.start(host, "missing", "v1")
    _wait(pings, host, "/v2/missing/manifests/v1", _ACCEPT)
    with RegistryClient(early=pings) as client, pytest.raises(RegistryNotFoundError):
        client.fetch_manifest(Reference.parse(f"{host}/missing:v1"))
    assert server.requests.count("/v2/missing/manifests/v1") == 2


def test_no_answer_for_another_accept_or_a_mirrored_ref(server: _Server, tmp_path: Path) -> None:
    _image(server, "app", "v1")
    pings, host = _prefetch(server), _host(server)
    assert pings.prefetch is not None
    pings.prefetch.start(host, "app", "v1")
    _wait(pings, host, "/v2/app/manifests/v1", _ACCEPT)
    ref = Reference.parse(f"{host}/app:v1")
    with RegistryClient(early=pings) as client:
        assert client.prefetched_manifest(ref, [mt.OCI_INDEX]) is None
    conf = tmp_path / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{host}"\n[[registry.mirror]]\nlocation = "m.lan"\n')
    mirrored = load_registries_conf({"CONTAINERS_REGISTRIES_CONF": str(conf)})
    with RegistryClient(early=pings, registries=mirrored) as client:
        assert client.prefetched_manifest(ref) is None


def test_base_images_as_the_build_plans_them(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "ARG REG=r.lan:5000\nARG TAG\n"
        "FROM ${REG}/base:${TAG} AS build\nRUN true\n"
        "FROM --platform=linux/arm64 r.lan:5000/tool AS tool\n"
        "FROM scratch AS unused\n"
        "FROM build AS final\nCOPY --from=tool / /\n"
    )
    opts = BuildOptions(
        context=tmp_path,
        build_args={"TAG": "1.2"},
        target="final",
        platforms=(Platform.parse("linux/amd64"),),
    )
    images, writes = _base_images(opts)
    assert [(str(ref), platform) for ref, platform in images] == [
        ("r.lan:5000/base:1.2", "linux/amd64"),
        ("r.lan:5000/tool:latest", "linux/arm64"),
    ]
    assert writes  # RUN: the base is unpacked


@pytest.mark.parametrize(
    ("steps", "writes"),
    [
        ('LABEL a=b\nCMD ["x"]\n', False),
        ("COPY --link a /a\n", False),
        ("COPY --link --chmod=755 a /a\n", True),  # --link is ignored with --chmod
        ("WORKDIR /w\n", True),
        ("ADD a /a\n", True),
    ],
)
def test_which_builds_unpack_their_base(tmp_path: Path, steps: str, writes: bool) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM r.lan:5000/base\n{steps}")
    assert _base_images(BuildOptions(context=tmp_path))[1] is writes


def test_a_base_images_layers_are_read_whole_within_the_budget(server: _Server) -> None:
    layers = (b"one" * 300, b"two" * 300, b"three" * 300)
    _image(server, "app", "v1", layers=layers)
    held = {sha256_bytes(layers[2])}  # the build's root has it: not read
    pings, host = _prefetch(server), _host(server)
    pings.prefetch = Prefetch(
        pings, _ACCEPT, layer_budget=len(layers[0]) + len(layers[1]), have=held.__contains__
    )
    before = set(threading.enumerate())
    pings.prefetch.start(host, "app", "v1", "linux/amd64")
    paths = [f"/v2/app/blobs/{sha256_bytes(b)}" for b in layers]
    _wait(pings, host, paths[1])
    _reads_ended(before)
    assert paths[:2] == server.requests[-2:] and paths[2] not in server.requests
    early = list(server.requests)
    with RegistryClient(early=pings) as client:
        ref = Reference.parse(f"{host}/app:v1")
        desc = Descriptor(mt.OCI_LAYER_GZIP, sha256_bytes(layers[0]), len(layers[0]))
        with client.open_blob(ref, desc) as blob:
            assert blob.read() == layers[0]
    assert server.requests == early  # taken from what was read early


def test_layers_over_the_budget_are_left_to_the_build(server: _Server) -> None:
    layers = (b"one" * 300, b"two" * 300)
    cfg = _image(server, "app", "v1", layers=layers)
    pings, host = _prefetch(server), _host(server)
    pings.prefetch = Prefetch(pings, _ACCEPT, layer_budget=len(layers[0]))
    before = set(threading.enumerate())
    pings.prefetch.start(host, "app", "v1", "linux/amd64")
    _wait(pings, host, f"/v2/app/blobs/{cfg.digest}")
    _reads_ended(before)
    assert not any(f"/blobs/{sha256_bytes(b)}" in r for b in layers for r in server.requests)


def test_a_bad_dockerfile_starts_only_the_cache_reads(tmp_path: Path, server: _Server) -> None:
    (tmp_path / "Dockerfile").write_text("FROM\n")
    caches = tuple(parse_cache_from(f"type=registry,ref={_host(server)}/cache"))
    pings = start_reads(BuildOptions(context=tmp_path, cache_from=caches), None)
    assert pings is not None and pings.prefetch is not None
    assert pings.prefetch.take(_host(server), "/v2/cache/manifests/latest", _ACCEPT) is None
    assert "/v2/cache/manifests/latest" in server.requests
    assert start_reads(BuildOptions(context=tmp_path), None) is None  # no registry: nothing


def test_one_budget_serves_every_base_image(server: _Server) -> None:
    first, second = (b"one" * 300,), (b"two" * 300,)
    _image(server, "a", "v1", layers=first)
    cfg = _image(server, "b", "v1", b'{"b":1}', layers=second)
    pings, host = _prefetch(server), _host(server)
    pings.prefetch = Prefetch(pings, _ACCEPT, layer_budget=len(first[0]) + 10)
    before = set(threading.enumerate())
    pings.prefetch.start(host, "a", "v1", "linux/amd64")
    _wait(pings, host, f"/v2/a/blobs/{sha256_bytes(first[0])}")
    pings.prefetch.start(host, "b", "v1", "linux/amd64")
    _wait(pings, host, f"/v2/b/blobs/{cfg.digest}")
    _reads_ended(before)
    assert f"/v2/b/blobs/{sha256_bytes(second[0])}" not in server.requests  # the budget is spent
