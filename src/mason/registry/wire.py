"""HTTP/1.1 on the standard library's ``http.client``: mason's own request, response and error
types, and a thread-safe pool of keep-alive connections.

``mason.registry.transport`` decides what to send (scheme, credentials, retries, redirects);
this module only carries one request and its response. A ``Pool`` keeps a few idle
connections per (scheme, host, port, verification) and lends each to one request at a time;
a connection goes back only once its response was read to the end. TLS contexts are asked
for (``context_for``) when the first HTTPS connection is made, so plain-HTTP traffic never
loads a CA bundle. Proxies come from the environment (``HTTP_PROXY``, ``HTTPS_PROXY``,
``ALL_PROXY``, ``NO_PROXY``, lower case first), HTTPS through a ``CONNECT`` tunnel.
Bodies are sent as they are given (bytes, an iterable of bytes, a binary file; chunked when no
``Content-Length`` is known) and read in large pieces; no content coding is asked for, so
bodies arrive as the server stores them."""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any, TypeGuard
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from mason.registry.early import split_host

if TYPE_CHECKING:
    import ssl


class _NoSSL:
    """A meta path finder refusing ``ssl`` to one thread: that thread's import of ``http.client``
    then leaves out ``HTTPSConnection`` (its ``import ssl`` is in a ``try``), and with it ssl,
    which plain HTTP never needs (~2 ms of start-up). Other threads import ssl as usual."""

    def __init__(self) -> None:
        self._thread = threading.get_ident()

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "ssl" and threading.get_ident() == self._thread:
            raise ImportError("ssl is imported by the first TLS connection (mason.registry.wire)")


def _import_http_client() -> None:
    # sys.meta_path is replaced, not changed in place: a thread iterating it meanwhile keeps
    # its own list. A no-op when http.client (or ssl) is already imported.
    if "http.client" in sys.modules or "ssl" in sys.modules:
        return
    finder = _NoSSL()
    saved = sys.meta_path
    sys.meta_path = [finder, *saved]
    try:
        import http.client  # noqa: F401
    finally:
        sys.meta_path = [f for f in sys.meta_path if f is not finder]


_import_http_client()
import http.client  # noqa: E402

__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "Content",
    "HTTPError",
    "Headers",
    "Pool",
    "ReadError",
    "ReadTimeout",
    "Request",
    "Response",
    "TransportError",
    "with_params",
]

#: what a response body is read in (and a file body sent in): large pieces, few system calls
READ_SIZE = 1 << 20
#: an idle connection older than this is closed rather than reused (the server may have)
KEEPALIVE = 5.0
#: a request body: bytes, an iterable of bytes, or a binary file (read to its end)
Content = bytes | Iterable[bytes] | IO[bytes]


class HTTPError(Exception):
    """A request did not get through: the base of mason's HTTP errors."""


class TransportError(HTTPError):
    """No response arrived, or its body broke off (the connection, not the server's answer)."""


class ConnectError(TransportError):
    """The connection could not be made: refused, unresolvable, a failed TLS handshake."""


class ConnectTimeout(ConnectError):
    """The connection was not made in time."""


class ReadError(TransportError):
    """The connection broke while the request was sent or the response read."""


class ReadTimeout(ReadError):
    """The server sent nothing for longer than the timeout."""


class Headers(Mapping[str, str]):
    """Header fields, looked up without regard to case (names keep the case they came in);
    repeated fields are joined by ", "."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = fields.items() if isinstance(fields, Mapping) else fields
        self._fields: dict[str, tuple[str, str]] = {}
        for name, value in pairs:
            old = self._fields.get(name.lower())
            self._fields[name.lower()] = (
                (name, value) if old is None else (name, f"{old[1]}, {value}")
            )

    def set(self, name: str, value: str) -> None:
        self._fields[name.lower()] = (name, value)

    def setdefault(self, name: str, value: str) -> None:
        self._fields.setdefault(name.lower(), (name, value))

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._fields.values())

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        # the names only: values may be credentials
        return f"Headers({sorted(self)})"


class Request:
    """One request: ``url`` absolute, ``content`` sent as given (see ``Content``)."""

    __slots__ = ("content", "headers", "method", "url")

    def __init__(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        content: Content | None = None,
    ) -> None:
        self.method = method
        self.url = url
        self.headers = Headers(headers or {})
        self.content = content

    def read(self) -> bytes:
        """The whole body (an iterable or file body is consumed, and kept as bytes)."""
        content = self.content
        if content is None or isinstance(content, bytes):
            return content or b""
        data = content.read() if hasattr(content, "read") else b"".join(content)
        self.content = data
        return data

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"


class Response:
    """A response whose body is read on demand: ``iter_bytes`` streams it, ``read`` keeps it.
    ``close`` (or leaving a ``with``) hands a connection whose body was read to the end back
    to its pool, and closes any other."""

    def __init__(
        self,
        status_code: int,
        headers: Headers | Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes | Iterable[bytes] = b"",
        *,
        reason: str = "",
        request: Request | None = None,
        on_close: Callable[[bool], None] | None = None,
    ) -> None:
        self.status_code = status_code
        self.reason_phrase = reason or http.client.responses.get(status_code, "")
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.request = request or Request("GET", "")
        #: body bytes received so far
        self.num_bytes_downloaded = 0
        self._body: Iterator[bytes] = iter((body,) if isinstance(body, bytes) else body)
        self._content: bytes | None = None
        self._ended = False
        self._on_close = on_close

    def iter_bytes(self) -> Iterator[bytes]:
        """The body's pieces as they arrive (``ReadError`` when the connection breaks)."""
        if self._content is not None:
            if self._content:
                yield self._content
            return
        for chunk in self._body:
            if chunk:
                self.num_bytes_downloaded += len(chunk)
                yield chunk
        self._ended = True

    def read(self) -> bytes:
        if self._content is None:
            self._content = b"".join(self.iter_bytes())
        return self._content

    def read_capped(self, cap: int) -> bytes:
        """At most ``cap`` bytes of the body (what arrived before a break); closes the response."""
        if self._content is not None:
            return self._content[:cap]
        chunks: list[bytes] = []
        total = 0
        try:
            for chunk in self.iter_bytes():
                chunks.append(chunk)
                total += len(chunk)
                if total >= cap:
                    break
        except TransportError:
            pass
        finally:
            self.close()
        return b"".join(chunks)[:cap]

    @property
    def content(self) -> bytes:
        return self.read()

    @property
    def text(self) -> str:
        return self.read().decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.read())

    def close(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self._ended or self._content is not None)

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Response {self.status_code} for {self.request.method} {self.request.url}>"


def with_params(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` in its query: added at the end, replacing any of the same name
    (the rest of the query, an upload location's opaque state, is kept as the server wrote it)."""
    if not params:
        return url
    parts = urlsplit(url)
    query = parts.query
    names = {unquote(pair.partition("=")[0]) for pair in query.split("&") if pair}
    if names & set(params):
        kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in params]
        query = urlencode(kept)
    extra = urlencode(list(params.items()))
    query = f"{query}&{extra}" if query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


# -- proxies -------------------------------------------------------------------------------------


class _Proxy:
    __slots__ = ("headers", "host", "port")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http":
            raise ConnectError(
                f"proxy {parts.hostname}: only http:// proxies are supported (got {parts.scheme}://)"
            )
        self.host = parts.hostname or ""
        self.port = parts.port or 80
        self.headers: dict[str, str] = {}
        if parts.username is not None:
            user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self.headers["Proxy-Authorization"] = (
                "Basic " + base64.b64encode(user.encode()).decode()
            )


def _env(name: str) -> str:
    return os.environ.get(name) or os.environ.get(name.upper()) or ""


class _Proxies:
    """The proxies the environment names, read once (as the pool is made)."""

    def __init__(self) -> None:
        every = _env("all_proxy")
        self._urls = {"http": _env("http_proxy") or every, "https": _env("https_proxy") or every}
        self._bypass = [e.strip().lower() for e in _env("no_proxy").split(",") if e.strip()]

    def for_url(self, scheme: str, name: str, port: int) -> _Proxy | None:
        url = self._urls.get(scheme)
        if not url or self._bypassed(name.lower(), port):
            return None
        return _Proxy(url)

    def _bypassed(self, name: str, port: int) -> bool:
        for entry in self._bypass:
            if entry == "*":
                return True
            if "/" in entry:  # an address range (CIDR)
                if _in_network(name, entry):
                    return True
                continue
            host, _, want = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
            if want and want != str(port):
                continue
            host = host.strip("[]").lstrip("*").lstrip(".")
            if name == host or name.endswith("." + host):
                return True
        return False


def _in_network(name: str, cidr: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(name) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


# -- connections ---------------------------------------------------------------------------------


def _create_connection(
    address: tuple[str, int], timeout: float | None = None, source_address: Any = None
) -> socket.socket:
    # an ASCII name as bytes: getaddrinfo would load the idna codec to encode a str
    name, port = address
    where = name.encode() if name.isascii() else name
    return socket.create_connection((where, port), timeout, source_address)  # type: ignore[arg-type]


class _TLSConnection(http.client.HTTPConnection):
    """HTTPS: ``http.client.HTTPSConnection``'s handshake, on a connection class that exists
    without ssl imported (see ``_NoSSL``); the context comes made (``Pool``'s ``context_for``)."""

    default_port = 443

    def __init__(self, host: str, port: int, *, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout)
        self._context = context

    def connect(self) -> None:
        super().connect()  # through the proxy's tunnel, when one is set
        server_hostname = self._tunnel_host or self.host  # type: ignore[attr-defined]
        self.sock = self._context.wrap_socket(self.sock, server_hostname=server_hostname)


class _Conn:
    __slots__ = ("conn", "idle_since")

    def __init__(self, conn: http.client.HTTPConnection) -> None:
        self.conn = conn
        self.idle_since = 0.0

    def usable(self) -> bool:
        """Idle not too long, and the server has not closed it (nothing to read while idle)."""
        sock = self.conn.sock
        if sock is None or time.monotonic() - self.idle_since > KEEPALIVE:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable


_Key = tuple[str, str, int, bool]


class Pool:
    """Keep-alive connections, a few idle ones per (scheme, host, port, verification); each
    serves one request at a time. Thread-safe."""

    def __init__(
        self,
        context_for: Callable[[bool], ssl.SSLContext],
        *,
        timeout: float = 60.0,
        connect_timeout: float = 15.0,
        max_idle: int = 8,
        user_agent: str = "mason",
    ) -> None:
        self._context_for = context_for
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._max_idle = max_idle
        self._user_agent = user_agent
        self._proxies = _Proxies()
        self._idle: dict[_Key, list[_Conn]] = {}
        self._lock = threading.Lock()
        #: connections made (tests check reuse with it)
        self.connections_made = 0

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for c in conns:
                c.conn.close()

    def send(self, request: Request, *, verify: bool = True) -> Response:
        """Send ``request``; the response's body is read as the caller iterates it."""
        parts = urlsplit(request.url)
        scheme = parts.scheme
        if scheme not in ("http", "https"):
            raise ConnectError(f"unsupported URL scheme {scheme!r} in {parts.netloc}{parts.path}")
        try:
            name, port = split_host(
                parts.netloc.rpartition("@")[2], 443 if scheme == "https" else 80
            )
        except ValueError as exc:
            raise ConnectError(str(exc)) from exc
        key: _Key = (scheme, name, port, verify and scheme == "https")
        proxy = self._proxies.for_url(scheme, name, port)
        target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        if proxy is not None and scheme == "http":
            target = urlunsplit(
                (scheme, parts.netloc.rpartition("@")[2], parts.path or "/", parts.query, "")
            )
        headers = self._headers(request, parts.username, parts.password, proxy, scheme)
        replayable = request.content is None or isinstance(request.content, bytes)
        while True:
            conn, reused = self._acquire(key, proxy)
            try:
                response = _exchange(conn.conn, request.method, target, headers, request.content)
            except TransportError as exc:
                conn.conn.close()
                if reused and replayable and not isinstance(exc, ReadTimeout):
                    continue  # the server closed the idle connection as it was taken: a new one
                raise
            break
        return self._wrap(response, request, conn, key)

    def _headers(
        self,
        request: Request,
        username: str | None,
        password: str | None,
        proxy: _Proxy | None,
        scheme: str,
    ) -> Headers:
        headers = Headers({"User-Agent": self._user_agent, "Accept": "*/*"})
        for name, value in request.headers.items():
            headers.set(name, value)
        content = request.content
        if isinstance(content, bytes):
            if content or request.method in ("POST", "PUT", "PATCH"):
                headers.setdefault("Content-Length", str(len(content)))
        elif content is not None and "Content-Length" not in headers:
            headers.set("Transfer-Encoding", "chunked")
        elif content is None and request.method in ("POST", "PUT", "PATCH"):
            headers.setdefault("Content-Length", "0")
        if username is not None and "Authorization" not in headers:
            user = f"{unquote(username)}:{unquote(password or '')}"
            headers.set("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
        if proxy is not None and scheme == "http":
            for name, value in proxy.headers.items():
                headers.set(name, value)
        return headers

    def _acquire(self, key: _Key, proxy: _Proxy | None) -> tuple[_Conn, bool]:
        with self._lock:
            idle = self._idle.get(key, [])
            while idle:
                conn = idle.pop()
                if conn.usable():
                    return conn, True
                conn.conn.close()
        return _Conn(self._connect(key, proxy)), False

    def _connect(self, key: _Key, proxy: _Proxy | None) -> http.client.HTTPConnection:
        scheme, name, port, verify = key
        host, to_port = (proxy.host, proxy.port) if proxy is not None else (name, port)
        conn: http.client.HTTPConnection
        if scheme == "https":
            context = self._context_for(verify)
            conn = _TLSConnection(host, to_port, timeout=self._connect_timeout, context=context)
            if proxy is not None:
                conn.set_tunnel(name, port, headers=proxy.headers)
        else:
            conn = http.client.HTTPConnection(host, to_port, timeout=self._connect_timeout)
        conn._create_connection = _create_connection  # type: ignore[attr-defined]
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise ConnectTimeout(f"connecting to {host}:{to_port} timed out") from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        assert conn.sock is not None
        conn.sock.settimeout(self._timeout)
        with self._lock:
            self.connections_made += 1
        return conn

    def _wrap(
        self, raw: http.client.HTTPResponse, request: Request, conn: _Conn, key: _Key
    ) -> Response:
        def release(ended: bool) -> None:
            reusable = ended and not raw.will_close
            raw.close()
            if not reusable:
                conn.conn.close()
                return
            conn.idle_since = time.monotonic()
            with self._lock:
                idle = self._idle.setdefault(key, [])
                if len(idle) < self._max_idle:
                    idle.append(conn)
                    return
            conn.conn.close()

        headers = Headers(raw.getheaders())
        return Response(
            raw.status,
            headers,
            _body(raw, request.method),
            reason=raw.reason,
            request=request,
            on_close=release,
        )


def _exchange(
    conn: http.client.HTTPConnection,
    method: str,
    target: str,
    headers: Headers,
    content: Content | None,
) -> http.client.HTTPResponse:
    """Send one request on ``conn`` and read the response's head."""
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        broken = content is not None and _send_or_answer(
            conn, content, headers.get("Content-Length")
        )
        raw = conn.getresponse()
        if broken:
            raw.will_close = True  # the rest of the body is still owed: never reused
        return raw
    except TimeoutError as exc:
        raise ReadTimeout("the server did not answer in time (timed out)") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise ReadError(str(exc) or type(exc).__name__) from exc
    except ValueError as exc:  # an invalid method, URL or header (control characters)
        raise TransportError(f"invalid request: {exc}") from exc


def _send_or_answer(conn: http.client.HTTPConnection, content: Content, length: str | None) -> bool:
    """Send the body; when the connection breaks meanwhile, a server that answered early (413
    from a proxy, 401) still has its say: True, and ``getresponse`` reads that answer."""
    assert conn.sock is not None
    try:
        _send_body(conn.sock, content, int(length) if length is not None else None)
    except (BrokenPipeError, ConnectionResetError) as exc:
        sock = conn.sock
        try:
            readable, _, _ = select.select([sock], [], [], 1.0)
        except (OSError, ValueError):
            readable = []
        if not readable:
            raise exc from None
        return True
    return False


def _send_body(sock: socket.socket, content: Content, length: int | None) -> None:
    """Write a body of ``length`` bytes (chunked when None); one of another length is an error,
    not a request the server would misread."""
    if isinstance(content, bytes):
        sock.sendall(content)
        return
    sent = 0
    if length is not None and _is_file(content) and not _is_tls(sock):
        # the kernel copies, from the file's position (sendfile's own default is byte 0)
        sent = sock.sendfile(content, content.tell(), length)
    else:
        for chunk in _pieces(content):
            if length is None:
                if chunk:
                    sock.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                continue
            sent += len(chunk)
            if sent > length:
                break
            sock.sendall(chunk)
        if length is None:
            sock.sendall(b"0\r\n\r\n")
            return
    if sent != length:
        raise TransportError(
            f"the request body does not have the {length} bytes its Content-Length says"
        )


def _is_tls(sock: socket.socket) -> bool:
    tls = sys.modules.get("ssl")  # none before the first TLS connection
    return tls is not None and isinstance(sock, tls.SSLSocket)


def _is_file(content: object) -> TypeGuard[IO[bytes]]:
    try:
        content.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _pieces(content: Iterable[bytes] | IO[bytes]) -> Iterable[bytes]:
    if hasattr(content, "read"):
        stream = content

        def chunks() -> Iterator[bytes]:
            while chunk := stream.read(READ_SIZE):
                yield chunk

        return chunks()
    return content


def _body(raw: http.client.HTTPResponse, method: str) -> Iterator[bytes]:
    """The body of ``raw`` in pieces of up to ``READ_SIZE``; a body that ends before its
    ``Content-Length`` (or inside a chunk) raises ``ReadError``."""
    if method == "HEAD":
        raw.read()  # nothing to read: marks the response done
        return
    while True:
        try:
            chunk = raw.read1(READ_SIZE)
        except TimeoutError as exc:
            raise ReadTimeout("the body stopped arriving (timed out)") from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise ReadError(f"the body broke off: {exc or type(exc).__name__}") from exc
        if not chunk:
            if raw.length:  # what Content-Length promised did not all arrive
                raise ReadError(f"the connection closed {raw.length} byte(s) before the body's end")
            return
        yield chunk
