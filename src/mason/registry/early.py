"""A build's first registry requests, sent before the heavy imports (start-up, issue 14).

``mason build`` knows from its command line which registries it will talk to (the
``--cache-from`` and ``--cache-to`` refs, the pushed tags) long before the engine and the HTTP client
are imported (a few hundred ms of CPU). ``start_pings`` sends each host's ping
(``GET /v2/``) from a daemon thread right after the arguments are parsed, over a bare
socket, so its round trips overlap the imports; the build's ``Transport`` takes the answer
(scheme, auth challenge) instead of pinging again, and the verifying TLS context made for it.

An early ping settles only what the ``Transport``'s own ping would: plain HTTP only for a
loopback host whose TLS handshake fails as a plain-HTTP server's does, else HTTPS verified
against the CA bundle the ``Transport`` uses. Anything else (a refused connection, a TLS failure, an
answer other than 200 or a 401 with a challenge, a proxy in the environment, which the
``Transport`` would use) leaves no answer, and the ``Transport`` pings as before and reports any error.
No credentials are ever sent; this module imports neither ``http.client`` nor the rest of mason.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable

import mason

TYPE_CHECKING = False  # typing is not imported before the first request; mypy takes it as true
if TYPE_CHECKING:
    import ssl

    from mason.registry.prefetch import Prefetch

__all__ = [
    "EarlyPings",
    "Ping",
    "is_loopback",
    "plain_http_server",
    "ref_host",
    "split_host",
    "start_pings",
    "verifying_context",
]

_HEAD_CAP = 64 * 1024
_TIMEOUT = 15.0
#: at most this long the thread starting a ping waits for its request to be under way
_HANDOFF = 0.05
#: how long a ``Transport`` waits for an early ping still under way before it pings itself
#: (an answer takes a round trip or three; an unreachable host must not fail twice as slowly)
WAIT = 3.0
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy")
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]")
_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")


class Ping:
    """A ping's answer: the scheme that worked, its status (200 or 401) and challenge."""

    __slots__ = ("scheme", "status", "www_authenticate")

    def __init__(self, scheme: str, status: int, www_authenticate: str) -> None:
        self.scheme = scheme
        self.status = status
        self.www_authenticate = www_authenticate


def ref_host(ref: str) -> str | None:
    """The API host of an image reference, by distribution's rule (``mason.oci.reference`` is
    the parser; this only names a host to ping early, and a wrong guess costs one ping)."""
    name = ref.split("@", 1)[0]
    first, slash, _ = name.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        return "registry-1.docker.io" if name and "$" not in name else None
    if not set(first) <= _HOST_CHARS:  # a variable, a typo: nothing to ping (nor to send)
        return None
    return "registry-1.docker.io" if first in _HUB else first


def is_loopback(host: str) -> bool:
    """``host`` (``name[:port]``, ``[v6]:port``) is on this machine (plain HTTP is allowed)."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    octets = name.split(".")
    if len(octets) == 4 and all(o.isdigit() and o.isascii() for o in octets):
        # an IPv4 literal (what ipaddress accepts: no leading zeros, each at most 255),
        # told without importing ipaddress before the first request
        if all(len(o) == 1 or (o[0] != "0" and len(o) <= 3 and int(o) <= 255) for o in octets):
            return octets[0] == "127"
        return False
    import ipaddress

    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_host(host: str, default_port: int) -> tuple[str, int]:
    """``host``'s name (lower case) and port, as ``urllib.parse.urlsplit`` reads them
    (ValueError for a bad port), without importing it before the first request."""
    if host.startswith("["):
        name, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid host {host!r}")
        port = rest[1:]
    else:
        name, _, port = host.partition(":")
    if port and not (port.isdigit() and port.isascii() and int(port) <= 65535):
        raise ValueError(f"invalid port in {host!r}")
    return name.lower() or host, int(port or 0) or default_port


def _connect(name: str, port: int) -> socket.socket:
    # an ASCII name as bytes: getaddrinfo would load the idna codec to encode a str
    where = name.encode() if name.isascii() else name
    return socket.create_connection((where, port), timeout=_TIMEOUT)  # type: ignore[arg-type]


def plain_http_server(host: str) -> str | None:
    """Why a TLS handshake with ``host`` fails, when it does (a plain-HTTP server answering
    the ClientHello), else None (it speaks TLS, or cannot be reached: the ping tells which).

    A bare handshake that verifies nothing and sends no request: it fails before any
    certificate is seen, so the ping of a plain-HTTP registry on loopback never builds the
    verifying client and its CA bundle (the costliest part of start-up after imports)."""
    import ssl

    try:
        name, port = split_host(host, 443)
    except ValueError:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            _connect(name, port) as sock,
            context.wrap_socket(sock, server_hostname=name),
        ):
            return None
    except ssl.SSLError as exc:
        return f"{type(exc).__name__}: {exc}"
    except OSError:
        return None


def verifying_context() -> ssl.SSLContext:
    """The TLS context that verifies certificates (``SSL_CERT_FILE``/``SSL_CERT_DIR``, else
    certifi's bundle): the early ping's, and the ``Transport``'s for HTTPS."""
    import ssl

    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    return ssl.create_default_context(cafile=_certifi_bundle())


def _certifi_bundle() -> str:
    # found beside the package without importing certifi: its where() imports
    # importlib.resources and zipfile (tens of ms); where() itself for an unusual install
    import importlib.util

    spec = importlib.util.find_spec("certifi")
    if spec is not None and spec.origin:
        path = os.path.join(os.path.dirname(spec.origin), "cacert.pem")
        if os.path.isfile(path):
            return path
    import certifi

    return certifi.where()


def _get_v2(
    host: str, scheme: str, context: ssl.SSLContext | None, sent: threading.Event | None = None
) -> Ping | None:
    """``GET /v2/`` on one connection; the status and challenge, or None when unusable.
    ``sent`` is set once the request is written."""
    name, port = split_host(host, 443 if scheme == "https" else 80)
    request = (
        f"GET /v2/ HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mason/{mason.__version__}\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode()
    with _connect(name, port) as raw:
        sock = context.wrap_socket(raw, server_hostname=name) if context is not None else raw
        with sock:
            sock.sendall(request)
            if sent is not None:
                sent.set()
            head = b""
            while b"\r\n\r\n" not in head and len(head) < _HEAD_CAP:
                chunk = sock.recv(8192)
                if not chunk:
                    break
                head += chunk
    return _parse_head(head, scheme)


def _parse_head(head: bytes, scheme: str) -> Ping | None:
    if b"\r\n\r\n" not in head:
        return None
    lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    status_text = rest[:3]
    if not version.startswith("HTTP/1.") or not status_text.isdigit():
        return None
    status = int(status_text)
    challenges = [
        value.strip()
        for key, _, value in (line.partition(":") for line in lines[1:])
        if key.strip().lower() == "www-authenticate"
    ]
    if status == 200 or (status == 401 and challenges):
        return Ping(scheme, status, ", ".join(challenges))
    return None


class EarlyPings:
    """The pings started for a build; ``take(host)`` hands one answer to the ``Transport``."""

    def __init__(self) -> None:
        self._done: dict[str, threading.Event] = {}
        self._answers: dict[str, Ping | None] = {}
        self._seen: dict[str, Ping | None] = {}
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        #: the documents read early for the build (``mason.registry.prefetch``), if any
        self.prefetch: Prefetch | None = None

    def start(self, host: str) -> None:
        """Ping ``host`` from a daemon thread. For a loopback host the caller waits (at most
        ``_HANDOFF``) until the request is written: a thread contending with the caller's
        imports for the GIL waits a switch interval (5 ms) at each blocking call, so the
        request would go out well after them. The host is checked and classified here, so the
        thread imports nothing before its connect."""
        if host in self._done:
            return
        try:
            split_host(host, 443)
        except ValueError:
            return
        loopback = is_loopback(host)
        self._done[host] = threading.Event()
        sent = threading.Event()
        args = (host, loopback, sent)
        threading.Thread(target=self._run, args=args, name="early-ping", daemon=True).start()
        sent.wait(_HANDOFF)

    def _run(self, host: str, loopback: bool, sent: threading.Event) -> None:
        answer = None
        try:
            answer = self._ping(host, loopback, sent)
        except (OSError, ValueError):  # the Transport's own ping says what went wrong
            answer = None
        finally:
            sent.set()
            self._answers[host] = self._seen[host] = answer
            self._done[host].set()

    def _ping(self, host: str, loopback: bool, sent: threading.Event) -> Ping | None:
        # on loopback, plain HTTP first: an answer proves the TLS handshake of the
        # Transport's order (HTTPS first) would have failed as a plain server's, and it
        # needs no ssl module (the first request of a local registry comes sooner)
        if loopback:  # a local connect takes no time: the caller waits for the request
            try:
                answer = _get_v2(host, "http", None, sent)
            except ConnectionRefusedError:
                return None  # nothing listens (HTTPS would be refused too)
            except OSError:
                answer = None
            if answer is not None:
                return answer
        # a remote host: round trips to wait out, and a TLS context (a CA bundle) to make in
        # this thread's own time, while the caller goes on
        sent.set()
        return _get_v2(host, "https", self.context())

    def context(self) -> ssl.SSLContext:
        """The verifying TLS context (made once, for the first HTTPS ping)."""
        with self._lock:
            if self._context is None:
                self._context = verifying_context()
            return self._context

    def made_context(self) -> ssl.SSLContext | None:
        with self._lock:
            return self._context

    def answer(self, host: str, wait: float = WAIT) -> Ping | None:
        """``host``'s ping answer (waiting for it up to ``wait`` s), left for ``take``."""
        done = self._done.get(host)
        if done is None or not done.wait(wait):
            return None
        return self._seen.get(host)

    def take(self, host: str, wait: float = WAIT) -> Ping | None:
        """The answer of ``host``'s early ping (waiting for it up to ``wait`` s), once."""
        done = self._done.get(host)
        if done is None or not done.wait(wait):
            return None
        return self._answers.pop(host, None)


def start_pings(hosts: Iterable[str]) -> EarlyPings | None:
    """Ping ``hosts`` in the background; None when the environment names a proxy (the
    ``Transport`` goes through it, a bare socket would not)."""
    if any(os.environ.get(v) or os.environ.get(v.upper()) for v in _PROXY_VARS):
        return None
    pings = EarlyPings()
    for host in dict.fromkeys(hosts):
        pings.start(host)
    return pings
