"""Registry credentials and the ``WWW-Authenticate`` flows (Basic and Bearer tokens).

Credentials come from Docker's ``config.json`` (``auths``, ``credHelpers``,
``credsStore`` through ``docker-credential-*`` helpers) and from containers'
``auth.json``. The CLI reads the environment (``$DOCKER_CONFIG``,
``$REGISTRY_AUTH_FILE``) and passes the values to ``CredentialStore.from_environment``.

Bearer tokens are cached per registry and scope set; a cached token is reused
for any request whose scopes it covers and refreshed shortly before it expires.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from mason.errors import DiagnosticError
from mason.registry.errors import (
    RegistryAuthError,
    RegistryError,
    parse_registry_errors,
    redact_url,
)
from mason.registry.wire import Request, Response, TransportError
from mason.structs import Struct, field, repr_without

__all__ = [
    "Challenge",
    "CredentialError",
    "CredentialStore",
    "Credentials",
    "HelperRunner",
    "TokenAuthenticator",
    "parse_challenges",
    "pull_scope",
    "push_scope",
]

#: seconds before expiry at which a cached token is considered stale
_REFRESH_MARGIN = 30.0
#: the distribution token spec's default lifetime when ``expires_in`` is missing
_DEFAULT_EXPIRES_IN = 60
_DOCKER_HUB_KEYS = (
    "https://index.docker.io/v1/",
    "index.docker.io",
    "docker.io",
    "registry-1.docker.io",
)


class CredentialError(DiagnosticError):
    """A credentials file or helper could not be read."""

    reference = "registry-credentials"


class Credentials(Struct, frozen=True):
    username: str = ""
    password: str = ""
    #: an OAuth2 refresh token (Docker's ``identitytoken``), used instead of the password
    identity_token: str = ""

    # never shown: secrets
    __repr__ = repr_without("password", "identity_token")

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


#: runs ``docker-credential-<helper> get`` for a server; returns the helper's JSON or None
HelperRunner = Callable[[str, str], "Mapping[str, Any] | None"]
#: sends a token request and returns its response, read (the ``Transport``'s)
Fetch = Callable[[Request], Response]


def _run_helper(helper: str, server: str) -> Mapping[str, Any] | None:
    import subprocess  # only a configured credential helper runs one (start-up, issue 14)

    program = f"docker-credential-{helper}"
    try:
        result = subprocess.run(
            [program, "get"], input=server.encode(), capture_output=True, timeout=30, check=False
        )
    except FileNotFoundError as exc:
        raise CredentialError(
            f"credential helper {program} is not installed",
            hint="install it or remove it from credHelpers/credsStore in the Docker config",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise CredentialError(f"credential helper {program} timed out for {server}") from exc
    if result.returncode != 0:
        message = (
            result.stdout.decode(errors="replace").strip()
            or result.stderr.decode(errors="replace").strip()
        )
        if "not found" in message.lower():
            return None
        raise CredentialError(f"credential helper {program} failed for {server}: {message[:200]}")
    try:
        doc = json.loads(result.stdout)
    except ValueError as exc:
        raise CredentialError(
            f"credential helper {program} printed invalid JSON for {server}"
        ) from exc
    return doc if isinstance(doc, dict) else None


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialError(f"cannot read credentials file {path}: {exc.strerror}") from exc
    try:
        doc = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise CredentialError(f"credentials file {path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CredentialError(f"credentials file {path} is not a JSON object")
    return doc


def _candidate_keys(host: str, repository: str | None) -> list[str]:
    keys: list[str] = []
    if repository:
        parts = repository.split("/")
        keys.extend(f"{host}/{'/'.join(parts[:i])}" for i in range(len(parts), 0, -1))
    keys.extend(
        [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]
    )
    if host in _DOCKER_HUB_KEYS:
        keys.extend(_DOCKER_HUB_KEYS)
    return keys


def _normalise_key(key: str) -> str:
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key.rstrip("/").removesuffix("/v1").removesuffix("/v2")


class CredentialStore:
    """Looks credentials up by registry host (and repository, for auth.json's scoped keys)."""

    def __init__(
        self,
        *,
        docker_config: Mapping[str, Any] | None = None,
        auth_files: Iterable[Mapping[str, Any]] = (),
        static: Mapping[str, Credentials] | None = None,
        helper_runner: HelperRunner = _run_helper,
    ) -> None:
        self._docker = dict(docker_config or {})
        self._auth_files = [dict(a) for a in auth_files]
        self._static = dict(static or {})
        self._run_helper = helper_runner
        self._cache: dict[tuple[str, str | None], Credentials | None] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_environment(
        cls,
        docker_config_dir: str | None,
        registry_auth_file: str | None,
        *,
        home: str | None = None,
    ) -> CredentialStore:
        """Docker's config (``$DOCKER_CONFIG`` or ``~/.docker``) and containers' auth.json."""
        home_dir = Path(home) if home else Path.home()
        config_dir = Path(docker_config_dir) if docker_config_dir else home_dir / ".docker"
        docker_config = _load_json(config_dir / "config.json")
        auth_files: list[dict[str, Any]] = []
        if registry_auth_file:
            doc = _load_json(Path(registry_auth_file))
            if doc is None:
                raise CredentialError(f"REGISTRY_AUTH_FILE {registry_auth_file} does not exist")
            auth_files.append(doc)
        else:
            doc = _load_json(home_dir / ".config" / "containers" / "auth.json")
            if doc is not None:
                auth_files.append(doc)
        return cls(docker_config=docker_config, auth_files=auth_files)

    @classmethod
    def static(cls, entries: Mapping[str, tuple[str, str]]) -> CredentialStore:
        """Fixed ``{host: (username, password)}`` credentials (tests, benches)."""
        return cls(static={h: Credentials(u, p) for h, (u, p) in entries.items()})

    def get(self, host: str, repository: str | None = None) -> Credentials | None:
        key = (host, repository)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        found = self._lookup(host, repository)
        with self._lock:
            self._cache[key] = found
        return found

    def _lookup(self, host: str, repository: str | None) -> Credentials | None:
        if host in self._static:
            return self._static[host]
        candidates = _candidate_keys(host, repository)
        # containers auth.json first, as podman/buildah/skopeo read it
        for doc in self._auth_files:
            found = self._from_auths(doc.get("auths"), candidates, "auth.json")
            if found is not None:
                return found
        helpers = self._docker.get("credHelpers")
        if isinstance(helpers, Mapping):
            for cand in candidates:
                helper = helpers.get(cand)
                if isinstance(helper, str) and helper:
                    return self._from_helper(helper, cand)
        found = self._from_auths(self._docker.get("auths"), candidates, "Docker config.json")
        if found is not None:
            return found
        store = self._docker.get("credsStore")
        if isinstance(store, str) and store:
            # helpers store Docker Hub under its v1 URL
            server = "https://index.docker.io/v1/" if host in _DOCKER_HUB_KEYS else host
            return self._from_helper(store, server)
        return None

    def _from_auths(self, auths: Any, candidates: list[str], source: str) -> Credentials | None:
        if not isinstance(auths, Mapping):
            return None
        normalised = {_normalise_key(k): v for k, v in auths.items() if isinstance(k, str)}
        for cand in candidates:
            entry = auths.get(cand) or normalised.get(_normalise_key(cand))
            if not isinstance(entry, Mapping):
                continue
            username = str(entry.get("username", ""))
            password = str(entry.get("password", ""))
            encoded = entry.get("auth")
            if isinstance(encoded, str) and encoded:
                try:
                    username, _, password = base64.b64decode(encoded).decode().partition(":")
                except (ValueError, UnicodeDecodeError) as exc:
                    raise CredentialError(
                        f"the 'auth' entry for {cand} in {source} is not base64 user:password"
                    ) from exc
            identity = str(entry.get("identitytoken", ""))
            if username or password or identity:
                return Credentials(username, password, identity)
        return None

    def _from_helper(self, helper: str, server: str) -> Credentials | None:
        doc = self._run_helper(helper, server)
        if not doc:
            return None
        username = str(doc.get("Username", ""))
        secret = str(doc.get("Secret", ""))
        if username == "<token>":  # helpers store identity tokens this way
            return Credentials(identity_token=secret)
        return Credentials(username, secret)


class Challenge(Struct, frozen=True):
    scheme: str  # lower-case: "bearer" or "basic"
    params: Mapping[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value (RFC 7235; quoted strings may hold commas)."""
    challenges: list[Challenge] = []
    i, n = 0, len(header)
    params: dict[str, str] | None = None
    while i < n:
        while i < n and header[i] in " ,\t":
            i += 1
        start = i
        while i < n and header[i] not in " =,\t":
            i += 1
        token = header[start:i]
        if not token:
            break
        j = i
        while j < n and header[j] in " \t":
            j += 1
        if j < n and header[j] == "=" and params is not None:
            j += 1
            while j < n and header[j] in " \t":
                j += 1
            if j < n and header[j] == '"':
                j += 1
                value_chars = []
                while j < n and header[j] != '"':
                    if header[j] == "\\" and j + 1 < n:
                        j += 1
                    value_chars.append(header[j])
                    j += 1
                value = "".join(value_chars)
                j += 1
            else:
                vstart = j
                while j < n and header[j] != ",":
                    j += 1
                value = header[vstart:j].strip()
            params[token.lower()] = value
            i = j
        else:
            params = {}
            challenges.append(Challenge(token.lower(), params))
            i = j
    return challenges


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _parse_scope(scope: str) -> tuple[str, str, frozenset[str]]:
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return kind, name, frozenset(a for a in actions.split(",") if a)


def _covers(held: Iterable[str], wanted: Iterable[str]) -> bool:
    held_parsed = [_parse_scope(s) for s in held]
    for want in wanted:
        kind, name, actions = _parse_scope(want)
        if not any(k == kind and n == name and actions <= a for k, n, a in held_parsed):
            return False
    return True


class _Token(Struct):
    value: str
    scopes: frozenset[str]
    #: when to stop using it: a margin before expiry so a long request does not outlive it
    refresh_at: float


class _HostAuth(Struct):
    scheme: str  # "bearer" | "basic"
    realm: str = ""
    service: str = ""
    tokens: list[_Token] = field(default_factory=list)


class TokenAuthenticator:
    """Per-registry authentication state: the learned scheme and the cached tokens.

    Thread-safe: transfers run in parallel and share tokens.
    """

    def __init__(
        self,
        credentials: CredentialStore | None,
        fetch: Fetch,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._credentials = credentials
        self._fetch = fetch
        self._clock = clock
        self._hosts: dict[str, _HostAuth] = {}
        self._lock = threading.Lock()
        #: how many token requests were made (tests check reuse with it)
        self.token_requests = 0

    def credentials_for(self, host: str, repository: str | None = None) -> Credentials | None:
        return self._credentials.get(host, repository) if self._credentials else None

    def knows(self, host: str) -> bool:
        with self._lock:
            return host in self._hosts

    def header(self, host: str, scopes: Iterable[str]) -> str | None:
        """An ``Authorization`` value for a request needing ``scopes``, from cache only."""
        wanted = frozenset(scopes)
        with self._lock:
            state = self._hosts.get(host)
            if state is None:
                return None
            if state.scheme == "basic":
                creds = self.credentials_for(host)
                return creds.basic_header() if creds else None
            now = self._clock()
            state.tokens = [t for t in state.tokens if t.refresh_at > now]
            for token in state.tokens:
                if _covers(token.scopes, wanted):
                    return f"Bearer {token.value}"
        return None

    def ensure(self, host: str, scopes: Iterable[str]) -> str | None:
        """A header for ``scopes``, fetching a token when the host uses Bearer and none is cached."""
        header = self.header(host, scopes)
        if header is not None:
            return header
        with self._lock:
            state = self._hosts.get(host)
        if state is None or state.scheme != "bearer":
            return None
        return self._fetch_token(host, state, frozenset(scopes))

    def learn(self, host: str, response: Response) -> None:
        """Record the scheme a ping's 401 announces, without fetching a token yet."""
        self.learn_challenge(host, response.headers.get("WWW-Authenticate", ""))

    def learn_challenge(self, host: str, header: str) -> None:
        """``learn`` from a ``WWW-Authenticate`` value (an early ping's, mason.registry.early)."""
        for challenge in parse_challenges(header):
            if challenge.scheme == "bearer" and challenge.params.get("realm"):
                with self._lock:
                    if host not in self._hosts:
                        self._hosts[host] = _HostAuth(
                            "bearer", challenge.params["realm"], challenge.params.get("service", "")
                        )
                return
            if challenge.scheme == "basic":
                with self._lock:
                    self._hosts.setdefault(host, _HostAuth("basic"))
                return

    def on_challenge(self, host: str, response: Response, scopes: Iterable[str]) -> str | None:
        """Learn from a 401's ``WWW-Authenticate``; return a fresh header to retry with, or None."""
        header_value = response.headers.get("WWW-Authenticate", "")
        challenges = parse_challenges(header_value)
        wanted = set(scopes)
        for challenge in challenges:
            if challenge.scheme == "bearer" and challenge.params.get("realm"):
                extra = challenge.params.get("scope")
                if extra:
                    wanted.update(s for s in extra.split(" ") if s)
                state = _HostAuth(
                    "bearer", challenge.params["realm"], challenge.params.get("service", "")
                )
                with self._lock:
                    old = self._hosts.get(host)
                    # a 401 means the tokens we held are no good: drop them
                    self._hosts[host] = state
                    if old is not None and old.realm == state.realm:
                        state.tokens = []
                return self._fetch_token(host, state, frozenset(wanted))
            if challenge.scheme == "basic":
                with self._lock:
                    self._hosts[host] = _HostAuth("basic")
                creds = self.credentials_for(host)
                if creds is None:
                    return None
                return creds.basic_header()
        return None

    def _token_request(
        self, creds: Credentials | None, state: _HostAuth, scopes: frozenset[str]
    ) -> Request:
        from urllib.parse import urlencode

        if creds is not None and creds.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "service": state.service,
                "scope": " ".join(sorted(scopes)),
                "client_id": "mason",
            }
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            return Request("POST", state.realm, headers, urlencode(form).encode())
        params = [("service", state.service)] if state.service else []
        params.extend(("scope", s) for s in sorted(scopes))
        headers = {}
        if creds is not None and (creds.username or creds.password):
            headers["Authorization"] = creds.basic_header()
        url = state.realm
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        return Request("GET", url, headers)

    def _fetch_token(self, host: str, state: _HostAuth, scopes: frozenset[str]) -> str:
        creds = self.credentials_for(host)
        operation = f"authenticate to {host}"
        request = self._token_request(creds, state, scopes)
        method = request.method
        try:
            response = self._fetch(request)
        except TransportError as exc:
            raise RegistryError(
                f"token server {redact_url(state.realm)} unreachable: {exc}",
                operation=operation,
                method=method,
                url=state.realm,
            ) from exc
        with self._lock:
            self.token_requests += 1
        if response.status_code != 200:
            errors = parse_registry_errors(response.content[:65536])
            who = f"as {creds.username!r}" if creds and creds.username else "anonymously"
            raise RegistryAuthError(
                f"the token server for {host} refused to issue a token {who} (HTTP {response.status_code})",
                operation=operation,
                method=method,
                url=request.url,
                status=response.status_code,
                errors=errors,
                body_excerpt=response.text[:300] if not errors else None,
                hint="check the username and password in your Docker config or auth.json"
                if creds
                else "log in first (credentials in ~/.docker/config.json or $REGISTRY_AUTH_FILE)",
            )
        try:
            doc = response.json()
        except ValueError:
            doc = None
        # "Some registries set access_token instead of token"
        value = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(value, str) or not value:
            raise RegistryAuthError(
                f"the token server for {host} answered without a token"
                + ("" if isinstance(doc, dict) else " (not a JSON object)"),
                operation=operation,
                method=method,
                url=request.url,
                status=200,  # no body excerpt: a token response may hold other secrets
            )
        expires_in = doc.get("expires_in")
        lifetime = (
            float(expires_in)
            if isinstance(expires_in, int | float) and expires_in > 0
            else _DEFAULT_EXPIRES_IN
        )
        token = _Token(value, scopes, self._clock() + lifetime - min(_REFRESH_MARGIN, lifetime / 2))
        with self._lock:
            state.tokens.append(token)
        return f"Bearer {value}"
