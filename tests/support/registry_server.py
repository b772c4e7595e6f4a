"""Start the real CNCF registry (``/usr/bin/docker-registry``) for tests, benches and demos.

Three variants, all on a free 127.0.0.1 port with a temporary storage dir:

- ``plain``: HTTP, no auth;
- ``tls-basic``: HTTPS with a certificate signed by a throw-away CA made with
  ``openssl`` (``.ca_file``), and htpasswd (bcrypt) basic auth;
- ``token``: HTTP with distribution's ``auth.token`` pointing at
  ``TokenServer`` (a thread in this process).

The registry's access log (combined log format, on its stdout) goes to
``access.log`` so tests can count blob GETs; its own log goes to ``registry.log``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where the token variant starts: the demo has no test extras (PyJWT)
    from tests.support.token_server import TokenServer

__all__ = [
    "REGISTRY_BINARY",
    "RegistryServer",
    "count_blob_gets",
    "count_requests",
    "free_port",
    "is_peek",
    "registry_available",
    "start_registry",
]

REGISTRY_BINARY = "/usr/bin/docker-registry"
_ACCESS_LINE = re.compile(
    r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) (?P<size>\d+|-)'
)


def registry_available() -> bool:
    return os.access(REGISTRY_BINARY, os.X_OK)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RegistryServer:
    variant: str
    host: str
    url: str
    workdir: Path
    storage_dir: Path
    process: subprocess.Popen[bytes]
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = None
    token_server: TokenServer | None = None
    _log_handles: list[object] = field(default_factory=list)

    @property
    def access_log(self) -> Path:
        return self.workdir / "access.log"

    @property
    def insecure(self) -> bool:
        """True when the registry speaks plain HTTP."""
        return self.url.startswith("http://")

    def access_log_lines(self) -> list[str]:
        try:
            return self.access_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for handle in self._log_handles:
            with contextlib.suppress(Exception):
                handle.close()  # type: ignore[attr-defined]
        if self.token_server is not None:
            self.token_server.stop()

    def seed_placeholder_blob(self, repository: str, digest: str, content: bytes = b"") -> None:
        """Put a blob *record* into the filesystem storage without its real bytes.

        Test vectors (manifests captured elsewhere) reference layer blobs we do not
        have; distribution only checks that a referenced blob exists when a manifest
        is pushed. The placeholder's bytes do not match its digest, so any client
        that downloads it must reject it: use only for documents that are inspected,
        never pulled.
        """
        algo, hexpart = digest.split(":", 1)
        root = self.storage_dir / "docker" / "registry" / "v2"
        data = root / "blobs" / algo / hexpart[:2] / hexpart / "data"
        data.parent.mkdir(parents=True, exist_ok=True)
        if not data.exists():
            data.write_bytes(content)
        link = root / "repositories" / repository / "_layers" / algo / hexpart / "link"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.write_text(digest)

    def __enter__(self) -> RegistryServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def count_requests(registry: RegistryServer, method: str, path_pattern: str) -> int:
    """How many access-log lines have ``method`` and a path matching ``path_pattern`` (regex)."""
    pattern = re.compile(path_pattern)
    count = 0
    for line in registry.access_log_lines():
        match = _ACCESS_LINE.search(line)
        if match and match["method"] == method and pattern.search(match["path"]):
            count += 1
    return count


#: A ranged GET this small is mason peeking at a blob's first bytes (it checks that a cache
#: hit's blob exists and is what its media type says), not a download.
PEEK_BYTES = 512


def is_peek(status: int, size: str) -> bool:
    """Whether an access-log line with ``status`` and ``size`` is a peek, not a download."""
    return status == 206 and size.isdigit() and int(size) <= PEEK_BYTES


def count_blob_gets(
    registry: RegistryServer,
    repository: str | None = None,
    *,
    min_status: int = 200,
    max_status: int = 399,
) -> int:
    """Blob GETs the registry answered successfully (redirects included), optionally in one
    repo; peeks (``is_peek``) are not downloads and not counted."""
    repo = re.escape(repository) if repository else ".+"
    pattern = re.compile(rf"^/v2/{repo}/blobs/sha\d+:[0-9a-f]+$")
    count = 0
    for line in registry.access_log_lines():
        match = _ACCESS_LINE.search(line)
        if (
            match
            and match["method"] == "GET"
            and pattern.search(match["path"])
            and min_status <= int(match["status"]) <= max_status
            and not is_peek(int(match["status"]), match["size"])
        ):
            count += 1
    return count


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {result.stderr.decode(errors='replace')}")


def _make_tls(workdir: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost, made with openssl."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run(
        [
            "openssl",
            "req",
            "-x509",
            *ec,
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "7",
            "-subj",
            "/CN=mason-test-ca",
        ],
        workdir,
    )
    _run(
        [
            "openssl",
            "req",
            *ec,
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        workdir,
    )
    (workdir / "san.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    _run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "7",
            "-extfile",
            "san.cnf",
        ],
        workdir,
    )
    return workdir / "ca.crt", workdir / "server.crt", workdir / "server.key"


def _wait_ready(server: RegistryServer, timeout: float = 20.0) -> None:
    context = None
    if server.ca_file is not None:
        context = ssl.create_default_context(cafile=str(server.ca_file))
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            urllib.request.urlopen(server.url + "/v2/", timeout=2, context=context)
            return
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # auth-protected variants answer 401: it is up
                return
            last = exc
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(0.05)
    log = (server.workdir / "registry.log").read_text(errors="replace")[-2000:]
    server.stop()
    raise RuntimeError(f"registry {server.variant} did not start on {server.url}: {last}\n{log}")


def start_registry(
    tmp_dir: Path | str,
    variant: str = "plain",
    *,
    address: str = "127.0.0.1",
    netns: str | None = None,
    delete: bool = True,
) -> RegistryServer:
    """Start ``docker-registry serve`` in ``tmp_dir`` (created); the caller must ``stop()`` it.
    ``netns``: run it inside that network namespace, listening on ``address`` there.
    ``delete=False``: manifest deletion disabled (the registry's default, and many hosts')."""
    if variant not in ("plain", "tls-basic", "token"):
        raise ValueError(f"unknown registry variant {variant!r}")
    if not registry_available():
        raise RuntimeError(f"{REGISTRY_BINARY} is not installed (apt-get install docker-registry)")
    workdir = Path(tmp_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    port = free_port() if netns is None else 5000
    host = f"{address}:{port}"
    scheme = "http"
    extra = ""
    ca_file = None
    username = password = None
    token_server = None
    if variant == "tls-basic":
        ca_file, cert, key = _make_tls(workdir)
        scheme = "https"
        username, password = "mason", secrets.token_urlsafe(12)
        htpasswd = subprocess.run(
            ["htpasswd", "-Bbn", username, password], capture_output=True, check=True
        ).stdout
        (workdir / "htpasswd").write_bytes(htpasswd)
        extra = (
            f"  tls:\n    certificate: {cert}\n    key: {key}\n"
            f"auth:\n  htpasswd:\n    realm: mason-test-basic\n    path: {workdir / 'htpasswd'}\n"
        )
    elif variant == "token":
        from tests.support.token_server import TokenServer

        username, password = "mason", secrets.token_urlsafe(12)
        token_server = TokenServer(workdir / "token", users={username: password}).start()
        extra = (
            "auth:\n  token:\n"
            f"    realm: {token_server.realm}\n"
            f"    service: {token_server.service}\n"
            f"    issuer: {token_server.issuer}\n"
            f"    rootcertbundle: {token_server.cert_file}\n"
        )
    config = (
        "version: 0.1\n"
        "log:\n  level: warn\n  formatter: text\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
        f"  delete:\n    enabled: {'true' if delete else 'false'}\n"
        "  maintenance:\n    uploadpurging:\n      enabled: false\n"
        f"http:\n  addr: {host}\n  secret: {secrets.token_hex(16)}\n" + extra
    )
    config_file = workdir / "config.yml"
    config_file.write_text(config)
    access = open(workdir / "access.log", "ab")  # noqa: SIM115 - closed by stop()
    log = open(workdir / "registry.log", "ab")  # noqa: SIM115 - closed by stop()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    in_netns = ["ip", "netns", "exec", netns] if netns else []
    process = subprocess.Popen(
        [*in_netns, REGISTRY_BINARY, "serve", str(config_file)],
        stdout=access,
        stderr=log,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    server = RegistryServer(
        variant=variant,
        host=host,
        url=f"{scheme}://{host}",
        workdir=workdir,
        storage_dir=storage,
        process=process,
        ca_file=ca_file,
        username=username,
        password=password,
        token_server=token_server,
        _log_handles=[access, log],
    )
    _wait_ready(server)
    return server
