"""HTTP transport for registries: scheme choice, authentication, bounded retries, errors.

The scheme is probed once per host (``GET /v2/`` over HTTPS, then plain HTTP for
loopback or insecure hosts): a refused connection or a TLS failure moves on to the
next scheme at once, so an unreachable registry fails in milliseconds; the probe
retries only errors that may pass (5xx, 429, a reset).

Requests go through one ``mason.registry.wire.Pool`` (keep-alive HTTP/1.1 connections, shared
by the threads of a transfer) per ``Transport``. They are
retried with exponential backoff (honouring ``Retry-After``) on 429, 5xx and
connection errors, at most ``RetryPolicy.attempts`` times; a 401 triggers one
re-authentication. Redirects are followed by hand so ``Authorization`` is sent only
to the registry's own host, never to a storage backend it redirects to.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import mason
from mason.registry.auth import CredentialStore, TokenAuthenticator
from mason.registry.early import EarlyPings, is_loopback, plain_http_server, verifying_context
from mason.registry.errors import (
    RegistryAuthError,
    RegistryError,
    RegistryNotFoundError,
    parse_registry_errors,
)
from mason.registry.wire import (
    ConnectError,
    Content,
    Pool,
    Request,
    Response,
    TransportError,
    with_params,
)
from mason.structs import Struct

if TYPE_CHECKING:
    import ssl

__all__ = ["RETRY_STATUSES", "Body", "RetryPolicy", "Send", "Transport", "http_get"]

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ERROR_BODY_CAP = 64 * 1024
#: a request body: bytes (replayable), or a factory giving a fresh iterable/stream per attempt
Body = bytes | Callable[[], "Iterable[bytes] | IO[bytes]"]
#: answers a request instead of the network (in-process fakes in tests)
Send = Callable[[Request], Response]


class RetryPolicy(Struct, frozen=True):
    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return float(min(self.base_delay * (2**attempt), self.max_delay))


def _retry_after(response: Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Transport:
    def __init__(
        self,
        credentials: CredentialStore | None = None,
        *,
        insecure_hosts: Iterable[str] = (),
        ca_file: str | None = None,
        send: Send | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 60.0,
        max_connections: int = 32,
        user_agent: str = f"mason/{mason.__version__}",
        early: EarlyPings | None = None,
    ) -> None:
        #: the pings a build sent before the HTTP client was imported (mason.registry.early)
        self._early = early
        self.insecure_hosts = frozenset(insecure_hosts)
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self.auth = TokenAuthenticator(credentials, self._fetch)
        self._ca_file = ca_file
        self._send = send
        # TLS contexts are made when the first HTTPS connection needs one: loading the CA
        # bundle is the costliest part of start-up after imports, and plain HTTP never needs it
        self._contexts: dict[bool, ssl.SSLContext] = {}
        self.pool = Pool(
            self._context,
            timeout=timeout,
            connect_timeout=min(timeout, 15.0),
            max_idle=max_connections,
            user_agent=user_agent,
        )
        self._schemes: dict[str, str] = {}
        self._pinging: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _context(self, verified: bool) -> ssl.SSLContext:
        import ssl

        with self._lock:
            context = self._contexts.get(verified)
            if context is None:
                if not verified:
                    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                elif self._ca_file:
                    context = ssl.create_default_context()
                    context.load_verify_locations(cafile=self._ca_file)
                else:
                    # the early pings' context, when they made one: the CA bundle loads once
                    made = self._early.made_context() if self._early is not None else None
                    context = made or verifying_context()
                self._contexts[verified] = context
            return context

    def close(self) -> None:
        self.pool.close()

    def _verify_for(self, host: str, url: str) -> bool:
        # TLS without verification only for hosts the caller marked insecure (a plain-HTTP URL
        # has no TLS at all)
        return host not in self.insecure_hosts and not url.startswith("http://")

    def _deliver(self, request: Request, verify: bool) -> Response:
        """One exchange, on the network or with the test double (``send``)."""
        if self._send is None:
            return self.pool.send(request, verify=verify)
        response = self._send(request)
        response.request = request
        return response

    def _fetch(self, request: Request) -> Response:
        """One exchange read to its end (token requests: no retries, as before)."""
        host = urlsplit(request.url).netloc
        with self._deliver(request, self._verify_for(host, request.url)) as response:
            response.read()
        return response

    def _may_skip_tls(self, host: str) -> bool:
        # an insecure host's TLS verifies nothing, so it loads no CA bundle anyway; a test
        # double is not the network the handshake would go to
        return host not in self.insecure_hosts and self._send is None

    def http_allowed(self, host: str) -> bool:
        return host in self.insecure_hosts or is_loopback(host)

    # -- scheme and ping -------------------------------------------------------------------
    def base_url(self, host: str) -> str:
        with self._lock:
            scheme = self._schemes.get(host)
            pinging = self._pinging.setdefault(host, threading.Lock())
        if scheme is None:
            with pinging:  # one ping per host, however many threads ask at once
                with self._lock:
                    scheme = self._schemes.get(host)
                if scheme is None:
                    scheme = self._early_scheme(host) or self._ping(host)
                    with self._lock:
                        self._schemes[host] = scheme
        return f"{scheme}://{host}"

    def _early_scheme(self, host: str) -> str | None:
        """The scheme (and auth challenge) an early ping of ``host`` learnt, if it did."""
        ping = self._early.take(host) if self._early is not None else None
        if ping is None:
            return None
        if ping.status == 401:
            self.auth.learn_challenge(host, ping.www_authenticate)
        return ping.scheme

    def _ping(self, host: str) -> str:
        """``GET /v2/`` over HTTPS, then plain HTTP where allowed; learn the auth scheme."""
        schemes = ["https", "http"] if self.http_allowed(host) else ["https"]
        last: Exception | None = None
        reasons: list[str] = []
        for scheme in schemes:
            url = f"{scheme}://{host}/v2/"
            if scheme == "https" and "http" in schemes and self._may_skip_tls(host):
                plain = plain_http_server(host)
                if plain is not None:  # no verifying client (and CA bundle) for this host
                    reasons.append(f"https: {plain}")
                    continue
            try:
                # a refused connection or a TLS failure settles this scheme at once: try the
                # next one instead of backing off (an unreachable registry must fail fast)
                response = self._send_with_retries(
                    "GET",
                    url,
                    host,
                    headers={},
                    body=None,
                    operation=f"ping registry {host}",
                    stream=False,
                    probe=True,
                )
            except RegistryError as exc:
                last = exc
                cause = exc.__cause__
                if isinstance(cause, ConnectError) and _is_cert_error(cause):
                    raise RegistryError(
                        f"TLS certificate of {host} is not trusted",
                        operation=f"ping registry {host}",
                        method="GET",
                        url=url,
                        hint="pass the registry's CA file, or mark the host insecure (registry.insecure=true, "
                        "or insecure = true for it in registries.conf)",
                    ) from cause
                if exc.status is None:
                    cause_text = (
                        f"{type(cause).__name__}: {cause}" if cause is not None else exc.message
                    )
                    reasons.append(f"{scheme}: {cause_text}")
                    continue
                raise
            if response.status_code == 401:
                self.auth.learn(host, response)
            elif response.status_code == 404:
                raise RegistryError(
                    f"{host} does not implement the registry v2 API (GET /v2/ gave 404)",
                    operation=f"ping registry {host}",
                    method="GET",
                    url=url,
                    status=404,
                )
            elif response.status_code >= 400:
                raise self.error_from(
                    response, operation=f"ping registry {host}", what=f"registry {host}"
                )
            return scheme
        hint = None
        if not self.http_allowed(host):
            hint = (
                f"plain HTTP is used only for localhost/127.0.0.0/8 unless the host is marked insecure: "
                f"registry.insecure=true on the output or cache, or a [[registry]] with "
                f'location = "{host}" and insecure = true in registries.conf'
            )
        raise RegistryError(
            f"cannot reach registry {host} ({'; '.join(reasons)})",
            operation=f"ping registry {host}",
            method="GET",
            url=f"{schemes[-1]}://{host}/v2/",
            hint=hint,
        ) from last

    # -- requests ------------------------------------------------------------------------------
    def backoff(self, attempt: int, retry_after: float | None = None) -> None:
        """Wait before retry number ``attempt + 1`` (``Retry-After`` wins when the server sent one)."""
        self._sleep(self.retry.delay(attempt, retry_after))

    def request(
        self,
        method: str,
        host: str,
        path_or_url: str,
        *,
        operation: str,
        scopes: Iterable[str],
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
        params: Mapping[str, str] | None = None,
        ok: Iterable[int] = (200,),
        stream: bool = False,
        retry: bool = True,
        follow_redirects: bool = False,
        what: str | None = None,
    ) -> Response:
        """Send a request to registry ``host``; return the response if its status is in ``ok``.

        ``path_or_url`` is a path (``/v2/...``) or an absolute URL the registry gave
        (upload locations). With ``stream=True`` the caller must close the response.
        """
        base = self.base_url(host)
        url = with_params(urljoin(base, path_or_url), params or {})
        scope_list = tuple(scopes)
        ok_set = frozenset(ok)
        reauthed = False
        redirects = 0
        request_headers = dict(headers or {})
        auth_header = self.auth.ensure(host, scope_list) if self.auth.knows(host) else None
        while True:
            send_headers = dict(request_headers)
            same_host = urlsplit(url).netloc == host
            if auth_header and same_host:
                send_headers["Authorization"] = auth_header
            response = self._send_with_retries(
                method,
                url,
                host,
                headers=send_headers,
                body=body,
                operation=operation,
                stream=True,
                retry=retry,
            )
            status = response.status_code
            if status == 401 and same_host and not reauthed:
                response.close()
                reauthed = True
                auth_header = self.auth.on_challenge(host, response, scope_list)
                if auth_header is not None:
                    continue
                raise RegistryAuthError(
                    f"registry {host} requires authentication and no credentials were found",
                    operation=operation,
                    method=method,
                    url=url,
                    status=401,
                    hint="add credentials to ~/.docker/config.json or $REGISTRY_AUTH_FILE",
                )
            if follow_redirects and status in _REDIRECTS and "Location" in response.headers:
                response.close()
                redirects += 1
                url = _redirect_target(url, response, redirects, operation=operation, method=method)
                if status == 303:
                    method, body = "GET", None
                continue
            return self._finish(
                response,
                host,
                same_host=same_host,
                ok=ok_set,
                stream=stream,
                operation=operation,
                what=what,
            )

    def _finish(
        self,
        response: Response,
        host: str,
        *,
        same_host: bool,
        ok: frozenset[int],
        stream: bool,
        operation: str,
        what: str | None,
    ) -> Response:
        """The response of ``request`` once no retry, new token or redirect is left to try:
        returned if its status is in ``ok``, else raised as the registry's error."""
        status = response.status_code
        if status == 401 and same_host:
            error = self.error_from(
                response, operation=operation, what=what or f"registry {host}", host=host
            )
            creds = self.auth.credentials_for(host)
            who = (
                f"the credentials of {creds.username!r}"
                if creds and creds.username
                else "anonymous access"
            )
            error.message = f"{operation}: registry {host} rejected {who} (HTTP 401)"
            error.hint = (
                "check the username and password in your Docker config or auth.json"
                if creds
                else _LOGIN_HINT
            )
            raise error
        if status in ok:
            if not stream:
                response.read()
                response.close()
            return response
        raise self.error_from(
            response, operation=operation, what=what or f"registry {host}", host=host
        )

    def error_from(
        self, response: Response, *, operation: str, what: str, host: str | None = None
    ) -> RegistryError:
        """A ``RegistryError`` (subclass by status) with the registry's ``errors[]``; closes ``response``."""
        body = response.read_capped(_ERROR_BODY_CAP)
        errors = parse_registry_errors(body)
        status = response.status_code
        excerpt = body[:300].decode(errors="replace").strip() if body and not errors else None
        method = response.request.method
        url = response.request.url
        cls: type[RegistryError] = RegistryError
        hint = None
        # anonymous on a registry that authenticates: a private repository shows as 401, 403 or
        # (GHCR, Quay and others hide it) 404
        anonymous = (
            host is not None and self.auth.knows(host) and self.auth.credentials_for(host) is None
        )
        if status in (401, 403):
            cls = RegistryAuthError
            hint = (
                _LOGIN_HINT
                if anonymous
                else "check the credentials for this registry and their access to the repository"
            )
            message = f"{what} denied access (HTTP {status})"
        elif status == 404:
            cls = RegistryNotFoundError
            message = f"not found on {what} (HTTP 404)"
            if anonymous:
                hint = "if the repository is private, log in: some registries answer 404 to anonymous clients"
        else:
            message = f"{what} answered HTTP {status} {response.reason_phrase}".rstrip()
        return cls(
            message,
            operation=operation,
            method=method,
            url=url,
            status=status,
            errors=errors,
            body_excerpt=excerpt,
            hint=hint,
        )

    def _send_with_retries(
        self,
        method: str,
        url: str,
        host: str,
        *,
        headers: Mapping[str, str],
        body: Body | None,
        operation: str,
        stream: bool,
        retry: bool = True,
        probe: bool = False,
    ) -> Response:
        """Send with bounded retries. ``probe``: a connection that cannot be made (refused,
        unresolvable, timed out, TLS handshake failed) is not retried."""
        attempts = self.retry.attempts if retry else 1
        verify = self._verify_for(host, url)
        for attempt in range(attempts):
            content: Content | None = body() if callable(body) else body
            try:
                response = self._deliver(Request(method, url, headers, content), verify)
            except TransportError as exc:
                _close(content)
                # a TLS failure (untrusted certificate, or a plain-HTTP server) will not heal by
                # retrying; in a probe, neither will a connection that cannot be made
                final = isinstance(exc, ConnectError) and (probe or _is_tls_error(exc))
                if attempt + 1 < attempts and not final:
                    self.backoff(attempt)
                    continue
                # "after N attempt(s)" only when this call retried: a caller that retries itself
                # (uploads, resumed downloads) counts its own attempts
                tries = f" after {attempt + 1} attempt(s)" if attempts > 1 else ""
                raise RegistryError(
                    f"request failed{tries}: {type(exc).__name__}: {exc}",
                    operation=operation,
                    method=method,
                    url=url,
                ) from exc
            _close(content)
            if response.status_code in RETRY_STATUSES and attempt + 1 < attempts:
                retry_after = _retry_after(response)
                response.read_capped(_ERROR_BODY_CAP)
                self.backoff(attempt, retry_after)
                continue
            if not stream:
                response.read()
                response.close()
            return response
        raise AssertionError("unreachable")


_MAX_REDIRECTS = 10


@contextlib.contextmanager
def http_get(
    url: str, *, operation: str, transport: Transport | None = None
) -> Iterator[Iterator[bytes]]:
    """Stream the body of a plain ``GET url`` (``ADD <url>``) through the registry client's
    machinery: its retries with backoff on 429/5xx and connection errors, its TLS settings,
    its timeouts. Redirects are followed (no credentials are ever sent). Anything but a final
    200 raises ``RegistryError`` with the status; a transport failure raises it too."""
    own = transport is None
    tr = transport or Transport()
    try:
        for _hop in range(_MAX_REDIRECTS + 1):
            host = urlsplit(url).netloc
            response = tr._send_with_retries(
                "GET", url, host, headers={}, body=None, operation=operation, stream=True
            )
            location = response.headers.get("Location")
            if response.status_code in _REDIRECTS and location:
                response.close()
                url = urljoin(response.request.url, location)
                continue
            try:
                if response.status_code != 200:
                    raise RegistryError(
                        f"HTTP {response.status_code}",
                        operation=operation,
                        method="GET",
                        url=url,
                        status=response.status_code,
                    )
                yield response.iter_bytes()
            except TransportError as exc:  # the body broke off
                raise RegistryError(
                    f"download failed: {type(exc).__name__}: {exc}",
                    operation=operation,
                    method="GET",
                    url=url,
                ) from exc
            finally:
                response.close()
            return
        raise RegistryError(
            f"more than {_MAX_REDIRECTS} redirects", operation=operation, method="GET", url=url
        )
    finally:
        if own:
            tr.close()


_LOGIN_HINT = (
    "the repository may be private or may not exist: log in (credentials in ~/.docker/config.json "
    "or $REGISTRY_AUTH_FILE)"
)


def _is_cert_error(exc: BaseException) -> bool:
    tls = sys.modules.get("ssl")  # not imported: no TLS connection was tried
    seen: BaseException | None = exc
    while seen is not None:
        if tls is not None and isinstance(seen, tls.SSLCertVerificationError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _is_tls_error(exc: BaseException) -> bool:
    tls = sys.modules.get("ssl")  # not imported: no TLS connection was tried
    seen: BaseException | None = exc
    while seen is not None:
        if tls is not None and isinstance(seen, tls.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "SSL" in str(exc) or "WRONG_VERSION_NUMBER" in str(exc)


def _close(content: object) -> None:
    close = getattr(content, "close", None)
    if callable(close) and hasattr(content, "read"):
        close()


def _redirect_target(
    url: str, response: Response, redirects: int, *, operation: str, method: str
) -> str:
    """Where a redirect points, unless it is one too many (the sixth)."""
    if redirects > 5:
        raise RegistryError(
            "too many redirects",
            operation=operation,
            method=method,
            url=url,
            status=response.status_code,
        )
    return urljoin(url, response.headers["Location"])
