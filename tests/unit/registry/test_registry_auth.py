"""Credentials lookup, WWW-Authenticate parsing and URL redaction."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from mason.registry.auth import CredentialError, Credentials, CredentialStore, parse_challenges
from mason.registry.errors import RegistryError, redact_url


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_parse_bearer_challenge_with_commas_in_scope() -> None:
    [c] = parse_challenges(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:a/b:pull,push",error="insufficient_scope"'
    )
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "scope": "repository:a/b:pull,push",
        "error": "insufficient_scope",
    }


def test_parse_basic_and_multiple_challenges() -> None:
    cs = parse_challenges('Basic realm="Registry Realm", Bearer realm=https://x/token')
    assert [c.scheme for c in cs] == ["basic", "bearer"]
    assert cs[1].params["realm"] == "https://x/token"


def test_docker_config_auths_from_docker_config_dir(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": _b64("hub:hubpw")},
                    "ghcr.io": {"username": "gh", "password": "ghpw"},
                    "quay.io": {"identitytoken": "refresh-me"},
                }
            }
        )
    )
    store = CredentialStore.from_environment(str(tmp_path), None, home=str(tmp_path / "nohome"))
    assert store.get("registry-1.docker.io") == Credentials("hub", "hubpw")
    assert store.get("ghcr.io") == Credentials("gh", "ghpw")
    assert store.get("quay.io") == Credentials("", "", "refresh-me")
    assert store.get("other.example") is None


def test_default_docker_config_in_home(tmp_path: Path) -> None:
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text(
        json.dumps({"auths": {"r.example": {"auth": _b64("u:p")}}})
    )
    store = CredentialStore.from_environment(None, None, home=str(tmp_path))
    assert store.get("r.example") == Credentials("u", "p")


def test_auth_json_wins_and_supports_repository_keys(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"r.example": {"auth": _b64("docker:d")}}})
    )
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(
        json.dumps(
            {
                "auths": {
                    "r.example/team": {"auth": _b64("team:t")},
                    "r.example": {"auth": _b64("podman:p")},
                }
            }
        )
    )
    store = CredentialStore.from_environment(str(tmp_path), str(auth_file), home=str(tmp_path))
    assert store.get("r.example", "team/app") == Credentials("team", "t")
    assert store.get("r.example", "other/app") == Credentials("podman", "p")


def test_missing_registry_auth_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CredentialError):
        CredentialStore.from_environment(
            str(tmp_path), str(tmp_path / "absent.json"), home=str(tmp_path)
        )


def test_cred_helpers_and_creds_store() -> None:
    calls: list[tuple[str, str]] = []

    def runner(helper: str, server: str) -> Mapping[str, Any] | None:
        calls.append((helper, server))
        if helper == "ecr-login":
            return {"ServerURL": server, "Username": "AWS", "Secret": "ecr-secret"}
        if helper == "desktop" and server == "https://index.docker.io/v1/":
            return {"ServerURL": server, "Username": "<token>", "Secret": "idtoken"}
        return None

    store = CredentialStore(
        docker_config={
            "credHelpers": {"123.dkr.ecr.example": "ecr-login"},
            "credsStore": "desktop",
        },
        helper_runner=runner,
    )
    assert store.get("123.dkr.ecr.example") == Credentials("AWS", "ecr-secret")
    assert store.get("docker.io") == Credentials(identity_token="idtoken")
    assert store.get("nothing.example") is None
    assert ("desktop", "nothing.example") in calls


def test_credentials_never_in_repr() -> None:
    assert "s3cret" not in repr(Credentials("u", "s3cret", "tok3n"))
    assert "tok3n" not in repr(Credentials("u", "s3cret", "tok3n"))


def test_redact_url() -> None:
    url = "https://user:pw@storage.example/blob?X-Amz-Signature=abc&X-Amz-Credential=k&part=1"
    redacted = redact_url(url)
    assert "pw" not in redacted and "abc" not in redacted and "user" not in redacted
    assert "part=1" in redacted
    err = RegistryError("boom", operation="pull", method="GET", url=url, status=500)
    assert "abc" not in str(err) and err.url == redacted
