"""A distribution-spec registry client: manifests, blobs, mounts, tags.

Every blob read is verified (digest and size) as it streams, and a transfer that
breaks off is resumed with a ``Range`` request from the last byte that arrived (or
restarted from 0 when the server does not honour the range). A chunked upload that
breaks off goes on from what the registry acknowledged (``GET`` on the upload, its
``Range``). Retries are bounded by failures in a row without progress, so short breaks
every few megabytes do not stop a transfer. Uploads are monolithic (one PUT with ``Content-Length``) up to
``chunk_threshold`` and chunked (PATCH with ``Content-Range``) above it. A
monolithic PUT refused with 413 (a proxy's body limit, or a registry that wants
chunks) is redone in chunks, and blobs that large go chunked to that host from
then on; a PATCH refused with 413 is resent in halves; ``OCI-Chunk-Min-Length``
is honoured. A mount the registry declines with an upload session (202) uploads
in that session. A refused manifest PUT names the media type it refused.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, BinaryIO, Literal, TypeVar

from mason.digest import Digest, VerifyingReader, parse_digest, sha256_bytes
from mason.errors import DigestMismatchError
from mason.futures import Future, ThreadPoolExecutor, in_daemon_thread
from mason.oci import mediatypes as mt
from mason.oci.atomic import atomic_write
from mason.oci.descriptor import Descriptor
from mason.oci.manifest import ImageIndex, ImageManifest, parse_manifest
from mason.oci.reference import Reference
from mason.registry.auth import CredentialStore, pull_scope, push_scope
from mason.registry.early import EarlyPings
from mason.registry.errors import RegistryAuthError, RegistryError, RegistryNotFoundError
from mason.registry.prefetch import Answer, first_bytes_range
from mason.registry.regconf import RegistriesConf, load_registries_conf
from mason.registry.transport import RETRY_STATUSES, RetryPolicy, Send, Transport
from mason.registry.wire import Response, TransportError
from mason.structs import Struct

__all__ = [
    "MANIFEST_SIZE_LIMIT",
    "FetchedManifest",
    "PushOutcome",
    "RegistryClient",
]

#: manifests larger than this are refused (docs/architecture.md §6)
MANIFEST_SIZE_LIMIT = 4 * 1024 * 1024
_CHUNK = 1 << 20
#: chunked uploads never halve their PATCH size below this
_MIN_CHUNK = 64 * 1024
#: statuses with which registries refuse a manifest they do not accept (ECR 400/405, Harbor 404,
#: others 415); the error then names the media type
_MANIFEST_REFUSED = frozenset({400, 404, 405, 415})
PushOutcome = Literal["exists", "mounted", "uploaded"]
T = TypeVar("T")
R = TypeVar("R")
#: an upload session opened ahead is used within this many seconds of its opening, or
#: cancelled: registries expire idle sessions (distribution after days, others sooner)
_AHEAD_MAX_AGE = 60.0
#: how long closing the client waits for a session still opening, to cancel it
_AHEAD_CLOSE_WAIT = 1.0


class FetchedManifest(Struct, frozen=True):
    """A manifest's raw bytes as served, with its media type and digest."""

    raw: bytes
    media_type: str
    digest: Digest

    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw))

    def parse(self) -> ImageManifest | ImageIndex:
        return parse_manifest(self.raw, self.media_type)


class _UploadSession(Struct, frozen=True):
    location: str
    #: ``OCI-Chunk-Min-Length``: every PATCH but the last must be at least this long
    min_chunk: int = 0
    #: opened ahead of the upload (``RegistryClient.open_upload_ahead``): the registry may
    #: have dropped it since, and the upload then opens another
    ahead: bool = False


class _OpenedAhead:
    """Upload sessions opened before an upload asks for one: at most one per repository,
    opening or open, with the time its opening began; for a repository ``keep`` names, a
    session taken is replaced at once, until ``stop``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str], tuple[Reference, float, Future[_UploadSession]]] = {}
        self._kept: dict[tuple[str, str], Callable[[], _UploadSession]] = {}

    def keep(self, ref: Reference, start: Callable[[], _UploadSession]) -> None:
        with self._lock:
            self._kept[_repository_key(ref)] = start
            self._open(ref, start)

    def open(self, ref: Reference, start: Callable[[], _UploadSession]) -> None:
        with self._lock:
            self._open(ref, start)

    def stop(self, ref: Reference) -> None:
        with self._lock:
            self._kept.pop(_repository_key(ref), None)

    def _open(self, ref: Reference, start: Callable[[], _UploadSession]) -> None:
        if _repository_key(ref) not in self._sessions:
            opening = in_daemon_thread("upload-ahead", start)
            self._sessions[_repository_key(ref)] = (ref, time.monotonic(), opening)

    def take(self, ref: Reference) -> tuple[_UploadSession | None, bool]:
        """The session for ``ref``'s repository (waiting for its opening, which began before
        a new one would) and whether it is still young enough to use; (None, False) when
        there is none or its opening failed."""
        key = _repository_key(ref)
        with self._lock:
            entry = self._sessions.pop(key, None)
            if entry is not None and key in self._kept:
                self._open(ref, self._kept[key])
        if entry is None:
            return None, False
        _, opened_at, opening = entry
        try:
            session = opening.result()
        except Exception:  # the upload opens its own session, and reports what fails then
            return None, False
        return session, time.monotonic() - opened_at <= _AHEAD_MAX_AGE

    def left(self) -> list[tuple[Reference, _UploadSession]]:
        """The sessions opened and not taken; nothing is replaced any more. One still
        opening is waited for a moment only (a registry that does not answer must not hold
        up the end of the build): past that, the registry expires it."""
        with self._lock:
            entries, self._sessions = self._sessions, {}
            self._kept.clear()
        sessions = []
        for ref, _, opening in entries.values():
            with contextlib.suppress(Exception):  # failed, or still opening
                sessions.append((ref, opening.result(timeout=_AHEAD_CLOSE_WAIT)))
        return sessions


def _repository_key(ref: Reference) -> tuple[str, str]:
    return ref.api_host, ref.repository


def _next_link(header: str | None) -> str | None:
    if not header:
        return None
    for part in header.split(","):
        match = re.match(r"\s*<([^>]+)>\s*;(.*)", part)
        if match and re.search(r'rel="?next"?', match.group(2)):
            return match.group(1)
    return None


class _Budget:
    """Retries of one transfer: it gives up after ``limit`` failures in a row that made no
    progress; a failure after progress (bytes received or acknowledged since the one before)
    starts a new streak, so a transfer cut every few megabytes still finishes."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.attempts = 1  # the first try
        self.streak = 0
        self._mark = -1

    def failed(self, position: int) -> bool:
        """Count a failure at ``position`` (bytes done); True while another attempt is allowed."""
        self.streak = 1 if position > self._mark else self.streak + 1
        self._mark = max(self._mark, position)
        if self.streak >= self.limit:
            return False
        self.attempts += 1
        return True


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class _ResumingBlobStream(io.RawIOBase):
    """Raw bytes of one blob; after a break it reconnects with ``Range: bytes=<received>-``
    (every byte that arrived counts, not whole chunks), within the retry budget.

    A 206 must say it starts where asked (``Content-Range``); a server that ignores
    ``Range`` (200) or answers another range is read from byte 0 again and the part
    already delivered is discarded."""

    def __init__(self, client: RegistryClient, ref: Reference, desc: Descriptor) -> None:
        self._client = client
        self._ref = ref
        self._desc = desc
        #: the blob offset the current response's body has reached (from 0 or its range start)
        self._received = 0
        #: bytes still to drop from the current body: a from-zero GET re-sends what we have
        self._skip = 0
        self._response: Response | None = None
        self._chunks: Iterator[bytes] | None = None
        self._pending = b""
        self._budget = _Budget(client.retry.attempts)
        self.resumed_at: list[int] = []  # offsets a resumed GET started at (for tests and logs)
        self._open()

    @property
    def _operation(self) -> str:
        return f"pull blob {self._desc.digest} from {self._ref.repository_ref}"

    def readable(self) -> bool:
        return True

    @property
    def _position(self) -> int:
        """Bytes of the blob this stream has (delivered or pending): where a resumed GET starts."""
        return self._received + self._skip

    def _get(self, ranged: bool) -> Response:
        headers = {"Range": f"bytes={self._position}-"} if ranged and self._position else {}
        return self._client._transport.request(
            "GET",
            self._ref.api_host,
            f"/v2/{self._ref.repository}/blobs/{self._desc.digest}",
            operation=self._operation,
            scopes=[pull_scope(self._ref.repository)],
            headers=headers,
            ok=(200, 206),
            stream=True,
            follow_redirects=True,
        )

    def _open(self) -> None:
        position = self._position
        response = self._get(ranged=True)
        if position and response.status_code == 206 and not self._starts_at(response, position):
            response.close()
            response = self._get(ranged=False)  # not the range asked for: from byte 0
        if position and response.status_code == 206:
            self.resumed_at.append(position)
            self._received, self._skip = position, 0
        else:
            self._received, self._skip = 0, position  # from byte 0: drop what is already here
        self._response = response
        # no chunk size: every read from the socket is handed on, so a break loses nothing
        self._chunks = response.iter_bytes()

    @staticmethod
    def _starts_at(response: Response, position: int) -> bool:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        return match is not None and int(match.group(1)) == position

    def _restart(self, why: BaseException | None) -> None:
        if self._response is not None:
            self._response.close()
        if not self._budget.failed(self._position):
            raise RegistryError(
                f"blob transfer kept breaking off (at byte {self._position} of {self._desc.size}, "
                f"after {self._budget.attempts} attempt(s))" + (f": {why}" if why else ""),
                operation=self._operation,
            ) from why
        self._client._transport.backoff(self._budget.streak - 1)
        self._open()

    def _incomplete(self) -> bool:
        response = self._response
        if response is None:
            return True
        length = response.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return True
        return response.num_bytes_downloaded < int(length)

    def _next_chunk(self) -> bytes | None:
        """New bytes to deliver; b"" at the end of the blob; None when there are none yet."""
        assert self._chunks is not None
        try:
            chunk = next(self._chunks, b"")
        except TransportError as exc:
            self._restart(exc)
            return None
        if not chunk:
            if self._position < self._desc.size and self._incomplete():
                self._restart(None)  # the body ended before its Content-Length: truncated
                return None
            return b""  # complete as served: a short blob fails verification
        dropped = min(self._skip, len(chunk))
        self._skip -= dropped
        self._received += len(chunk)  # so _position = what the stream has, skipped or not
        return chunk[dropped:] or None

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = self._next_chunk()
            if chunk == b"":
                return 0
            self._pending = chunk or b""
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
        super().close()


class _ChunkedUpload:
    """One chunked upload (PATCH with ``Content-Range``) that survives breaks: after a failed
    request it asks the registry what it holds (``GET`` on the upload location, its ``Range``)
    and goes on from there, re-reading the source from that offset (a seek, or a reopen
    and skip when the source cannot seek). Only when the registry dropped the session
    (404, or distribution's 400 when the failed PATCH left part of its body) does it start
    a new session from byte 0. Each 202's ``Range`` is honoured as the registry's
    acknowledgement. The retry budget counts failures in a row without progress."""

    def __init__(
        self,
        client: RegistryClient,
        ref: Reference,
        desc: Descriptor,
        opener: Callable[[], IO[bytes]],
        session: _UploadSession,
    ) -> None:
        self.client = client
        self.ref = ref
        self.desc = desc
        self.opener = opener
        self.location = session.location
        self.floor = max(session.min_chunk, _MIN_CHUNK)
        self.size = max(client.chunk_size, session.min_chunk)
        limit = client._monolithic_limit.get(ref.api_host, 0)
        if desc.size > self.floor and limit > self.floor:
            # a body limit is known for this host: start below it
            self.size = min(self.size, max(self.floor, limit // 2))
        #: bytes the registry acknowledged; ``pending`` holds the source bytes from there on
        self.offset = 0
        self.pending = b""
        self.src = opener()
        self.budget = _Budget(client.retry.attempts)
        #: offsets uploads went on from after a break (for tests and logs)
        self.resumed_at: list[int] = []
        self.operation = f"push blob {desc.digest} to {ref.repository_ref} (chunked)"

    def close(self) -> None:
        self.src.close()

    def run(self) -> None:
        while True:
            self._send_all()
            try:
                self._finish()
                return
            except RegistryError as exc:
                # the answer to a PUT that worked may be what was lost
                if _retryable(exc) and self.client.blob_exists(
                    self.ref, self.desc.digest, for_push=True
                ):
                    return
                self._recover(exc)

    def _send_all(self) -> None:
        while True:
            # each chunk is held in memory so a refused PATCH can be sent again, smaller
            self.pending += _read_up_to(self.src, self.size - len(self.pending))
            if not self.pending:
                break
            chunk = self.pending[: self.size]
            try:
                response = self._patch(chunk)
            except RegistryError as exc:
                if exc.status == 413 and self.size > self.floor:
                    # over a body limit: halve and resend; later uploads start below it
                    limits = self.client._monolithic_limit
                    limits[self.ref.api_host] = min(
                        limits.get(self.ref.api_host, len(chunk)), len(chunk)
                    )
                    self.size = max(self.floor, self.size // 2)
                    continue
                self._recover(exc)
                continue
            end = self.offset + len(chunk)
            acked = _acknowledged(response.headers.get("Range"))
            self.location = response.headers.get("Location", self.location)
            del chunk, response  # before the next chunk is read: one chunk in memory, not two
            # a registry that kept only part of the chunk says so; a Range that makes no sense
            # (none, or not past the last offset) is not trusted over the 202
            self._move_to(acked if acked is not None and self.offset < acked <= end else end)
        if self.offset != self.desc.size:
            raise DigestMismatchError(
                f"blob {self.desc.digest} has {self.offset} bytes, but its descriptor says {self.desc.size}",
                hint="the local copy changed while it was uploaded",
            )

    def _patch(self, chunk: bytes) -> Response:
        return self.client._transport.request(
            "PATCH",
            self.ref.api_host,
            self.location,
            operation=self.operation,
            scopes=[push_scope(self.ref.repository)],
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{self.offset}-{self.offset + len(chunk) - 1}",
                "Content-Length": str(len(chunk)),
            },
            body=chunk,
            ok=(202, 204),
            retry=False,
            what=f"registry {self.ref.registry}",
        )

    def _finish(self) -> None:
        self.client._transport.request(
            "PUT",
            self.ref.api_host,
            self.location,
            params={"digest": self.desc.digest},
            operation=self.operation,
            scopes=[push_scope(self.ref.repository)],
            headers={"Content-Length": "0"},
            body=b"",
            ok=(201, 204),
            retry=False,
            what=f"registry {self.ref.registry}",
        )

    def _recover(self, exc: RegistryError) -> None:
        """After a failed request: wait, learn what the registry holds, continue from there."""
        while True:
            # 416, or a refused session (distribution refuses one whose offset check failed
            # after a half body, even when a status query just before still named it): ask the
            # registry, like after a break; a session it no longer has starts over
            if not (_retryable(exc) or _session_refused(exc)) or not self.budget.failed(
                self.offset
            ):
                raise _gave_up(
                    exc, self.budget, f" ({self.offset} of {self.desc.size} bytes acknowledged)"
                )
            self.client._transport.backoff(self.budget.streak - 1)
            try:
                status = self.client.upload_status(self.ref, self.location)
                if status is None:
                    session = self.client._start_upload(self.ref, self.desc.digest, None)
                    assert session is not None  # no mount asked: always a session
                    status = (0, session.location)
            except RegistryError as again:
                exc = again
                continue
            acked, self.location = status
            if acked:
                self.resumed_at.append(acked)
            self._move_to(acked)
            return

    def _move_to(self, position: int) -> None:
        """Make ``position`` the acknowledged offset: the next PATCH sends the source from it."""
        end = self.offset + len(self.pending)
        if self.offset <= position <= end:
            self.pending = self.pending[position - self.offset :]
        else:
            self.pending = b""
            self._seek(position)
        self.offset = position

    def _seek(self, position: int) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.src.seekable():
                self.src.seek(position)
                return
        self.src.close()
        self.src = self.opener()
        if _skip_bytes(self.src, position) != position:
            raise DigestMismatchError(
                f"blob {self.desc.digest} ended before byte {position} when it was opened again",
                hint="the local copy changed while it was uploaded",
            )


def _session_refused(exc: RegistryError) -> bool:
    """The registry refused the upload session itself (not the bytes or the credentials)."""
    if exc.status in (404, 416):
        return True
    codes = {str(e.get("code", "")).upper() for e in exc.errors}
    return exc.status == 400 and bool(codes & {"BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN"})


def _manifest_refused_hint(codes: set[str], media_type: str) -> str:
    """Why a registry refused a manifest, from its error codes; the media type is blamed only
    when no code names another cause."""
    if "NAME_UNKNOWN" in codes:
        return (
            "the repository does not exist and this registry does not create repositories on push "
            "(ECR: create it first)"
        )
    if "MANIFEST_BLOB_UNKNOWN" in codes or "BLOB_UNKNOWN" in codes:
        return "a blob the manifest names is missing from the repository"
    if codes - {"", "MANIFEST_INVALID", "UNSUPPORTED", "UNKNOWN"}:
        return ""
    return f"this registry may not accept {media_type} manifests"


class RegistryClient:
    """Talks to any number of registries; thread-safe (transfers run in parallel)."""

    def __init__(
        self,
        credentials: CredentialStore | None = None,
        insecure_hosts: Iterable[str] = (),
        ca_file: str | None = None,
        send: Send | None = None,
        max_workers: int = 4,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
        chunk_threshold: int = 256 * 1024 * 1024,
        # 8 MiB: a chunk is held once in memory (to resend it); 32 MiB made a 1 GiB push peak at 111 MiB RSS
        chunk_size: int = 8 * 1024 * 1024,
        registries: RegistriesConf | None = None,
        early: EarlyPings | None = None,
    ) -> None:
        extra = {"sleep": sleep} if sleep is not None else {}
        #: containers-registries.conf: insecure hosts, blocked registries, rewrites, mirrors
        self.registries = registries or RegistriesConf()
        self._transport = Transport(
            credentials,
            insecure_hosts={*insecure_hosts, *self.registries.insecure_hosts()},
            ca_file=ca_file,
            send=send,
            retry=retry,
            max_connections=max(8, max_workers * 2),
            early=early,
            **extra,  # type: ignore[arg-type]
        )
        #: the documents read while the engine imported (mason.registry.prefetch)
        self._prefetch = early.prefetch if early is not None else None
        #: the blobs this client saw a repository hold (a HEAD or ranged GET answered, a put
        #: done), as (registry, repository, digest): not asked about again in this process.
        #: A set's add and lookup are atomic, so the client's threads share it without a lock.
        self._held: set[tuple[str, str, str]] = set()
        #: the repositories this client put (uploaded or mounted) each blob into, by
        #: (registry, digest); shared likewise (``setdefault`` and ``add`` are atomic)
        self._put_in: dict[tuple[str, str], set[str]] = {}
        self.max_workers = max(1, max_workers)
        self.chunk_threshold = chunk_threshold
        self.chunk_size = chunk_size
        #: per registry host, the smallest blob size a monolithic PUT was refused for (413)
        self._monolithic_limit: dict[str, int] = {}
        self._ahead = _OpenedAhead()

    @classmethod
    def for_user(
        cls,
        docker_config_dir: str | None,
        registry_auth_file: str | None,
        *,
        insecure_hosts: Iterable[str] = (),
        ca_file: str | None = None,
        max_workers: int = 4,
        early: EarlyPings | None = None,
    ) -> RegistryClient:
        """A client as the user's commands talk: their credentials (Docker's config, containers'
        auth.json) and registries.conf."""
        return cls(
            CredentialStore.from_environment(docker_config_dir, registry_auth_file),
            insecure_hosts=insecure_hosts,
            ca_file=ca_file,
            max_workers=max_workers,
            registries=load_registries_conf(),
            early=early,
        )

    @property
    def retry(self) -> RetryPolicy:
        return self._transport.retry

    @property
    def token_requests(self) -> int:
        return self._transport.auth.token_requests

    def close(self) -> None:
        for ref, session in self._ahead.left():
            self._cancel_upload(ref, session.location)
        self._transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map_bounded(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``fn`` over ``items`` with at most ``max_workers`` at once; first error is raised."""
        if len(items) <= 1 or self.max_workers == 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(
            max_workers=self.max_workers, thread_name_prefix="mason-registry"
        ) as pool:
            return list(pool.map(fn, items))

    # -- manifests -----------------------------------------------------------------------------
    def ping(self, host: str) -> None:
        self._transport.base_url(host)

    def _pull(self, ref: Reference, action: Callable[[Reference], T]) -> T:
        """``action`` on the first of ``ref``'s pull sources that answers (registries.conf:
        its mirrors in order, then its location; just ``ref`` without a configuration)."""
        sources = self.registries.pull_sources(ref)
        for source in sources[:-1]:
            try:
                return action(source)
            except (RegistryError, DigestMismatchError):
                continue  # a mirror that lacks it, fails or serves other bytes: the next source
        return action(sources[-1])

    def _check_push(self, ref: Reference) -> None:
        self.registries.check_allowed(ref)

    def fetch_manifest(
        self, ref: Reference, accept: Sequence[str] = mt.MANIFEST_MEDIA_TYPES
    ) -> FetchedManifest:
        """GET a manifest's raw bytes (at most 4 MiB), verified against the ref's digest."""
        prefetched = self.prefetched_manifest(ref, accept)
        if prefetched is not None:
            return prefetched
        return self._pull(ref, lambda source: self._fetch_manifest_at(source, accept))

    def prefetched_manifest(
        self, ref: Reference, accept: Sequence[str] = mt.MANIFEST_MEDIA_TYPES
    ) -> FetchedManifest | None:
        """``ref``'s manifest as ``mason.registry.prefetch`` read it (once), verified as an
        answer of ``fetch_manifest``'s own; None when it was not read early."""
        path = f"/v2/{ref.repository}/manifests/{ref.identifier}"
        answer = self._prefetched(ref, path, ", ".join(accept))
        if answer is None:
            return None
        return _verified_manifest(ref, answer.body, answer.header)

    def _prefetched(self, ref: Reference, path: str, variant: str = "") -> Answer | None:
        """The early answer to ``GET path`` (``variant``: the Accept or Range asked for) where
        this client's own request would go there (no registries.conf rewrite or mirror for
        ``ref``)."""
        if self._prefetch is None or self.registries.pull_sources(ref) != [ref]:
            return None
        return self._prefetch.take(ref.api_host, path, variant)

    def _fetch_manifest_at(self, ref: Reference, accept: Sequence[str]) -> FetchedManifest:
        operation = f"get manifest {ref}"
        response = self._transport.request(
            "GET",
            ref.api_host,
            f"/v2/{ref.repository}/manifests/{ref.identifier}",
            operation=operation,
            scopes=[pull_scope(ref.repository)],
            headers={"Accept": ", ".join(accept)},
            stream=True,
            follow_redirects=True,
            what=f"registry {ref.registry}",
        )
        try:
            length = int(response.headers.get("Content-Length", "0") or 0)
            if length > MANIFEST_SIZE_LIMIT:
                raise self._too_big(ref, length)
            data = bytearray()
            for chunk in response.iter_bytes():
                data.extend(chunk)
                if len(data) > MANIFEST_SIZE_LIMIT:
                    raise self._too_big(ref, len(data))
        except TransportError as exc:
            raise RegistryError(
                f"reading the manifest failed: {exc}",
                operation=operation,
                method="GET",
                url=response.request.url,
            ) from exc
        finally:
            response.close()
        return _verified_manifest(ref, bytes(data), response.headers.get)

    @staticmethod
    def _too_big(ref: Reference, size: int) -> RegistryError:
        return RegistryError(
            f"manifest is {size} bytes, over mason's limit of {MANIFEST_SIZE_LIMIT} bytes",
            operation=f"get manifest {ref}",
            hint="a manifest this large is not an image manifest; check the reference",
        )

    def get_manifest(self, ref: Reference) -> ImageManifest | ImageIndex:
        fetched = self.fetch_manifest(ref)
        return parse_manifest(fetched.raw, fetched.media_type)

    def head_manifest(self, ref: Reference) -> Descriptor | None:
        return self._pull(ref, self._head_manifest_at)

    def names(self, ref: Reference, digest: Digest) -> bool:
        """Whether ``ref``, where a push writes it (its own registry, never a mirror), already
        names ``digest`` (one HEAD)."""
        self._check_push(ref)
        found = self._head_manifest_at(ref)
        return found is not None and found.digest == digest

    def _head_manifest_at(self, ref: Reference) -> Descriptor | None:
        try:
            response = self._transport.request(
                "HEAD",
                ref.api_host,
                f"/v2/{ref.repository}/manifests/{ref.identifier}",
                operation=f"check manifest {ref}",
                scopes=[pull_scope(ref.repository)],
                headers={"Accept": ", ".join(mt.MANIFEST_MEDIA_TYPES)},
                follow_redirects=True,
                what=f"registry {ref.registry}",
            )
        except RegistryNotFoundError:
            return None
        digest = response.headers.get("Docker-Content-Digest") or ref.digest
        if not digest:
            # some registries omit the header on HEAD: fall back to GET
            fetched = self._fetch_manifest_at(ref, mt.MANIFEST_MEDIA_TYPES)
            return fetched.descriptor()
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return Descriptor(
            media_type, parse_digest(digest), int(response.headers.get("Content-Length", "0") or 0)
        )

    def put_manifest(self, ref: Reference, manifest_raw: bytes, media_type: str) -> Digest:
        self._check_push(ref)
        digest = sha256_bytes(manifest_raw)
        if len(manifest_raw) > MANIFEST_SIZE_LIMIT:
            raise RegistryError(
                f"manifest is {len(manifest_raw)} bytes, over the limit of {MANIFEST_SIZE_LIMIT}",
                operation=f"push manifest {ref}",
            )
        identifier = ref.tag or ref.digest or digest
        try:
            response = self._transport.request(
                "PUT",
                ref.api_host,
                f"/v2/{ref.repository}/manifests/{identifier}",
                operation=f"push manifest {ref}",
                scopes=[push_scope(ref.repository)],
                headers={"Content-Type": media_type},
                body=manifest_raw,
                ok=(200, 201, 202),
                what=f"registry {ref.registry}",
            )
        except RegistryError as exc:
            if exc.status in _MANIFEST_REFUSED and not isinstance(exc, RegistryAuthError):
                codes = {str(e.get("code", "")).upper() for e in exc.errors}
                exc.message = (
                    f"push manifest {ref}: registry {ref.registry} refused the manifest "
                    f"of media type {media_type} (HTTP {exc.status})"
                )
                exc.hint = exc.hint or _manifest_refused_hint(codes, media_type)
            raise
        served = response.headers.get("Docker-Content-Digest")
        if served and served.startswith("sha256:") and served != digest:
            raise DigestMismatchError(
                f"registry {ref.registry} stored manifest {ref} as {served}, expected {digest}",
                hint="the registry rewrote the manifest",
            )
        return digest

    def delete_manifest(self, ref: Reference, digest: Digest) -> None:
        self._transport.request(
            "DELETE",
            ref.api_host,
            f"/v2/{ref.repository}/manifests/{digest}",
            operation=f"delete manifest {digest} in {ref.repository_ref}",
            scopes=[f"repository:{ref.repository}:delete"],
            ok=(200, 202),
            what=f"registry {ref.registry}",
        )

    # -- blobs ---------------------------------------------------------------------------------
    def blob_exists(self, ref: Reference, digest: Digest, *, for_push: bool = False) -> bool:
        if for_push:
            self._check_push(ref)
            return self._blob_exists_at(ref, digest, for_push=True)
        sources = self.registries.pull_sources(ref)
        return any(self._blob_exists_at(source, digest, for_push=False) for source in sources)

    def _hold(self, ref: Reference, digest: Digest) -> None:
        self._held.add((ref.registry, ref.repository, digest))

    def _blob_exists_at(self, ref: Reference, digest: Digest, *, for_push: bool) -> bool:
        if (ref.registry, ref.repository, digest) in self._held:
            return True  # seen there moments ago in this build: a HEAD would say no more
        # before a push, ask for the push scope at once so one token serves the whole upload
        scope = push_scope(ref.repository) if for_push else pull_scope(ref.repository)
        try:
            self._transport.request(
                "HEAD",
                ref.api_host,
                f"/v2/{ref.repository}/blobs/{digest}",
                operation=f"check blob {digest} in {ref.repository_ref}",
                scopes=[scope],
                follow_redirects=True,
                what=f"registry {ref.registry}",
            )
        except RegistryNotFoundError:
            return False
        self._hold(ref, digest)
        return True

    def peek_blob(self, ref: Reference, desc: Descriptor, n: int) -> bytes | None:
        """The first ``n`` bytes of a blob, or ``None`` when the repository has no such blob: a
        ``GET`` with ``Range: bytes=0-(n-1)``, as cheap as a ``HEAD``, that also shows how the blob
        starts (its compression). A registry that ignores ``Range`` sends the whole blob; only
        ``n`` bytes are read before the response is closed."""
        path, wanted = f"/v2/{ref.repository}/blobs/{desc.digest}", first_bytes_range(n)
        answer = self._prefetched(ref, path, wanted)
        if answer is not None:  # read early as below (mason.registry.prefetch)
            self._hold(ref, desc.digest)
            return answer.body[:n]
        for source in self.registries.pull_sources(ref):
            head = self._peek_blob_at(source, desc, n)
            if head is not None:
                self._hold(source, desc.digest)
                return head
        return None

    def _peek_blob_at(self, ref: Reference, desc: Descriptor, n: int) -> bytes | None:
        try:
            response = self._transport.request(
                "GET",
                ref.api_host,
                f"/v2/{ref.repository}/blobs/{desc.digest}",
                operation=f"check blob {desc.digest} in {ref.repository_ref}",
                scopes=[pull_scope(ref.repository)],
                headers={"Range": first_bytes_range(n)},
                ok=(200, 206, 416),
                stream=True,
                follow_redirects=True,
                what=f"registry {ref.registry}",
            )
        except RegistryNotFoundError:
            return None
        try:
            head = b""
            if response.status_code != 416:  # 416: an empty blob has no byte 0
                for chunk in response.iter_bytes():
                    head += chunk
                    if len(head) >= n:
                        break
            return head[:n]
        finally:
            response.close()

    def open_blob_stream(self, ref: Reference, desc: Descriptor) -> BinaryIO:
        """Like ``open_blob`` but the caller closes the stream (for upload openers)."""
        answer = self._prefetched(ref, f"/v2/{ref.repository}/blobs/{desc.digest}")
        if answer is not None:  # verified as the registry's own stream is
            self._hold(ref, desc.digest)
            what = f"blob {desc.digest} from {ref.repository_ref}"
            early = VerifyingReader(io.BytesIO(answer.body), desc.digest, desc.size, what=what)
            return io.BufferedReader(early, buffer_size=_CHUNK)
        sources = self.registries.pull_sources(ref)
        # with mirrors: the first source that has the blob (a HEAD each), else the location
        ref = next(
            (s for s in sources[:-1] if self._blob_exists_at(s, desc.digest, for_push=False)),
            sources[-1],
        )
        raw = _ResumingBlobStream(self, ref, desc)
        verifying = VerifyingReader(
            raw, desc.digest, desc.size, what=f"blob {desc.digest} from {ref.repository_ref}"
        )
        return io.BufferedReader(verifying, buffer_size=_CHUNK)

    @contextlib.contextmanager
    def open_blob(self, ref: Reference, desc: Descriptor) -> Iterator[BinaryIO]:
        """A stream of the blob's bytes; reading to the end verifies digest and size."""
        stream = self.open_blob_stream(ref, desc)
        try:
            yield stream
        finally:
            stream.close()

    def fetch_blob(
        self, ref: Reference, desc: Descriptor, dest_path: str | os.PathLike[str]
    ) -> None:
        """Download into ``dest_path`` atomically; on any failure nothing is left behind."""
        import shutil

        dest = Path(dest_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(str(dest)) as out, self.open_blob(ref, desc) as src:
            shutil.copyfileobj(src, out, _CHUNK)

    def mount_blob(self, ref: Reference, digest: Digest, from_repository: str) -> bool:
        """Cross-repo mount; False (and the opened session cancelled) when the registry declines."""
        session = self._start_upload(ref, digest, from_repository)
        if session is None:
            self._hold(ref, digest)
            self._note_put(ref, digest)
            return True
        self._cancel_upload(ref, session.location)
        return False

    def _cancel_upload(self, ref: Reference, location: str) -> None:
        with contextlib.suppress(RegistryError):
            self._transport.request(
                "DELETE",
                ref.api_host,
                location,
                operation=f"cancel upload to {ref.repository_ref}",
                scopes=[push_scope(ref.repository)],
                ok=(200, 202, 204, 404),
                retry=False,
            )

    def open_upload_ahead(self, ref: Reference) -> None:
        """Open one upload session into ``ref``'s repository now, in the background (unless
        one is open or opening), for the next monolithic upload there that mounts nothing
        (``keep_upload_ahead`` says what happens to it)."""
        self._ahead.open(ref, self._ahead_session(ref))

    def keep_upload_ahead(self, ref: Reference) -> None:
        """Keep an upload session open into ``ref``'s repository, until
        ``stop_upload_ahead``: one is opened now, in the background, and each one an upload
        takes is replaced at once. The monolithic uploads there that mount nothing take it
        instead of POSTing (issue 14: a registry cache's config is put after the last step,
        and its POST was on the export's path); the one left open when the keeping stops is
        for the next such upload. One that failed to open, or grew old, gives way to a
        session of the upload's own; one never taken is cancelled by ``close``."""
        self._ahead.keep(ref, self._ahead_session(ref))

    def stop_upload_ahead(self, ref: Reference) -> None:
        """No more sessions opened for ``ref``'s repository; the one open (or opening) stays
        for the next upload there."""
        self._ahead.stop(ref)

    def _ahead_session(self, ref: Reference) -> Callable[[], _UploadSession]:
        def start() -> _UploadSession:
            session = self._start_upload(ref, None, None)
            assert session is not None  # only a mount answers with no session
            return _UploadSession(session.location, session.min_chunk, ahead=True)

        return start

    def _opened_ahead(self, ref: Reference) -> _UploadSession | None:
        session, young = self._ahead.take(ref)
        if session is not None and not young:
            in_daemon_thread("upload-cancel", self._cancel_upload, ref, session.location)
            return None
        return session

    def _start_upload(
        self, ref: Reference, digest: Digest | None, mount_from: str | None
    ) -> _UploadSession | None:
        """POST an upload; returns the session, or None when the blob was mounted."""
        self._check_push(ref)
        scopes = [push_scope(ref.repository)]
        params: dict[str, str] = {}
        if mount_from and digest and mount_from != ref.repository:
            scopes.append(pull_scope(mount_from))
            params = {"mount": digest, "from": mount_from}
        response = self._transport.request(
            "POST",
            ref.api_host,
            f"/v2/{ref.repository}/blobs/uploads/",
            operation=f"start blob upload to {ref.repository_ref}",
            scopes=scopes,
            params=params,
            ok=(201, 202),
            headers={"Content-Length": "0"},
            what=f"registry {ref.registry}",
        )
        if response.status_code == 201 and params:
            return None
        location: str | None = response.headers.get("Location")
        if not location:
            raise RegistryError(
                "the registry opened an upload without a Location header",
                operation=f"start blob upload to {ref.repository_ref}",
                method="POST",
                url=response.request.url,
                status=response.status_code,
            )
        min_chunk = response.headers.get("OCI-Chunk-Min-Length", "")
        return _UploadSession(location, int(min_chunk) if min_chunk.isdigit() else 0)

    def push_blob(
        self,
        ref: Reference,
        desc: Descriptor,
        opener: Callable[[], IO[bytes]],
        *,
        mount_from: str | None = None,
    ) -> bool:
        """Upload a blob unless the repository has it; False when it already existed."""
        return self.push_blob_outcome(ref, desc, opener, mount_from=mount_from) != "exists"

    def push_blob_outcome(
        self,
        ref: Reference,
        desc: Descriptor,
        opener: Callable[[], IO[bytes]],
        *,
        mount_from: str | None = None,
        chunked: bool = False,
        ask_first: bool = True,
    ) -> PushOutcome:
        """Like ``push_blob`` but says how: ``exists``, ``mounted`` or ``uploaded``. ``chunked``
        uploads in chunks whatever the size (``mason registry check`` tries that path).
        ``ask_first=False``: no ``HEAD`` first (the caller knows the blob is new)."""
        if ask_first and self.blob_exists(ref, desc.digest, for_push=True):
            outcome: PushOutcome = "exists"
        else:
            self._check_push(ref)
            outcome = self._send_blob(ref, desc, opener, mount_from, chunked)
        self._hold(ref, desc.digest)
        if outcome != "exists":
            self._note_put(ref, desc.digest)
        return outcome

    def _note_put(self, ref: Reference, digest: Digest) -> None:
        self._put_in.setdefault((ref.registry, digest), set()).add(ref.repository)

    def put_repositories(self, registry: str, digest: Digest) -> list[str]:
        """The repositories of ``registry`` this client put ``digest`` into."""
        return sorted(self._put_in.get((registry, digest), ()))

    def _send_blob(
        self,
        ref: Reference,
        desc: Descriptor,
        opener: Callable[[], IO[bytes]],
        mount_from: str | None,
        chunked: bool,
    ) -> PushOutcome:
        host = ref.api_host
        refused = self._monolithic_limit.get(host)
        large = desc.size > self.chunk_threshold or (refused is not None and desc.size >= refused)
        if chunked or large:
            return self._push_chunked(ref, desc, opener, mount_from)
        budget = _Budget(self.retry.attempts)
        ahead = self._opened_ahead(ref) if mount_from is None else None
        while True:
            session = ahead or self._start_upload(ref, desc.digest, mount_from)
            ahead = None
            if session is None:
                return "mounted"
            mount_from = None  # declined once: later sessions are plain uploads
            try:
                self._upload_monolithic(ref, desc, opener, session.location)
                return "uploaded"
            except RegistryError as exc:
                if session.ahead and exc.status != 413:
                    continue  # the registry may have dropped it meanwhile: one of its own
                if exc.status == 413:
                    # the body is over a limit (a proxy's, or a registry that wants chunks):
                    # upload in chunks, and do so at once for blobs this large from now on
                    self._cancel_upload(ref, session.location)
                    self._monolithic_limit[host] = min(
                        desc.size, self._monolithic_limit.get(host, desc.size)
                    )
                    return self._push_chunked(ref, desc, opener, None)
                if not _retryable(exc) or not budget.failed(0):
                    raise _gave_up(exc, budget) from None
                self._transport.backoff(budget.streak - 1)

    def _upload_monolithic(
        self, ref: Reference, desc: Descriptor, opener: Callable[[], IO[bytes]], location: str
    ) -> None:
        self._transport.request(
            "PUT",
            ref.api_host,
            location,
            params={"digest": desc.digest},
            operation=f"push blob {desc.digest} to {ref.repository_ref}",
            scopes=[push_scope(ref.repository)],
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)},
            body=opener,
            ok=(201, 204),
            retry=False,
            what=f"registry {ref.registry}",
        )

    def _push_chunked(
        self,
        ref: Reference,
        desc: Descriptor,
        opener: Callable[[], IO[bytes]],
        mount_from: str | None,
    ) -> PushOutcome:
        session = self._start_upload(ref, desc.digest, mount_from)
        if session is None:
            return "mounted"
        upload = _ChunkedUpload(self, ref, desc, opener, session)
        try:
            upload.run()
        finally:
            upload.close()
        return "uploaded"

    def upload_status(self, ref: Reference, location: str) -> tuple[int, str] | None:
        """What the registry holds of an upload session (``GET`` on its location): the bytes it
        acknowledged and the location to continue at; None when the session is gone."""
        try:
            response = self._transport.request(
                "GET",
                ref.api_host,
                location,
                operation=f"check blob upload to {ref.repository_ref}",
                scopes=[push_scope(ref.repository)],
                ok=(200, 204),
                what=f"registry {ref.registry}",
            )
        except RegistryError as exc:
            if (
                exc.status is not None
                and exc.status < 500
                and not isinstance(exc, RegistryAuthError)
            ):
                return None  # unknown (404) or invalidated (400, 416): start a new session
            raise
        acked = _acknowledged(response.headers.get("Range"))
        return (0 if acked is None else acked), response.headers.get("Location", location)

    def probe(
        self,
        method: str,
        ref: Reference,
        path: str,
        *,
        operation: str,
        scopes: Sequence[str],
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        ok: Iterable[int] = (200,),
    ) -> tuple[int, dict[str, str]]:
        """One request whose answer is the point (``mason registry check``): its status and
        headers when the status is in ``ok``; else the ``RegistryError`` with the registry's own
        errors. No retries: a feature probe reports what the registry said the first time."""
        response = self._transport.request(
            method,
            ref.api_host,
            path,
            operation=operation,
            scopes=scopes,
            headers=headers,
            body=body,
            ok=ok,
            retry=False,
            what=f"registry {ref.registry}",
        )
        return response.status_code, {k.lower(): v for k, v in response.headers.items()}

    # -- tags ----------------------------------------------------------------------------------
    def list_tags(self, ref: Reference, page_size: int | None = None) -> list[str]:
        tags: list[str] = []
        path: str | None = f"/v2/{ref.repository}/tags/list"
        params = {"n": str(page_size)} if page_size else None
        pages = 0
        while path is not None:
            response = self._transport.request(
                "GET",
                ref.api_host,
                path,
                operation=f"list tags of {ref.repository_ref}",
                scopes=[pull_scope(ref.repository)],
                params=params,
                what=f"registry {ref.registry}",
            )
            params = None  # the Link URL carries its own query
            try:
                doc = response.json()
            except ValueError as exc:
                raise RegistryError(
                    "the tag list is not JSON",
                    operation=f"list tags of {ref.repository_ref}",
                    method="GET",
                    url=response.request.url,
                    status=response.status_code,
                ) from exc
            tags.extend(t for t in (doc.get("tags") or []) if isinstance(t, str))
            path = _next_link(response.headers.get("Link"))
            pages += 1
            if pages > 10000:
                raise RegistryError(
                    "tag list pagination does not end",
                    operation=f"list tags of {ref.repository_ref}",
                )
        return tags


def _read_up_to(src: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes; fewer only at the end of the stream."""
    parts: list[bytes] = []
    while n > 0:
        data = src.read(n)
        if not data:
            break
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


def _retryable(exc: RegistryError) -> bool:
    return exc.status is None or exc.status in RETRY_STATUSES


def _gave_up(exc: RegistryError, budget: _Budget, done: str = "") -> RegistryError:
    """``exc`` with the number of attempts the whole upload made (not the last request's)."""
    if budget.attempts > 1:
        text = exc.message.removeprefix(f"{exc.operation}: ")
        exc.message = f"{exc.operation}: gave up after {budget.attempts} attempt(s){done}: {text}"
    return exc


def _acknowledged(header: str | None) -> int | None:
    """Bytes an upload's ``Range: 0-<last>`` header acknowledges (``0-0`` is read as none:
    registries send it for an empty upload, and every chunk is longer than one byte)."""
    match = re.fullmatch(r"(?:bytes=)?0-(\d+)", (header or "").strip())
    if match is None:
        return None
    last = int(match.group(1))
    return last + 1 if last > 0 else 0


def _skip_bytes(src: IO[bytes], n: int) -> int:
    """Read and drop ``n`` bytes; how many were there."""
    done = 0
    while done < n:
        data = src.read(min(_CHUNK, n - done))
        if not data:
            break
        done += len(data)
    return done


def _verified_manifest(
    ref: Reference, raw: bytes, header: Callable[[str], str | None]
) -> FetchedManifest:
    """A manifest's bytes checked against the ref's digest (else ``Docker-Content-Digest``),
    with its media type (``Content-Type``, else the document's own)."""
    digest = sha256_bytes(raw)
    expected = ref.digest or header("Docker-Content-Digest")
    if expected and expected.startswith("sha256:") and expected != digest:
        raise DigestMismatchError(
            f"manifest {ref} failed verification: expected {expected}, got {digest}",
            hint="the registry served different bytes than the digest promises",
        )
    media_type = (header("Content-Type") or "").split(";")[0].strip()
    if not media_type or media_type in (
        "application/json",
        "application/octet-stream",
        "text/plain",
    ):
        media_type = _media_type_from_body(raw) or media_type
    return FetchedManifest(raw, media_type, digest)


def _media_type_from_body(raw: bytes) -> str | None:
    import json

    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(doc, dict):
        if isinstance(doc.get("mediaType"), str):
            return str(doc["mediaType"])
        if "manifests" in doc:
            return mt.OCI_INDEX
        if "config" in doc:
            return mt.OCI_MANIFEST
    return None
