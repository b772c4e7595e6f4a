"""mason.registry.wire against real sockets on 127.0.0.1: keep-alive reuse (also under
concurrency), request bodies (bytes, files, chunked), bodies that break off, TLS, and proxies
from the environment (absolute-form requests for HTTP, CONNECT tunnels for HTTPS)."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tests.support.http_server import serving
from tests.support.registry_server import _make_tls

from mason.registry.wire import (
    ConnectError,
    Headers,
    Pool,
    ReadError,
    Request,
    TransportError,
    with_params,
)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        path = urlsplit(self.path).path  # a proxied request names the whole URL
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization")))
        if path == "/short":  # promises 100 bytes, sends 10, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.close_connection = True
            return
        body = f"{path} {self.headers.get('Accept-Encoding', '-')}".encode()
        self._answer(200, body, hang_up=path == "/hang-up")

    def do_PUT(self) -> None:
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization")))
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = self._read_chunked()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._answer(201, f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode())

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "12345")  # no body follows a HEAD
        self.end_headers()

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while size := int(self.rfile.readline().strip(), 16):
            out += self.rfile.read(size)
            self.rfile.readline()
        self.rfile.readline()
        return bytes(out)

    def _answer(self, status: int, body: bytes, hang_up: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = hang_up  # without saying so: the client finds out later

    def log_message(self, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str, str | None]] = []
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


def _serve(context: ssl.SSLContext | None = None) -> Iterator[_Server]:
    with serving(_Server(context)) as server:
        yield server


@pytest.fixture
def server() -> Iterator[_Server]:
    yield from _serve()


def _no_tls(_verified: bool) -> ssl.SSLContext:
    raise AssertionError("plain HTTP must not ask for a TLS context")


def test_sequential_requests_reuse_one_connection(server: _Server) -> None:
    pool = Pool(_no_tls)
    for i in range(5):
        with pool.send(Request("GET", f"http://{server.host}/echo/{i}")) as response:
            # no content coding asked for: bodies arrive as stored
            assert response.read() == f"/echo/{i} -".encode()
    assert pool.connections_made == 1
    pool.close()


def test_an_unread_body_is_not_left_on_a_reused_connection(server: _Server) -> None:
    pool = Pool(_no_tls)
    pool.send(Request("GET", f"http://{server.host}/first")).close()  # closed unread
    with pool.send(Request("GET", f"http://{server.host}/second")) as response:
        assert response.read() == b"/second -"
    assert pool.connections_made == 2
    with pool.send(Request("HEAD", f"http://{server.host}/head")) as response:
        assert response.read() == b"" and response.headers["content-length"] == "12345"
    with pool.send(Request("GET", f"http://{server.host}/third")) as response:
        assert response.read() == b"/third -"  # the HEAD left the connection reusable
    assert pool.connections_made == 2
    pool.close()


def test_concurrent_requests_each_get_their_own_answer_on_few_connections(
    server: _Server,
) -> None:
    pool = Pool(_no_tls, max_idle=4)

    def fetch(i: int) -> bytes:
        if i % 3 == 0:
            body = f"upload {i}".encode() * 1000
            with pool.send(Request("PUT", f"http://{server.host}/u/{i}", content=body)) as r:
                assert r.status_code == 201
                return r.read()
        with pool.send(Request("GET", f"http://{server.host}/echo/{i}")) as response:
            return response.read()

    with ThreadPoolExecutor(max_workers=4) as threads:
        answers = list(threads.map(fetch, range(200)))
    for i, answer in enumerate(answers):
        if i % 3 == 0:
            body = f"upload {i}".encode() * 1000
            assert answer == f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
        else:
            assert answer == f"/echo/{i} -".encode()
    # one connection per thread at most is ever open at once; kept idle ones are reused
    assert pool.connections_made <= 8
    pool.close()


def _put(pool: Pool, host: str, content: object, headers: dict[str, str] | None = None) -> bytes:
    request = Request("PUT", f"http://{host}/upload", headers, content)  # type: ignore[arg-type]
    with pool.send(request) as response:
        return response.read()


def test_request_bodies_bytes_file_and_chunked(server: _Server, tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # over 2 MiB: several pieces
    expected = f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode()
    pool = Pool(_no_tls)
    assert _put(pool, server.host, data) == expected
    path = tmp_path / "blob"
    path.write_bytes(b"skipped" + data)
    with path.open("rb") as f:  # a real file from its position: sendfile
        f.seek(7)
        assert _put(pool, server.host, f, {"Content-Length": str(len(data))}) == expected
    stream = io.BytesIO(data)  # a file object without a descriptor: read in pieces
    assert _put(pool, server.host, stream, {"Content-Length": str(len(data))}) == expected
    pieces = [data[i : i + 70000] for i in range(0, len(data), 70000)]
    assert _put(pool, server.host, iter(pieces)) == expected  # no length: chunked
    assert _put(pool, server.host, None) == f"0 {hashlib.sha256(b'').hexdigest()}".encode()
    pool.close()


def test_a_body_shorter_than_its_content_length_is_not_sent(server: _Server) -> None:
    pool = Pool(_no_tls)
    with pytest.raises(TransportError, match="Content-Length"):
        _put(pool, server.host, iter([b"abc"]), {"Content-Length": "10"})
    pool.close()


def test_a_response_body_that_breaks_off_raises_read_error(server: _Server) -> None:
    pool = Pool(_no_tls)
    response = pool.send(Request("GET", f"http://{server.host}/short"))
    with pytest.raises(ReadError, match="90 byte"):
        response.read()
    response.close()
    assert response.num_bytes_downloaded == 10
    pool.close()


def test_a_connection_the_server_closed_while_idle_is_replaced(server: _Server) -> None:
    pool = Pool(_no_tls)
    with pool.send(Request("GET", f"http://{server.host}/hang-up")) as response:
        assert response.read() == b"/hang-up -"
    with pool.send(Request("GET", f"http://{server.host}/after")) as response:
        assert response.read() == b"/after -"
    assert pool.connections_made == 2
    pool.close()


def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        pool = Pool(_no_tls)
        with pytest.raises(ConnectError, match="refused"):
            pool.send(Request("GET", f"http://127.0.0.1:{port}/v2/"))


def test_credentials_in_the_url_become_basic_auth(server: _Server) -> None:
    pool = Pool(_no_tls)
    with pool.send(Request("GET", f"http://us%40er:p%3Ass@{server.host}/private")) as response:
        assert response.status_code == 200
    assert server.seen[-1] == ("GET", "/private", "Basic dXNAZXI6cDpzcw==")  # us@er:p:ss
    pool.close()


def test_headers_and_params() -> None:
    headers = Headers([("WWW-Authenticate", "Bearer a"), ("www-authenticate", "Basic b")])
    assert headers["www-authenticate"] == "Bearer a, Basic b" and "Www-Authenticate" in headers
    assert "secret" not in repr(Headers({"Authorization": "secret"}))
    url = "https://r/v2/a/blobs/uploads/1?_state=a%2Bb%3D&x=1"
    assert with_params(url, {"digest": "sha256:0"}) == f"{url}&digest=sha256%3A0"
    assert with_params("https://r/p?x=1&y=2", {"x": "3"}) == "https://r/p?y=2&x=3"


# -- TLS and proxies -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return _make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(tls_files: tuple[Path, Path, Path]) -> Iterator[_Server]:
    _, cert, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    yield from _serve(context)


def _trusting(ca: Path) -> Callable[[bool], ssl.SSLContext]:
    def context_for(verified: bool) -> ssl.SSLContext:
        assert verified
        return ssl.create_default_context(cafile=str(ca))

    return context_for


def test_tls_verified_against_the_given_ca(
    tls_server: _Server, tls_files: tuple[Path, Path, Path]
) -> None:
    pool = Pool(_trusting(tls_files[0]))
    with pool.send(Request("GET", f"https://{tls_server.host}/tls")) as response:
        assert response.read() == b"/tls -"
    pool.close()
    untrusting = Pool(lambda _v: ssl.create_default_context())
    with pytest.raises(ConnectError) as err:
        untrusting.send(Request("GET", f"https://{tls_server.host}/tls"))
    assert isinstance(err.value.__cause__, ssl.SSLCertVerificationError)


# Runs in a fresh interpreter: wire loads without ssl nor http.client (with email's parser),
# and HTTPS still works once a TLS context is asked for (the context's import of ssl is the first).
_WITHOUT_SSL = """
import sys
from mason.registry.wire import Pool, Request
assert not {"ssl", "http.client", "email"} & set(sys.modules), sorted(sys.modules)
def context_for(verified):
    import ssl
    return ssl.create_default_context(cafile=sys.argv[2])
pool = Pool(context_for)
with pool.send(Request("GET", sys.argv[1])) as response:
    sys.stdout.write(response.read().decode())
"""


def test_wire_loads_without_ssl_and_still_speaks_tls(
    tls_server: _Server, tls_files: tuple[Path, Path, Path]
) -> None:
    url = f"https://{tls_server.host}/fresh"
    cmd = [sys.executable, "-c", _WITHOUT_SSL, url, str(tls_files[0])]
    src = str(Path(__file__).resolve().parents[3] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "/fresh -"


class _Proxy:
    """A forwarding proxy on loopback: CONNECT tunnels and absolute-form requests, recorded."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.lines: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(65536)
        line = head.split(b"\r\n", 1)[0].decode()
        self.lines.append(line)
        method, target, _ = line.split(" ")
        if method == "CONNECT":
            upstream = socket.create_connection(_address(target))
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            rest = head.split(b"\r\n\r\n", 1)[1]
        else:
            upstream = socket.create_connection(_address(urlsplit(target).netloc))
            rest = head
        upstream.sendall(rest)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)


def _address(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        dst.close()


def test_http_through_a_proxy_from_the_environment(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = _Proxy()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.setenv("NO_PROXY", "example.org")
    pool = Pool(_no_tls)
    with pool.send(Request("GET", f"http://{server.host}/via")) as response:
        assert response.read() == b"/via -"
    assert proxy.lines == [f"GET http://{server.host}/via HTTP/1.1"]
    pool.close()
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    direct = Pool(_no_tls)
    with direct.send(Request("GET", f"http://{server.host}/direct")) as response:
        assert response.read() == b"/direct -"
    assert len(proxy.lines) == 1
    direct.close()


def test_https_through_a_proxy_tunnel(
    tls_server: _Server, tls_files: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = _Proxy()
    monkeypatch.setenv("https_proxy", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    pool = Pool(_trusting(tls_files[0]))
    headers = {"Authorization": "Bearer secret"}
    with pool.send(Request("GET", f"https://{tls_server.host}/t", headers)) as response:
        assert response.read() == b"/t -"
    # the proxy saw the tunnel's target only; the request itself went through TLS
    assert [line.rsplit(" ", 1)[0] for line in proxy.lines] == [f"CONNECT {tls_server.host}"]
    assert tls_server.seen == [("GET", "/t", "Bearer secret")]
    pool.close()


def test_an_answer_sent_before_the_body_was_read_is_still_seen() -> None:
    # a proxy's 413 for a body over its limit: it answers after the headers and hangs up
    # without reading the body, so sending the rest of it fails
    listener = socket.create_server(("127.0.0.1", 0))

    def refuse() -> None:
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 0\r\n\r\n")
            threading.Event().wait(0.3)

    threading.Thread(target=refuse, daemon=True).start()
    pool = Pool(_no_tls)
    body = b"x" * (64 << 20)  # more than the socket buffers hold
    host = f"127.0.0.1:{listener.getsockname()[1]}"
    with pool.send(Request("PUT", f"http://{host}/upload", content=body)) as response:
        assert response.status_code == 413
    listener.close()
    pool.close()


def _scripted(answers: list[bytes]) -> tuple[str, list[bytes]]:
    """A server on loopback answering the requests of one connection with ``answers`` in
    turn (each sent whole once a request's head arrived), then closing it; its host, and the
    request heads it received."""
    listener = socket.create_server(("127.0.0.1", 0))
    heads: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            buffered = b""
            for answer in answers:
                while b"\r\n\r\n" not in buffered:
                    got = conn.recv(65536)
                    if not got:
                        return
                    buffered += got
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                heads.append(head)
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return f"127.0.0.1:{listener.getsockname()[1]}", heads


def test_response_framing_chunked_folded_continue_and_keep_alive() -> None:
    host, heads = _scripted(
        [
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Long: one\r\n two\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: t\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nETag: a\r\nETag: b\r\n\r\n",  # HEAD: no body
        ]
    )
    pool = Pool(_no_tls)
    with pool.send(Request("GET", f"http://{host}/a")) as response:
        assert response.read() == b"hello world"
        assert response.headers["x-long"] == "one two"
    with pool.send(Request("DELETE", f"http://{host}/b")) as response:
        assert (response.status_code, response.reason_phrase, response.read()) == (
            204,
            "No Content",
            b"",
        )
    with pool.send(Request("HEAD", f"http://{host}/c")) as response:
        assert response.read() == b"" and response.headers["ETag"] == "a, b"
    assert pool.connections_made == 1  # all three on one kept-alive connection
    assert heads[0].split(b"\r\n")[:2] == [b"GET /a HTTP/1.1", f"Host: {host}".encode()]
    pool.close()


def test_a_body_delimited_by_the_connection_end_is_read_to_it() -> None:
    host, _ = _scripted([b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 100_000])
    pool = Pool(_no_tls)
    with pool.send(Request("GET", f"http://{host}/")) as response:
        assert response.read() == b"x" * 100_000
    pool.close()


def test_a_response_that_breaks_off_in_a_chunk_or_is_no_http_raises_read_error() -> None:
    for answer in (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort",
        b"SSH-2.0-OpenSSH_9.6\r\n",
    ):
        host, _ = _scripted([answer])
        pool = Pool(_no_tls)
        with pytest.raises(ReadError):
            pool.send(Request("GET", f"http://{host}/")).read()
        pool.close()


def test_a_header_with_a_line_break_is_never_sent() -> None:
    host, heads = _scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    pool = Pool(_no_tls)
    with pytest.raises(TransportError, match="invalid request"):
        pool.send(Request("GET", f"http://{host}/", headers={"X": "a\r\nInjected: 1"}))
    pool.close()
    assert heads == []
