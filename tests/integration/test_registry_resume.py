"""Resumed transfers against the real CNCF registry behind a TCP proxy that breaks connections
(issue 9, item 12).

The proxy (127.0.0.1, one request per connection: it asks the registry for ``Connection:
close``) cuts every blob GET's response after N body bytes, and resets every k-th PATCH
before the registry sees it, as a flaky network or middlebox would. A download then goes
on with ``Range`` (206 from the registry) from the byte it reached; an upload asks the
registry where the session stands (``GET`` on it) and goes on from there in the same
session.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.support.registry_server import RegistryServer

from mason.digest import sha256_bytes
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.reference import Reference
from mason.registry.client import RegistryClient
from mason.registry.transport import RetryPolicy

_BLOB_GET = re.compile(rb"^GET /v2/\S+/blobs/sha256:[0-9a-f]{64} ")


@dataclass
class _Seen:
    request_line: str
    range: str | None
    status: str = ""
    reset: bool = False


@dataclass
class CuttingProxy:
    """Relays 127.0.0.1:port to ``upstream``; breaks blob GETs and PATCHes as configured."""

    upstream: tuple[str, int]
    cut_get_after: int | None = None
    reset_patch_every: int | None = None
    #: PATCH numbers (1-based) whose body is cut half way, after the registry got the first half
    cut_patch_body: set[int] = field(default_factory=set)
    seen: list[_Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._patches = 0
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed = True
        self._server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            head, rest = _read_head(client)
            if head is None:
                return
            line = head.split(b"\r\n", 1)[0]
            rng = re.search(rb"\r\nRange: *([^\r]*)", head, re.IGNORECASE)
            seen = _Seen(line.decode(), rng.group(1).decode() if rng else None)
            half_body = False
            with self._lock:
                self.seen.append(seen)
                if line.startswith(b"PATCH "):
                    self._patches += 1
                    seen.reset = bool(
                        self.reset_patch_every and self._patches % self.reset_patch_every == 0
                    )
                    half_body = self._patches in self.cut_patch_body
            if seen.reset:
                _reset(client)  # the registry never sees this PATCH
                return
            cut = self.cut_get_after if _BLOB_GET.match(line) else None
            body = _read_body(client, head, rest)  # all of it first: no second thread on the socket
            with socket.create_connection(self.upstream) as upstream:
                if half_body:
                    seen.reset = True
                    upstream.sendall(_connection_close(head) + body[: len(body) // 2])
                    _reset(upstream)
                    _reset(client)
                    return
                upstream.sendall(_connection_close(head) + body)
                self._relay_response(upstream, client, cut, seen)

    def _relay_response(
        self, upstream: socket.socket, client: socket.socket, cut: int | None, seen: _Seen
    ) -> None:
        head, body = _read_head(upstream)
        if head is None:
            return
        seen.status = head.split(b" ", 2)[1].decode()
        client.sendall(head)
        sent = 0
        while True:
            if cut is not None and sent + len(body) > cut:
                client.sendall(body[: cut - sent])
                seen.reset = True
                _reset(client)
                return
            client.sendall(body)
            sent += len(body)
            try:
                body = upstream.recv(65536)
            except ConnectionResetError:  # the registry closed with our request's rest unread
                return
            if not body:
                return


def _read_head(sock: socket.socket) -> tuple[bytes | None, bytes]:
    """Bytes up to and including the blank line after the headers, and what followed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
        if not data[:1].isalpha():
            return None, b""  # a TLS handshake (the client tries HTTPS first): refuse at once
    end = data.index(b"\r\n\r\n") + 4
    return data[:end], data[end:]


def _connection_close(head: bytes) -> bytes:
    lines = [ln for ln in head[:-4].split(b"\r\n") if not ln.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"


def _read_body(sock: socket.socket, head: bytes, body: bytes) -> bytes:
    """The request body (``Content-Length``; the client sends no chunked bodies here)."""
    match = re.search(rb"\r\nContent-Length: *(\d+)", head, re.IGNORECASE)
    length = int(match.group(1)) if match else 0
    parts = [body]
    have = len(body)
    while have < length:
        chunk = sock.recv(min(1 << 20, length - have))
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a middlebox that drops the connection."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[CuttingProxy]:
    host, port = registry.host.rsplit(":", 1)
    p = CuttingProxy((host, int(port)))
    yield p
    p.close()


def _desc(data: bytes) -> Descriptor:
    return Descriptor(mt.OCI_LAYER, sha256_bytes(data), len(data))


def test_download_cut_every_300k_resumes_with_range(
    registry: RegistryServer, proxy: CuttingProxy, tmp_path: Path
) -> None:
    data = os.urandom(1_000_000)
    desc = _desc(data)
    with RegistryClient() as direct:
        direct.push_blob(
            Reference.parse(f"{registry.host}/resume/dl:1"), desc, lambda: io.BytesIO(data)
        )
    proxy.cut_get_after = 300_000
    with RegistryClient(sleep=lambda _s: None, retry=RetryPolicy(attempts=3)) as client:
        client.fetch_blob(Reference.parse(f"{proxy.host}/resume/dl:1"), desc, tmp_path / "blob")
    assert (tmp_path / "blob").read_bytes() == data
    gets = [
        s
        for s in proxy.seen
        if s.request_line.startswith("GET ") and "/blobs/sha256:" in s.request_line
    ]
    assert (gets[0].range, gets[0].status, gets[0].reset) == (None, "200", True)
    # each resumed GET starts where the one before broke off (what reached the client before
    # the reset: up to 300000 bytes, less when the RST overtook data in flight)
    starts = [int(re.fullmatch(r"bytes=(\d+)-", s.range or "")[1]) for s in gets[1:]]  # type: ignore[index]
    assert all(s.status == "206" for s in gets[1:])
    assert 0 < starts[0] <= 300_000 and all(
        0 < b - a <= 300_000 for a, b in itertools.pairwise(starts)
    )
    assert [s.reset for s in gets] == [True] * (len(gets) - 1) + [False]
    print(f"resumed at {starts}")


def test_chunked_upload_with_every_4th_patch_reset_finishes(
    registry: RegistryServer, proxy: CuttingProxy
) -> None:
    chunk = 256 * 1024
    data = os.urandom(12 * chunk + 1000)  # 13 PATCHes without breaks
    desc = _desc(data)
    proxy.reset_patch_every = 4
    target = Reference.parse(f"{proxy.host}/resume/ul:1")
    with RegistryClient(sleep=lambda _s: None, chunk_threshold=chunk, chunk_size=chunk) as client:
        assert client.push_blob_outcome(target, desc, lambda: io.BytesIO(data)) == "uploaded"
    with (
        RegistryClient() as direct,
        direct.open_blob(Reference.parse(f"{registry.host}/resume/ul:1"), desc) as f,
    ):
        assert f.read() == data
    lines = [s.request_line.split(" ")[0] for s in proxy.seen]
    assert lines.count("POST") == 1  # one session from start to end: nothing started over
    patches = [s for s in proxy.seen if s.request_line.startswith("PATCH ")]
    assert sum(s.reset for s in patches) == 4 and len(patches) == 13 + 4
    assert lines.count("GET") == 1 + 4  # the ping, then a status query after each reset
    print("PATCH ranges:", [s.request_line for s in patches if s.reset])


def test_patch_cut_mid_body_starts_a_new_session(
    registry: RegistryServer, proxy: CuttingProxy
) -> None:
    """The CNCF registry keeps the half body it got and then refuses the session (its offset
    check): the upload starts over in a new session and still finishes."""
    chunk = 256 * 1024
    data = os.urandom(4 * chunk)
    desc = _desc(data)
    proxy.cut_patch_body = {3}
    target = Reference.parse(f"{proxy.host}/resume/mid:1")
    with RegistryClient(sleep=lambda _s: None, chunk_threshold=chunk, chunk_size=chunk) as client:
        assert client.push_blob_outcome(target, desc, lambda: io.BytesIO(data)) == "uploaded"
    with (
        RegistryClient() as direct,
        direct.open_blob(Reference.parse(f"{registry.host}/resume/mid:1"), desc) as f,
    ):
        assert f.read() == data
    statuses = [(s.request_line.split(" ")[0], s.status) for s in proxy.seen]
    assert statuses.count(("POST", "202")) == 2
    print(statuses)
