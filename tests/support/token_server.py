"""A small bearer-token server for distribution's ``auth.token`` mode (tests only).

It signs ES256 JWTs with a key pair made at start-up; the registry trusts the
self-signed certificate of that key (``rootcertbundle``) and finds it through
the ``kid`` header, which distribution 2.8 (libtrust) expects to be the key's
libtrust fingerprint: base32 of the first 240 bits of sha256(DER public key),
in 12 colon-separated groups of four.

Anonymous requests get ``pull`` only; requests with the right Basic
credentials get every action they ask for; wrong credentials get a 401 with
an ``errors[]`` body, as Docker Hub's token server answers.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["TokenServer", "libtrust_key_id"]


def libtrust_key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


@dataclass
class TokenServer:
    """Serves ``GET /token``; ``start()`` binds 127.0.0.1 on a free port in a thread."""

    workdir: Path
    service: str = "mason-test-registry"
    issuer: str = "mason-test-token-issuer"
    users: dict[str, str] = field(default_factory=dict)
    expires_in: int = 300
    #: answer with ``access_token`` instead of ``token`` (both are valid per the spec)
    use_access_token_field: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.issuer)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_file = self.workdir / "token-signer.crt"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_id = libtrust_key_id(self._key.public_key())
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def realm(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def start(self) -> TokenServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _reply(self, handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        if url.path != "/token":
            self._reply(
                handler, 404, {"errors": [{"code": "NOT_FOUND", "message": "no such path"}]}
            )
            return
        query = parse_qs(url.query)
        account = ""
        header = handler.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", ""
            if self.users.get(user) is None or not secrets.compare_digest(
                self.users[user], password
            ):
                with self._lock:
                    self.requests.append(
                        {"account": user, "scopes": query.get("scope", []), "ok": False}
                    )
                self._reply(
                    handler,
                    401,
                    {
                        "errors": [
                            {
                                "code": "UNAUTHORIZED",
                                "message": "authentication failed: invalid username or password",
                            }
                        ]
                    },
                )
                return
            account = user
        access = []
        for scope in query.get("scope", []):
            parts = scope.split(":")
            if len(parts) < 3:
                continue
            kind, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            granted = actions if account else [a for a in actions if a == "pull"]
            access.append({"type": kind, "name": name, "actions": granted})
        with self._lock:
            self.requests.append({"account": account, "scopes": query.get("scope", []), "ok": True})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": account,
            "aud": query.get("service", [self.service])[0],
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.key_id})
        field_name = "access_token" if self.use_access_token_field else "token"
        self._reply(
            handler,
            200,
            {
                field_name: token,
                "expires_in": self.expires_in,
                "issued_at": dt.datetime.now(dt.UTC).isoformat(),
            },
        )
