"""An in-process fake of a distribution registry, the ``send`` of a ``RegistryClient`` (no sockets).

Enough of the distribution spec for client tests: ping, manifests, blobs (GET/HEAD,
monolithic and chunked uploads, cross-repo mounts), tag lists with ``Link``
pagination, Basic or Bearer auth with a token endpoint, plus fault injection:
corrupt or truncated blobs, scripted error statuses, redirects to another host,
mounts that open an upload session instead.

Quirks of other registries, for behaviours the CNCF registry cannot show: a token
realm on another host and port (``token_realm``, ``service``; Docker Hub's
``auth.docker.io``), private repositories whose anonymous pulls get 401, 403 or 404
(``private_repos``, ``private_denial``), a request body limit like a proxy's
(``max_body``: 413), ``OCI-Chunk-Min-Length`` (``chunk_min_length``), manifest
media types the registry refuses (``accepted_manifest_types``, ECR-like) and the
``Retry-After`` value sent with an injected 429 (``retry_after``).

Breaks for resume tests: blob bodies cut after N bytes (``cut_after``), a server that
ignores ``Range`` (``ignore_range``) or answers the wrong one (``wrong_range``), every
k-th PATCH reset (``reset_patch_every``, ``reset_patches``) before or after (``reset_after_store``) its
chunk is stored, and distribution's habit of dropping the session when a PATCH broke
off (``drop_session_on_reset``). ``GET`` on an upload reports its ``Range``.
"""

from __future__ import annotations

import base64
import hashlib
import json as _json
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mason.registry.wire import ReadError, Request, Response

__all__ = ["FakeRegistry", "RecordedRequest"]

_TOKEN_HOST = "auth.fake.test"
_STORAGE_HOST = "storage.fake.test"


@dataclass
class RecordedRequest:
    method: str
    url: str
    authorization: str | None
    status: int


def _truncated(data: bytes) -> Iterator[bytes]:
    yield data
    raise ReadError("connection reset by fake registry")


def respond(
    status: int,
    *,
    headers: Mapping[str, str] | None = None,
    content: bytes = b"",
    json: Any = None,
    stream: Iterator[bytes] | None = None,
) -> Response:
    """A response as a server would send it (``json``: a JSON body with its content type)."""
    fields = dict(headers or {})
    if json is not None:
        content = _json.dumps(json).encode()
        fields.setdefault("Content-Type", "application/json")
    if stream is None:
        fields.setdefault("Content-Length", str(len(content)))
    return Response(status, fields, content if stream is None else stream)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _errors(code: str, message: str, detail: object = None) -> bytes:
    return _json.dumps({"errors": [{"code": code, "message": message, "detail": detail}]}).encode()


@dataclass
class FakeRegistry:
    host: str = "registry.fake.test"
    auth: str | None = None  # None | "basic" | "bearer"
    username: str = "user"
    password: str = "pass"
    token_expires_in: int = 300
    token_field: str = "token"
    anonymous_pull: bool = False
    tag_page_size: int | None = None
    redirect_blobs: bool = False
    mount_supported: bool = True
    #: blobs served with these bytes instead of their own (digest -> bytes)
    corrupt: dict[str, bytes] = field(default_factory=dict)
    #: blob digests whose next N GETs break off half way
    truncate: dict[str, int] = field(default_factory=dict)
    #: (method, path regex) -> statuses to answer, in order, before behaving normally
    faults: list[tuple[str, str, list[int]]] = field(default_factory=list)
    #: tokens that the registry should treat as revoked (401 mid-transfer)
    revoked: set[str] = field(default_factory=set)
    token_realm: str = f"https://{_TOKEN_HOST}/token"
    service: str = "fake"
    #: repositories only an authenticated token may pull; anonymous pulls get ``private_denial``
    private_repos: set[str] = field(default_factory=set)
    private_denial: int = 401
    #: upload requests (PUT/PATCH) with a body over this many bytes get 413, as from a proxy
    max_body: int | None = None
    chunk_min_length: int | None = None
    #: manifest media types a PUT may carry (None: any)
    accepted_manifest_types: set[str] | None = None
    retry_after: str = "0"
    #: blob digest -> body lengths: each GET of the blob takes the next and breaks off after it
    cut_after: dict[str, list[int]] = field(default_factory=dict)
    #: serve every ranged GET as a full 200 (a server without Range support)
    ignore_range: bool = False
    #: answer a ranged GET with a 206 from byte 0 (a broken server)
    wrong_range: bool = False
    #: every k-th PATCH breaks off (a connection reset); ``reset_patches``: exactly these (1-based)
    reset_patch_every: int | None = None
    reset_patches: set[int] = field(default_factory=set)
    #: ... after the registry stored the chunk (the response is what is lost)
    reset_after_store: bool = False
    #: a broken-off PATCH invalidates its session (as the CNCF registry's offset check does)
    drop_session_on_reset: bool = False
    #: these PATCHes (1-based) are answered 404 BLOB_UPLOAD_INVALID and end their session, as the
    #: CNCF registry answers a PATCH whose session a half body invalidated
    refuse_patches: set[int] = field(default_factory=set)
    #: DELETE of manifests (by digest or, as OCI distribution 1.1 allows, by tag); False: 405
    delete_enabled: bool = True
    #: a manifest PUT with an ``If-Match`` that is not the tag's current digest gets 412
    if_match: bool = False

    def __post_init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.repo_blobs: dict[str, set[str]] = {}
        self.manifests: dict[str, dict[str, tuple[bytes, str]]] = {}
        self.tags: dict[str, dict[str, str]] = {}
        self.uploads: dict[str, tuple[str, bytearray]] = {}
        self.short_chunk: dict[str, bool] = {}
        self.requests: list[RecordedRequest] = []
        self.tokens: dict[str, set[str]] = {}
        self.user_tokens: set[str] = set()
        self.token_requests = 0
        #: (service, scopes) of every token request
        self.token_queries: list[tuple[str, list[str]]] = []
        self.patches = 0
        #: (status, Range header, Content-Range header) of every blob GET served
        self.blob_gets: list[tuple[int, str | None, str | None]] = []
        #: Content-Range of every PATCH that reached the registry (reset ones included)
        self.patch_ranges: list[str] = []

    def __call__(self, request: Request) -> Response:
        """A ``RegistryClient``'s ``send``: this registry answers its requests."""
        return self.handle(request)

    # -- seeding -------------------------------------------------------------------------
    def add_blob(self, repo: str, data: bytes) -> str:
        digest = _sha256(data)
        self.blobs[digest] = data
        self.repo_blobs.setdefault(repo, set()).add(digest)
        return digest

    def add_manifest(self, repo: str, raw: bytes, media_type: str, tag: str | None = None) -> str:
        digest = _sha256(raw)
        self.manifests.setdefault(repo, {})[digest] = (raw, media_type)
        if tag:
            self.tags.setdefault(repo, {})[tag] = digest
        return digest

    def count(self, method: str, pattern: str) -> int:
        rx = re.compile(pattern)
        return sum(1 for r in self.requests if r.method == method and rx.search(r.url))

    # -- dispatch ------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        response = self._dispatch(request)
        self.requests.append(
            RecordedRequest(
                request.method,
                str(request.url),
                request.headers.get("Authorization"),
                response.status_code,
            )
        )
        return response

    def _dispatch(self, request: Request) -> Response:
        url = urlsplit(request.url)
        realm = urlsplit(self.token_realm)
        if url.netloc == realm.netloc and url.path == realm.path:
            return self._token(request)
        if url.hostname == _STORAGE_HOST:
            digest = url.path.rsplit("/", 1)[-1]
            return self._serve_blob(digest, request)
        if url.scheme != "https":
            return respond(400, content=b"Client sent an HTTP request to an HTTPS server.")
        path = url.path
        for method, pattern, statuses in self.faults:
            if method == request.method and re.search(pattern, path) and statuses:
                status = statuses.pop(0)
                headers = {"Retry-After": self.retry_after} if status == 429 else {}
                return respond(
                    status, headers=headers, content=_errors("FAULT", f"injected {status}")
                )
        if path == "/v2/" or path == "/v2":
            denied = self._check_auth(request, None)
            return denied or respond(200, json={})
        match = re.match(r"^/v2/(?P<repo>.+?)/(?P<kind>manifests|blobs|tags)/(?P<rest>.*)$", path)
        if not match:
            return respond(404, content=_errors("NOT_FOUND", "no route"))
        repo, kind, rest = match["repo"], match["kind"], match["rest"]
        write = request.method in ("PUT", "POST", "PATCH", "DELETE")
        header = request.headers.get("Authorization", "")
        if (
            repo in self.private_repos
            and header[7:] in self.tokens
            and not self._authenticated(request)
        ):
            return self._deny_private(
                repo, write
            )  # an anonymous token: its grant left this repo out
        denied = self._check_auth(request, (repo, "push" if write else "pull"))
        if denied:
            return denied
        if repo in self.private_repos and not self._authenticated(request):
            return self._deny_private(repo, write)
        if kind == "tags":
            return self._tags(repo, request)
        if kind == "manifests":
            return self._manifest(repo, rest, request)
        if rest.startswith("uploads"):
            return self._upload(repo, rest, request)
        if request.method in ("GET", "HEAD"):
            if rest not in self.repo_blobs.get(repo, set()):
                return respond(
                    404, content=_errors("BLOB_UNKNOWN", "blob unknown to registry", rest)
                )
            if self.redirect_blobs and request.method == "GET":
                return respond(
                    307, headers={"Location": f"https://{_STORAGE_HOST}/data/{rest}?sig=secret"}
                )
            return self._serve_blob(rest, request)
        return respond(405)

    # -- auth ----------------------------------------------------------------------------
    def _check_auth(self, request: Request, need: tuple[str, str] | None) -> Response | None:
        if self.auth is None:
            return None
        header = request.headers.get("Authorization", "")
        if self.auth == "basic":
            expected = (
                "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            )
            if header == expected:
                return None
            return respond(
                401,
                headers={"WWW-Authenticate": 'Basic realm="fake"'},
                content=_errors("UNAUTHORIZED", "authentication required"),
            )
        token = header[7:] if header.startswith("Bearer ") else ""
        granted = self.tokens.get(token)
        if (
            token
            and token not in self.revoked
            and granted is not None
            and (need is None or f"{need[0]}:{need[1]}" in granted)
        ):
            return None
        return self._challenge(need, _errors("UNAUTHORIZED", "authentication required"))

    def _challenge(self, need: tuple[str, str] | None, body: bytes) -> Response:
        if self.auth == "basic":
            return respond(401, headers={"WWW-Authenticate": 'Basic realm="fake"'}, content=body)
        scope = (
            f',scope="repository:{need[0]}:{"pull,push" if need[1] == "push" else "pull"}"'
            if need
            else ""
        )
        challenge = f'Bearer realm="{self.token_realm}",service="{self.service}"{scope}'
        return respond(401, headers={"WWW-Authenticate": challenge}, content=body)

    def _authenticated(self, request: Request) -> bool:
        """Whether the request carries a user's credentials (not an anonymous token)."""
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            return True
        return header[7:] in self.user_tokens

    def _deny_private(self, repo: str, write: bool) -> Response:
        action = "push" if write else "pull"
        detail = [{"Type": "repository", "Class": "", "Name": repo, "Action": action}]
        if self.private_denial == 404:
            return respond(
                404,
                content=_errors(
                    "NAME_UNKNOWN", "repository name not known to registry", {"name": repo}
                ),
            )
        if self.private_denial == 403:
            return respond(
                403, content=_errors("DENIED", "requested access to the resource is denied", detail)
            )
        return self._challenge(
            (repo, action), _errors("UNAUTHORIZED", "authentication required", detail)
        )

    def _token(self, request: Request) -> Response:
        self.token_requests += 1
        query = parse_qs(urlsplit(str(request.url)).query)
        self.token_queries.append((query.get("service", [""])[0], query.get("scope", [])))
        header = request.headers.get("Authorization", "")
        authed = False
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if (user, password) != (self.username, self.password):
                return respond(401, json={"details": "incorrect username or password"})
            authed = True
        elif not self.anonymous_pull:
            return respond(401, json={"details": "anonymous access denied"})
        granted: set[str] = set()
        for scope in query.get("scope", []):
            _, name, actions = (
                scope.split(":")[0],
                ":".join(scope.split(":")[1:-1]),
                scope.split(":")[-1],
            )
            for action in actions.split(","):
                # anonymous: pull of public repositories only (a partial grant, no error)
                if authed or (action == "pull" and name not in self.private_repos):
                    granted.add(f"{name}:{action}")
        token = secrets.token_hex(8)
        self.tokens[token] = granted
        if authed:
            self.user_tokens.add(token)
        return respond(200, json={self.token_field: token, "expires_in": self.token_expires_in})

    # -- handlers ------------------------------------------------------------------------
    def _serve_blob(self, digest: str, request: Request) -> Response:
        data = self.corrupt.get(digest, self.blobs.get(digest))
        if data is None:
            return respond(404, content=_errors("BLOB_UNKNOWN", "blob unknown", digest))
        headers = {"Docker-Content-Digest": digest, "Content-Length": str(len(data))}
        if request.method == "HEAD":
            return respond(200, headers=headers)
        start = 0
        rng = request.headers.get("Range")
        if rng and (m := re.match(r"bytes=(\d+)-", rng)) and not self.ignore_range:
            start = int(m.group(1))
        served_from = 0 if self.wrong_range else start
        body = data[served_from:]
        status = 206 if start else 200
        if status == 206:
            headers["Content-Range"] = f"bytes {served_from}-{len(data) - 1}/{len(data)}"
        headers["Content-Length"] = str(len(body))
        self.blob_gets.append((status, rng, headers.get("Content-Range")))
        if self.truncate.get(digest, 0) > 0:
            self.truncate[digest] -= 1
            return respond(
                status, headers=headers, stream=_truncated(body[: max(1, len(body) // 2)])
            )
        cuts = self.cut_after.get(digest)
        if cuts:
            return respond(status, headers=headers, stream=_truncated(body[: cuts.pop(0)]))
        return respond(status, headers=headers, content=body)

    def _delete_manifest(self, repo: str, ident: str) -> Response:
        if not self.delete_enabled:
            return respond(405, content=_errors("UNSUPPORTED", "The operation is unsupported."))
        tags = self.tags.get(repo, {})
        if not ident.startswith("sha256:"):
            return respond(202) if tags.pop(ident, None) else respond(404)
        if self.manifests.get(repo, {}).pop(ident, None) is None:
            return respond(404, content=_errors("MANIFEST_UNKNOWN", "manifest unknown"))
        for tag in [t for t, d in tags.items() if d == ident]:
            del tags[tag]
        return respond(202)

    def _stale_if_match(self, repo: str, ident: str, request: Request) -> bool:
        wanted = request.headers.get("If-Match")
        if not self.if_match or wanted is None:
            return False
        return wanted.strip('"') != self.tags.get(repo, {}).get(ident, "")

    def _manifest(self, repo: str, ident: str, request: Request) -> Response:
        if request.method == "DELETE":
            return self._delete_manifest(repo, ident)
        if request.method == "PUT" and self._stale_if_match(repo, ident, request):
            return respond(412, content=_errors("PRECONDITION_FAILED", "If-Match"))
        if request.method == "PUT":
            raw = request.read()
            media_type = request.headers.get("Content-Type", "")
            if (
                self.accepted_manifest_types is not None
                and media_type not in self.accepted_manifest_types
            ):
                return respond(
                    400,
                    content=_errors(
                        "MANIFEST_INVALID",
                        "manifest invalid",
                        f"unsupported manifest media type {media_type}",
                    ),
                )
            digest = self.add_manifest(
                repo,
                raw,
                request.headers.get("Content-Type", ""),
                None if ident.startswith("sha256:") else ident,
            )
            return respond(
                201,
                headers={
                    "Docker-Content-Digest": digest,
                    "Location": f"/v2/{repo}/manifests/{digest}",
                },
            )
        digest = ident if ident.startswith("sha256:") else self.tags.get(repo, {}).get(ident)
        entry = self.manifests.get(repo, {}).get(digest or "")
        if entry is None:
            return respond(
                404, content=_errors("MANIFEST_UNKNOWN", "manifest unknown", {"tag": ident})
            )
        raw, media_type = entry
        headers = {
            "Content-Type": media_type,
            "Docker-Content-Digest": str(digest),
            "Content-Length": str(len(raw)),
        }
        return respond(200, headers=headers, content=b"" if request.method == "HEAD" else raw)

    def _tags(self, repo: str, request: Request) -> Response:
        tags = sorted(self.tags.get(repo, {}))
        if not tags:
            return respond(
                404, content=_errors("NAME_UNKNOWN", "repository name not known", {"name": repo})
            )
        query = parse_qs(urlsplit(str(request.url)).query)
        last = query.get("last", [""])[0]
        n = int(query.get("n", [str(self.tag_page_size or 0)])[0] or 0) or self.tag_page_size
        rest = [t for t in tags if t > last]
        page = rest[:n] if n else rest
        headers = {}
        if n and len(rest) > n:
            headers["Link"] = f'</v2/{repo}/tags/list?n={n}&last={page[-1]}>; rel="next"'
        return respond(200, headers=headers, json={"name": repo, "tags": page})

    def _reset_patch(self, uid: str, request: Request) -> Response:
        if self.reset_after_store:
            self._store_chunk(uid, request)
        elif self.drop_session_on_reset:
            del self.uploads[uid]
        raise ReadError("connection reset by fake registry")

    def _store_chunk(self, uid: str, request: Request) -> Response | None:
        """Append a PATCH body; an error response when it is out of order or too small."""
        _, buffer = self.uploads[uid]
        body = request.read()
        start = int(request.headers.get("Content-Range", "0-0").split("-")[0])
        short = self.short_chunk.get(uid, False)
        if start != len(buffer) or short:  # out of order, or a short chunk that was not the last
            return respond(
                416, content=_errors("BLOB_UPLOAD_INVALID", "chunk out of order or too small")
            )
        self.short_chunk[uid] = bool(self.chunk_min_length and len(body) < self.chunk_min_length)
        buffer.extend(body)
        return None

    def _upload(self, repo: str, rest: str, request: Request) -> Response:
        query = parse_qs(urlsplit(str(request.url)).query)
        if request.method == "POST":
            mount, source = query.get("mount", [None])[0], query.get("from", [None])[0]
            if (
                mount
                and source
                and self.mount_supported
                and mount in self.repo_blobs.get(source, set())
            ):
                self.repo_blobs.setdefault(repo, set()).add(mount)
                return respond(
                    201,
                    headers={
                        "Location": f"/v2/{repo}/blobs/{mount}",
                        "Docker-Content-Digest": mount,
                    },
                )
            uid = secrets.token_hex(6)
            self.uploads[uid] = (repo, bytearray())
            headers = {"Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=abc", "Range": "0-0"}
            if self.chunk_min_length:
                headers["OCI-Chunk-Min-Length"] = str(self.chunk_min_length)
            return respond(202, headers=headers)
        uid = rest.split("/", 1)[1] if "/" in rest else ""
        if uid not in self.uploads:
            return respond(404, content=_errors("BLOB_UPLOAD_UNKNOWN", "blob upload unknown"))
        _, buffer = self.uploads[uid]
        if request.method == "DELETE":
            del self.uploads[uid]
            return respond(204)
        if request.method == "GET":
            last = max(len(buffer) - 1, 0)  # "0-0" for an empty upload, as the CNCF registry says
            return respond(
                204,
                headers={
                    "Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=s{len(buffer)}",
                    "Range": f"0-{last}",
                    "Docker-Upload-UUID": uid,
                },
            )
        if request.method == "PATCH":
            self.patches += 1
            self.patch_ranges.append(request.headers.get("Content-Range", ""))
            every = self.reset_patch_every
            if (every and self.patches % every == 0) or self.patches in self.reset_patches:
                return self._reset_patch(uid, request)
            if self.patches in self.refuse_patches:
                del self.uploads[uid]
                return respond(404, content=_errors("BLOB_UPLOAD_INVALID", "blob upload invalid"))
        body = request.read()
        if self.max_body is not None and len(body) > self.max_body:
            return respond(
                413, content=b"<html><body><h1>413 Request Entity Too Large</h1></body></html>"
            )
        if request.method == "PATCH":
            refused = self._store_chunk(uid, request)
            if refused is not None:
                return refused
            return respond(
                202,
                headers={
                    "Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=n{len(buffer)}",
                    "Range": f"0-{len(buffer) - 1}",
                },
            )
        if request.method == "PUT":
            buffer.extend(body)
            expected = query.get("digest", [""])[0]
            if _sha256(bytes(buffer)) != expected:
                del self.uploads[uid]
                return respond(
                    400,
                    content=_errors(
                        "DIGEST_INVALID", "provided digest did not match uploaded content"
                    ),
                )
            del self.uploads[uid]
            self.add_blob(repo, bytes(buffer))
            return respond(
                201,
                headers={
                    "Location": f"/v2/{repo}/blobs/{expected}",
                    "Docker-Content-Digest": expected,
                },
            )
        return respond(405)
