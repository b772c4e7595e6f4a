"""HTTP/1.1 on sockets: mason's own request, response and error types, and a thread-safe pool
of keep-alive connections. The requests and responses are written and read here, as
``http.client`` does (its checks of what is sent, its limits on what is read), without its
imports (``email``'s parser and ``ssl``, ~20 modules a build would load for nothing).

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
import re
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


#: the longest status or header line, and the most header lines, a response may have (as
#: http.client has them)
_MAX_LINE = 65536
_MAX_HEADERS = 100
# what http.client refuses to send (request smuggling): control characters and spaces in the
# method and target, a header name that is no token, a line break inside a header value
_BAD_METHOD = re.compile("[\x00-\x1f]")
_BAD_TARGET = re.compile("[\x00-\x20\x7f]")
_HEADER_NAME = re.compile(rb"[^:\s][^:\r\n]*")
_BAD_HEADER_VALUE = re.compile(rb"\n(?![ \t])|\r(?![ \t\n])")

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


def _reason(status_code: int) -> str:
    from http import HTTPStatus  # a server's reason phrase is almost always given

    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return ""


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
        self.reason_phrase = reason or _reason(status_code)
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


class ProtocolError(Exception):
    """The server's bytes are no HTTP/1.1 response (or it closed the connection before one)."""


class Connection:
    """One HTTP/1.1 connection: its socket (TLS-wrapped for HTTPS) and a buffered reader of it,
    kept across the responses of a keep-alive connection."""

    __slots__ = ("reader", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def send_head(self, method: str, target: str, headers: Iterable[tuple[str, str]]) -> None:
        if _BAD_METHOD.search(method) or _BAD_TARGET.search(target):
            raise ValueError(f"a control character or space in {method} {target!r}")
        lines = [f"{method} {target} HTTP/1.1".encode("ascii")]
        for name, value in headers:
            raw_name, raw_value = name.encode("ascii"), value.encode("latin-1")
            if not _HEADER_NAME.fullmatch(raw_name) or _BAD_HEADER_VALUE.search(raw_value):
                raise ValueError(f"an invalid header {name!r}")
            lines.append(raw_name + b": " + raw_value)
        self.sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")

    def read_head(self) -> tuple[int, str, int, list[tuple[str, str]]]:
        """(status, reason, HTTP minor version, header fields) of the next response; a
        ``100 Continue`` before it is skipped."""
        while True:
            line = self._line()
            if not line:
                raise ProtocolError("the server closed the connection without a response")
            version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
            code, _, reason = rest.partition(" ")
            if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
                raise ProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
            fields = self._fields()
            if code != "100":
                return int(code), reason.strip(), int(version[-1]), fields

    def _line(self) -> bytes:
        line = self.reader.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise ProtocolError("a response line longer than 64 KiB")
        return line

    def _fields(self) -> list[tuple[str, str]]:
        fields: list[tuple[str, str]] = []
        while True:
            line = self._line()
            if line in (b"\r\n", b"\n", b""):
                return fields
            if len(fields) >= _MAX_HEADERS:
                raise ProtocolError(f"more than {_MAX_HEADERS} header lines")
            text = line.decode("latin-1").rstrip("\r\n")
            if text[:1] in (" ", "\t") and fields:  # an obsolete folded continuation line
                name, value = fields[-1]
                fields[-1] = (name, f"{value} {text.strip()}")
                continue
            name, colon, value = text.partition(":")
            if colon:
                fields.append((name.strip(), value.strip()))


class RawResponse:
    """A response's head, and its body read from the connection as ``read1`` asks: by its
    ``Content-Length``, in chunks, or to the connection's end (which then closes)."""

    __slots__ = (
        "_chunk_left",
        "_conn",
        "_done",
        "chunked",
        "fields",
        "length",
        "reason",
        "status",
        "will_close",
    )

    def __init__(self, conn: Connection, method: str) -> None:
        self._conn = conn
        self.status, self.reason, minor, self.fields = conn.read_head()
        headers = Headers(self.fields)
        tokens = headers.get("Connection", "").lower()
        if minor == 1:
            self.will_close = "close" in tokens
        else:  # HTTP/1.0 keeps the connection only when asked to
            self.will_close = "keep-alive" not in tokens and "Keep-Alive" not in headers
        self.chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self.length: int | None = None
        if not self.chunked:
            try:
                self.length = int(headers.get("Content-Length", ""))
            except ValueError:
                pass
            else:
                if self.length < 0:
                    self.length = None
        if self.status in (204, 304) or 100 <= self.status < 200 or method == "HEAD":
            self.length, self.chunked = 0, False
        if self.length is None and not self.chunked:
            self.will_close = True  # the body ends with the connection
        self._chunk_left = 0
        self._done = self.length == 0

    def read1(self, n: int) -> bytes:
        """Up to ``n`` bytes of the body, b"" at its end (or when the connection closed before
        the end its ``Content-Length`` set: ``length`` is then still above 0)."""
        if self._done:
            return b""
        reader = self._conn.reader
        if self.chunked:
            return self._read1_chunked(n)
        want = n if self.length is None else min(n, self.length)
        data = reader.read1(want)
        if self.length is not None:
            self.length -= len(data)
        if not data or self.length == 0:
            self._done = True
        return data

    def _read1_chunked(self, n: int) -> bytes:
        reader = self._conn.reader
        if self._chunk_left == 0:
            line = self._conn._line()
            size = line.split(b";", 1)[0].strip()
            try:
                self._chunk_left = int(size, 16)
            except ValueError:
                raise ProtocolError(f"a bad chunk size line {line[:80]!r}") from None
            if self._chunk_left == 0:
                self._conn._fields()  # the trailer, up to the empty line
                self._done = True
                return b""
        data = reader.read1(min(n, self._chunk_left))
        if not data:
            raise ProtocolError("the connection closed inside a chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0 and reader.read(2) not in (b"\r\n", b"\n"):
            raise ProtocolError("a chunk without its line end")
        return data

    @property
    def ended(self) -> bool:
        return self._done


class _Conn:
    __slots__ = ("conn", "idle_since")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.idle_since = 0.0

    def usable(self) -> bool:
        """Idle not too long, and the server has not closed it (nothing to read while idle)."""
        if time.monotonic() - self.idle_since > KEEPALIVE:
            return False
        try:
            readable, _, _ = select.select([self.conn.sock], [], [], 0)
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
        if "Host" not in headers:
            headers = Headers([("Host", _host_field(name, port, scheme)), *headers.items()])
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

    def _connect(self, key: _Key, proxy: _Proxy | None) -> Connection:
        scheme, name, port, verify = key
        host, to_port = (proxy.host, proxy.port) if proxy is not None else (name, port)
        context = self._context_for(verify) if scheme == "https" else None
        try:
            sock = _create_connection((host, to_port), self._connect_timeout)
        except TimeoutError as exc:
            raise ConnectTimeout(f"connecting to {host}:{to_port} timed out") from exc
        except OSError as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:
                if proxy is not None:
                    _tunnel(sock, name, port, proxy.headers)
                sock = context.wrap_socket(sock, server_hostname=name)
        except TimeoutError as exc:
            sock.close()
            raise ConnectTimeout(f"connecting to {host}:{to_port} timed out") from exc
        except (OSError, ProtocolError) as exc:
            sock.close()
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        sock.settimeout(self._timeout)
        with self._lock:
            self.connections_made += 1
        return Connection(sock)

    def _wrap(self, raw: RawResponse, request: Request, conn: _Conn, key: _Key) -> Response:
        def release(ended: bool) -> None:
            reusable = ended and raw.ended and not raw.will_close
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

        headers = Headers(raw.fields)
        return Response(
            raw.status,
            headers,
            _body(raw, request.method),
            reason=raw.reason,
            request=request,
            on_close=release,
        )


def _authority(name: str, port: int) -> str:
    """``name:port``: an IPv6 address in brackets, a non-ASCII name in IDNA."""
    if not name.isascii():
        name = name.encode("idna").decode("ascii")
    return f"[{name}]:{port}" if ":" in name else f"{name}:{port}"


def _host_field(name: str, port: int, scheme: str) -> str:
    """The ``Host`` field of a request to ``name``: without the port when it is the scheme's
    own (as http.client sends it)."""
    authority = _authority(name, port)
    if port == (443 if scheme == "https" else 80):
        return authority.rpartition(":")[0]
    return authority


def _tunnel(sock: socket.socket, name: str, port: int, headers: Mapping[str, str]) -> None:
    """Ask the proxy on ``sock`` for a tunnel to ``name:port`` (``CONNECT``); an answer other
    than 200 is an ``OSError``, as http.client has it."""
    conn = Connection(sock)
    try:
        where = _authority(name, port)
        conn.send_head("CONNECT", where, [("Host", where), *headers.items()])
        status, reason, _, _ = conn.read_head()
    finally:
        conn.reader.close()  # not the socket: the TLS layer reads it next
    if status != 200:
        raise OSError(f"Tunnel connection failed: {status} {reason}")


def _exchange(
    conn: Connection,
    method: str,
    target: str,
    headers: Headers,
    content: Content | None,
) -> RawResponse:
    """Send one request on ``conn`` and read the response's head."""
    try:
        conn.send_head(method, target, headers.items())
        broken = content is not None and _send_or_answer(
            conn, content, headers.get("Content-Length")
        )
        raw = RawResponse(conn, method)
        if broken:
            raw.will_close = True  # the rest of the body is still owed: never reused
        return raw
    except TimeoutError as exc:
        raise ReadTimeout("the server did not answer in time (timed out)") from exc
    except (OSError, ProtocolError) as exc:
        raise ReadError(str(exc) or type(exc).__name__) from exc
    except (ValueError, UnicodeEncodeError) as exc:  # an invalid method, URL or header
        raise TransportError(f"invalid request: {exc}") from exc


def _send_or_answer(conn: Connection, content: Content, length: str | None) -> bool:
    """Send the body; when the connection breaks meanwhile, a server that answered early (413
    from a proxy, 401) still has its say: True, and the answer is read."""
    try:
        _send_body(conn.sock, content, int(length) if length is not None else None)
    except (BrokenPipeError, ConnectionResetError) as exc:
        try:
            readable, _, _ = select.select([conn.sock], [], [], 1.0)
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


def _body(raw: RawResponse, method: str) -> Iterator[bytes]:
    """The body of ``raw`` in pieces of up to ``READ_SIZE``; a body that ends before its
    ``Content-Length`` (or inside a chunk) raises ``ReadError``."""
    while True:
        try:
            chunk = raw.read1(READ_SIZE)
        except TimeoutError as exc:
            raise ReadTimeout("the body stopped arriving (timed out)") from exc
        except (OSError, ProtocolError, ValueError) as exc:
            raise ReadError(f"the body broke off: {exc or type(exc).__name__}") from exc
        if not chunk:
            if raw.length:  # what Content-Length promised did not all arrive
                raise ReadError(f"the connection closed {raw.length} byte(s) before the body's end")
            return
        yield chunk
