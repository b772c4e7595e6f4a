"""mason.registry.early: a build's pings sent before the HTTP client loads, and the Transport taking
their answers instead of pinging again (start-up, issue 14)."""

from __future__ import annotations

import http.server
from collections.abc import Iterator

import pytest
from tests.support.http_server import serving
from tests.support.registry_server import free_port

from mason.registry.early import ref_host, start_pings
from mason.registry.errors import RegistryError
from mason.registry.transport import Transport


class _Server(http.server.ThreadingHTTPServer):
    status = 200
    challenge = ""
    pings = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        if self.path == "/v2/":
            self.server.pings += 1
            self.send_response(self.server.status)
            if self.server.challenge:
                self.send_header("WWW-Authenticate", self.server.challenge)
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    with serving(srv):
        yield srv


def _host(srv: _Server) -> str:
    return f"127.0.0.1:{srv.server_address[1]}"


@pytest.mark.parametrize(
    ("ref", "host"),
    [
        ("127.0.0.1:5000/cache:tag", "127.0.0.1:5000"),
        ("localhost/app", "localhost"),
        ("ghcr.io/org/app@sha256:" + "0" * 64, "ghcr.io"),
        ("busybox", "registry-1.docker.io"),
        ("library/busybox:1.36", "registry-1.docker.io"),
        ("docker.io/library/busybox", "registry-1.docker.io"),
        ("${REGISTRY}/app", None),
        ("evil.io\r\nX-Injected:1/app", None),
        ("", None),
    ],
)
def test_ref_host_names_the_registry_to_ping(ref: str, host: str | None) -> None:
    assert ref_host(ref) == host


def test_transport_takes_the_early_answer_instead_of_pinging_again(server: _Server) -> None:
    server.status, server.challenge = 401, 'Bearer realm="http://127.0.0.1:1/token",service="r"'
    host = _host(server)
    pings = start_pings([host, host])  # one ping per host
    assert pings is not None
    transport = Transport(early=pings)
    try:
        assert transport.base_url(host) == f"http://{host}"
        assert transport.base_url(host) == f"http://{host}"
    finally:
        transport.close()
    assert server.pings == 1
    assert transport.auth.knows(host)  # the 401's challenge was learnt from the early answer
    assert pings.made_context() is None  # plain HTTP on loopback: no CA bundle loaded


def test_an_unusable_answer_leaves_the_ping_and_its_error_to_the_transport(
    server: _Server,
) -> None:
    server.status = 404  # not a registry
    host = _host(server)
    pings = start_pings([host])
    transport = Transport(early=pings)
    try:
        with pytest.raises(RegistryError, match="does not implement the registry v2 API"):
            transport.base_url(host)
    finally:
        transport.close()
    assert server.pings == 2  # the early ping, then the Transport's own


def test_nothing_listening_gives_no_answer_and_loads_no_ca_bundle() -> None:
    host = f"127.0.0.1:{free_port()}"
    pings = start_pings([host])
    assert pings is not None
    assert pings.take(host) is None
    assert pings.made_context() is None


def test_a_proxy_in_the_environment_sends_no_early_ping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert start_pings(["127.0.0.1:5000"]) is None
