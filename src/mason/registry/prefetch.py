"""A warm build's first registry reads, sent while the engine imports (start-up, issue 14).

Once ``mason.registry.early`` has pinged a host and it answered ``200`` (a registry that asks
for no credentials), ``Prefetch`` reads from it, in a daemon thread per reference, the
documents a build reads before anything else:

- a ``--cache-from`` ref: its manifest or index, then its cache config (the manifest's
  config, or the index entry of BuildKit's cache config type);
- a base image: its manifest by tag, one ``GET`` (the resolver would ``HEAD`` the tag, then
  ``GET`` the digest it names), the platform's manifest when that is an index (chosen by
  ``ImageIndex.for_platform``, as the resolver chooses), then the image config;
- a cache's layer blobs (at most ``_PEEKS``): their first bytes, the ranged read a cache hit
  makes to check how its blob starts (``mason.cache.blobcheck``), the requests pipelined on
  the kept connection after the documents;
- with a ``layer_budget`` (a build that will unpack its base images: no cache to take steps
  from), a base image's layer blobs, whole, after its config, when together they fit the
  budget and ``have`` says the build's root lacks them: the download a cold build's first
  step waits for, done while the engine imports.

The answers are kept raw (headers and body of a ``200``) and handed out once by ``take``;
``RegistryClient`` verifies them as it verifies its own responses (the manifest's digest
against the ref's or ``Docker-Content-Digest``, a blob's digest and size against its
descriptor, the media type), and uses one only where its own request would go to the same
URL (no ``registries.conf`` rewrite or mirror). Anything else (another status, a redirect, a
chunked, encoded or oversized body, a broken connection, no answer within ``early.WAIT``)
leaves no answer: the client sends the request itself and reports what goes wrong. No
credentials are sent; the connection is the ping's kind (plain HTTP only where the ping
proved it, else TLS verified with the ping's context), kept alive for one reference's reads.
"""

from __future__ import annotations

import json
import threading

import mason
from mason.registry.early import WAIT, EarlyPings, _connect, split_host
from mason.registry.wire import READ_SIZE, Connection, ProtocolError, RawResponse

TYPE_CHECKING = False  # typing is not imported for this; mypy takes it as true
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Answer", "Prefetch"]

#: the largest body kept (a manifest's limit, mason.registry.client.MANIFEST_SIZE_LIMIT)
_BODY_CAP = 4 * 1024 * 1024
#: a cache's layers whose first bytes are read early, at most (a larger cache's others are
#: read when a hit asks: early reads must stay small beside the build's own)
_PEEKS = 32
_CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"


class Answer:
    """A ``200`` answer: its headers (names in lower case) and body."""

    __slots__ = ("body", "headers")

    def __init__(self, headers: dict[str, str], body: bytes) -> None:
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class _Connection:
    """One kept-alive HTTP/1.1 connection to a registry (``mason.registry.wire``'s, reopened
    when the server has closed it), reading only plain answers of a known length."""

    def __init__(self, host: str, scheme: str, pings: EarlyPings) -> None:
        self.host = host
        self.scheme = scheme
        self._pings = pings
        self._conn: Connection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _open(self) -> Connection:
        name, port = split_host(self.host, 443 if self.scheme == "https" else 80)
        sock = _connect(name, port)
        if self.scheme == "https":
            sock = self._pings.context().wrap_socket(sock, server_hostname=name)
        return Connection(sock)

    def get(self, path: str, accept: str, cap: int = _BODY_CAP) -> Answer | None:
        """``GET path``; the answer when it is a ``200`` with a plain body of a known length
        of at most ``cap`` bytes."""
        answers: list[Answer] = []

        def take(answer: Answer) -> bool:
            answers.append(answer)
            return True

        self._exchange([(path, accept, "")], 200, cap, take)
        return answers[0] if answers else None

    def first_bytes(self, paths: list[str], n: int, got: Callable[[str, bytes], None]) -> None:
        """``got(path, head)`` with the first ``n`` bytes of the blob at each of ``paths`` that
        answers a ``206`` of the range asked for, as each answer comes; the requests are sent
        at once (pipelined) and the answers read in order, up to the first other answer (the
        connection is then closed, the rest left unanswered)."""
        wanted = first_bytes_range(n)
        left = iter(paths)

        def take(answer: Answer) -> bool:
            if not answer.headers.get("content-range", "").startswith(
                f"bytes 0-{len(answer.body) - 1}/"
            ):
                return False
            got(next(left), answer.body)
            return True

        self._exchange([(path, "", wanted) for path in paths], 206, n, take)

    def _exchange(
        self,
        requests: list[tuple[str, str, str]],
        status: int,
        cap: int,
        take: Callable[[Answer], bool],
    ) -> None:
        """Send ``requests`` (path, Accept, Range) at once and hand the answers to ``take`` in
        order while each has ``status`` and a plain body of at most ``cap`` bytes and ``take``
        wants more (else the connection is closed, the rest left unread). A kept connection the
        server has closed meanwhile is opened again, once, when nothing was answered on it."""
        reused, answered = self._conn is not None, [0]

        def counted(answer: Answer) -> bool:
            answered[0] += 1
            return take(answer)

        try:
            self._send_and_read(requests, status, cap, counted)
            return
        except (ConnectionError, ProtocolError):
            if not reused or answered[0]:
                raise
        self.close()
        self._send_and_read(requests, status, cap, counted)

    def _send_and_read(
        self,
        requests: list[tuple[str, str, str]],
        status: int,
        cap: int,
        take: Callable[[Answer], bool],
    ) -> None:
        if self._conn is None:
            self._conn = self._open()
        fields = [("Host", self.host), ("User-Agent", f"mason/{mason.__version__}")]
        for path, accept, byte_range in requests:
            asked = [("Accept", accept or "*/*"), ("Accept-Encoding", "identity")]
            asked += [("Range", byte_range)] if byte_range else []
            self._conn.send_head("GET", path, [*fields, *asked])
        for _ in requests:
            answer = self._answer(status, cap)
            if answer is None or not take(answer):
                self.close()
                return
            if self._conn is None:  # the server closes after this answer
                return

    def _answer(self, status: int, cap: int) -> Answer | None:
        """The next answer when it has ``status`` and a plain body of at most ``cap`` bytes,
        else None."""
        assert self._conn is not None
        raw = RawResponse(self._conn, "GET")
        headers = {name.lower(): value for name, value in raw.fields}
        plain = headers.get("content-encoding", "identity").lower() == "identity"
        if (
            raw.status != status
            or raw.chunked
            or not plain
            or raw.length is None
            or raw.length > cap
        ):
            return None  # its body is not read: the caller closes the connection
        parts = []
        while chunk := raw.read1(READ_SIZE):
            parts.append(chunk)
        if raw.length:  # the connection ended before the body did
            raise ConnectionError("the registry closed the connection")
        if raw.will_close:
            self.close()
        return Answer(headers, b"".join(parts))


def first_bytes_range(n: int) -> str:
    """The ``Range`` of a read of a blob's first ``n`` bytes (at least one)."""
    return f"bytes=0-{max(n, 1) - 1}"


def _document(answer: Answer) -> dict[str, object] | None:
    """A manifest's or index's JSON object, or None."""
    try:
        doc = json.loads(answer.body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _layers(doc: dict[str, object], repository: str) -> list[str]:
    """The blob paths of a cache's layers (at most ``_PEEKS``): a cache manifest's layers, or
    a cache index's entries other than its cache config."""
    entries = doc.get("layers") if "config" in doc else doc.get("manifests")
    if not isinstance(entries, list):
        return []
    paths: list[str] = []
    for entry in entries:
        if isinstance(entry, dict) and entry.get("mediaType") != _CACHE_CONFIG:
            digest = _sha256(entry.get("digest"))
            if digest and f"/v2/{repository}/blobs/{digest}" not in paths:
                paths.append(f"/v2/{repository}/blobs/{digest}")
        if len(paths) == _PEEKS:
            break
    return paths


def _sha256(value: object) -> str | None:
    """``value`` when it is a sha256 digest (the only names a path is made of here)."""
    if not isinstance(value, str) or not value.startswith("sha256:") or len(value) != 71:
        return None
    hexpart = value[7:]
    return value if all(c in "0123456789abcdef" for c in hexpart) else None


class Prefetch:
    """The reads started for a build; ``take`` hands each answer to the registry client once.
    An answer is known by its host, path and variant: a manifest's ``Accept``, ``""`` for a
    whole blob, ``first_bytes_range(n)`` for a blob's first bytes."""

    def __init__(
        self,
        pings: EarlyPings,
        manifest_accept: str,
        peek_bytes: int = 0,
        layer_budget: int = 0,
        have: Callable[[str], bool] | None = None,
    ) -> None:
        self._pings = pings
        #: the Accept of a manifest GET (the client takes an answer only for the same)
        self.manifest_accept = manifest_accept
        #: how many first bytes of a cache's layer blobs to read early (0: none)
        self.peek_bytes = peek_bytes
        #: the bytes of base images' layers read whole early, at most, all images together
        #: (0: none); what is left of it
        self.layer_budget = layer_budget
        #: whether the build already holds a blob (by digest): not read early then
        self._have = have or (lambda _digest: False)
        self._lock = threading.Lock()
        self._expected: dict[tuple[str, str, str], threading.Event] = {}
        self._answers: dict[tuple[str, str, str], Answer] = {}
        #: hosts a ``take`` waited on in vain
        self._stalled: set[str] = set()

    def start(self, host: str, repository: str, identifier: str, platform: str = "") -> None:
        """Read ``host/repository``'s manifest ``identifier`` (tag or digest) and what follows
        from it: for ``platform`` (an image's, e.g. ``linux/amd64``) an index's entry for it,
        and a manifest's config; without, a cache index's cache config and its layers' first
        bytes."""
        path = f"/v2/{repository}/manifests/{identifier}"
        if not self._expect(host, path, self.manifest_accept):
            return  # named twice: already under way
        args = (host, repository, path, platform)
        threading.Thread(target=self._run, args=args, name="prefetch", daemon=True).start()

    def take(self, host: str, path: str, variant: str = "", wait: float = WAIT) -> Answer | None:
        """The answer to ``GET path`` on ``host`` in ``variant`` (waiting for it up to ``wait``
        s), once; None when it was not asked for, failed, or is not there in time. Once a wait
        on ``host`` has run out, later ones do not wait: a stalled connection costs one
        ``wait``, not one per answer expected from it."""
        key = (host, path, variant)
        with self._lock:
            expected = self._expected.get(key)
            if host in self._stalled:
                wait = 0.0
        if expected is None:
            return None
        if not expected.wait(wait):
            with self._lock:
                self._stalled.add(host)
            return None
        with self._lock:
            return self._answers.pop(key, None)

    def _expect(self, host: str, path: str, variant: str) -> bool:
        with self._lock:
            if (host, path, variant) in self._expected:
                return False
            self._expected[(host, path, variant)] = threading.Event()
            return True

    def _settle(self, host: str, path: str, variant: str, answer: Answer | None) -> None:
        with self._lock:
            if answer is not None:
                self._answers[(host, path, variant)] = answer
            self._expected[(host, path, variant)].set()

    def _run(self, host: str, repository: str, path: str, platform: str) -> None:
        # every (path, variant) expected by this thread is settled, whatever happens
        pending = [(path, self.manifest_accept)]
        caps: dict[str, int] = {}  # a layer blob's path: its size (a document's cap is the default)
        peeks: list[str] = []
        peek = first_bytes_range(self.peek_bytes)

        def got(blob: str, head: bytes) -> None:
            self._settle(host, blob, peek, Answer({}, head))

        connection = None
        try:
            ping = self._pings.answer(host)
            if ping is None or ping.status != 200:
                return  # no answer, or the registry asks for credentials: the client's reads
            connection = _Connection(host, ping.scheme, self._pings)
            while pending:
                answer = connection.get(*pending[0], caps.get(pending[0][0], _BODY_CAP))
                if answer is None:
                    return
                doc = _document(answer) if "/manifests/" in pending[0][0] else None
                if doc is not None:  # what follows is expected before this answer is out
                    following = self._following(answer, doc, repository, platform)
                    if platform and "config" in doc:
                        base = self._base_layers(doc, repository)
                        caps.update(base)
                        following += list(base)
                    for next_path in following:
                        variant = "" if "/blobs/" in next_path else self.manifest_accept
                        if self._expect(host, next_path, variant):
                            pending.append((next_path, variant))
                    if not platform and self.peek_bytes:
                        layers = _layers(doc, repository)
                        peeks += [blob for blob in layers if self._expect(host, blob, peek)]
                self._settle(host, *pending.pop(0), answer)
            if peeks:
                connection.first_bytes(peeks, self.peek_bytes, got)  # each settled as it comes
        except (OSError, ValueError, ProtocolError):
            return  # the client sends the request itself and reports any error
        finally:
            for left, variant in pending:
                self._settle(host, left, variant, None)
            for blob in peeks:  # those not answered
                self._settle(host, blob, peek, None)
            if connection is not None:
                connection.close()

    def _following(
        self, answer: Answer, doc: dict[str, object], repository: str, platform: str
    ) -> list[str]:
        """What the build reads next after a manifest or index: the config, or the index entry
        for ``platform`` (an image) or of the cache config (a cache)."""
        config = doc.get("config")
        if isinstance(config, dict) and "manifests" not in doc:
            digest, size = _sha256(config.get("digest")), config.get("size")
            if digest and isinstance(size, int) and 0 <= size <= _BODY_CAP:
                return [f"/v2/{repository}/blobs/{digest}"]
            return []
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            return []
        if not platform:
            for entry in entries:
                if isinstance(entry, dict) and entry.get("mediaType") == _CACHE_CONFIG:
                    digest = _sha256(entry.get("digest"))
                    return [f"/v2/{repository}/blobs/{digest}"] if digest else []
            return []
        return self._platform_entry(answer, repository, platform)

    def _base_layers(self, doc: dict[str, object], repository: str) -> dict[str, int]:
        """An image manifest's layer blobs the build lacks (path -> size), when together they
        fit what is left of ``layer_budget`` (taken from it); else none."""
        if not self.layer_budget or not isinstance(layers := doc.get("layers"), list):
            return {}
        wanted: dict[str, int] = {}
        for entry in layers:
            digest = _sha256(entry.get("digest")) if isinstance(entry, dict) else None
            size = entry.get("size") if isinstance(entry, dict) else None
            if digest is None or not isinstance(size, int) or size < 0:
                return {}
            if not self._have(digest):
                wanted[f"/v2/{repository}/blobs/{digest}"] = size
        with self._lock:  # one budget for every image's reads
            if sum(wanted.values()) > self.layer_budget:
                return {}
            self.layer_budget -= sum(wanted.values())
        return wanted

    @staticmethod
    def _platform_entry(answer: Answer, repository: str, platform: str) -> list[str]:
        # the resolver's own choice (mason.oci: loaded for the build anyway)
        from mason.oci.errors import OCIError
        from mason.oci.manifest import ImageIndex, parse_manifest
        from mason.oci.platform import Platform

        try:
            media_type = (answer.header("content-type") or "").split(";")[0].strip()
            generic = media_type in ("", "application/json", "application/octet-stream")
            index = parse_manifest(answer.body, None if generic else media_type)
            wanted = Platform.parse(platform)
        except (OCIError, ValueError):
            return []
        entry = index.for_platform(wanted) if isinstance(index, ImageIndex) else None
        return [f"/v2/{repository}/manifests/{entry.digest}"] if entry is not None else []
