"""``mason registry check`` against the real CNCF registry, with deletion enabled and not."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import mason
from tests.support.registry_server import RegistryServer, free_port, start_registry

from mason.registry.check import FEATURES


def _features(proc_stdout: str) -> dict[str, dict[str, object]]:
    doc = json.loads(proc_stdout)
    return {f["feature"]: f for f in doc["features"]}


def test_check_names_what_the_cncf_registry_supports(
    registry: RegistryServer, tmp_path: Path
) -> None:
    ref = f"{registry.host}/check/cache"
    proc = mason(tmp_path / "root", "registry", "check", "--format", "json", ref)
    assert proc.returncode == 0, proc.stderr
    found = _features(proc.stdout)
    assert list(found) == list(FEATURES)
    supported = {name for name, f in found.items() if f["supported"]}
    # distribution 2.8: both cache forms, mounts, chunks; deletion by digest; no If-Match, no referrers
    assert supported == set(FEATURES) - {
        "conditional manifest update (If-Match)",
        "referrers API",
    }
    assert found["tag deletion"]["detail"] == "by manifest digest only"
    assert json.loads(proc.stdout)["leftBehind"] == []
    tags = mason(tmp_path / "root", "imagetools", "inspect", f"{ref}:latest")
    assert tags.returncode == 1, "the check pushed nothing under the cache's own tags"

    text = mason(tmp_path / "root", "registry", "check", ref)
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"registry {registry.host}, repository check/cache")
    assert len(lines) == 1 + len(FEATURES)
    assert "  no  referrers API: HTTP 404" in text.stdout


def test_deletion_disabled_is_reported_with_the_registrys_error(tmp_path: Path) -> None:
    server = start_registry(tmp_path / "reg", delete=False)
    try:
        proc = mason(tmp_path / "root", "registry", "check", "--format", "json", f"{server.host}/c")
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    found = _features(proc.stdout)
    deletion = found["tag deletion"]
    assert deletion["supported"] is False
    assert "HTTP 405" in str(deletion["detail"]) and "UNSUPPORTED" in str(deletion["detail"])
    assert len(json.loads(proc.stdout)["leftBehind"]) == 2


def test_no_registry_there_exits_1(tmp_path: Path) -> None:
    proc = mason(tmp_path / "root", "registry", "check", f"127.0.0.1:{free_port()}/c")
    assert proc.returncode == 1
    assert "  no  blob upload: no response" in proc.stdout
