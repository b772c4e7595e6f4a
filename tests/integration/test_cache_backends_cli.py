"""``mason build`` with cache flags in the edge cases of the registry/cache fixes: one CI string
for both flags (export-only attributes on --cache-from), an unreachable cache registry (no
backoff), and steps without layers (FROM scratch + ENV) in a cache export."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import mason_build
from tests.support.registry_server import RegistryServer, count_requests, free_port


def _context(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "a.txt").write_text("a\n")
    return ctx


def test_one_string_for_cache_to_and_cache_from_round_trips(
    registry: RegistryServer, tmp_path: Path
) -> None:
    # what a CI line written for docker buildx passes to both flags
    cache = f"type=registry,ref={registry.host}/cli/one-string,mode=max,compression=zstd,image-manifest=true"
    ctx = _context(tmp_path, "FROM scratch\nCOPY a.txt /a.txt\nENV A=1\n")
    cold = mason_build(
        tmp_path / "root-1", "--cache-from", cache, "--cache-to", cache, str(ctx), timeout=120
    )
    assert cold.returncode == 0, cold.stdout + cold.stderr
    warm = mason_build(
        tmp_path / "root-2", "--cache-from", cache, "--cache-to", cache, str(ctx), timeout=120
    )
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert (
        "CACHED" in warm.stderr + warm.stdout
        and "unknown attribute" not in warm.stderr + warm.stdout
    )
    # unchanged re-export from a fresh root: the ref's manifest is not written again
    assert count_requests(registry, "PUT", r"^/v2/cli/one-string/manifests/") == 1


def test_unreachable_cache_registry_warns_and_builds(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens: refused on https and http
    ctx = _context(tmp_path, "FROM scratch\nENV ONLY=config\n")
    out = mason_build(
        tmp_path / "root",
        "--cache-from",
        f"type=registry,ref={host}/c,mode=max",
        "--cache-to",
        f"type=registry,ref={host}/c,ignore-error=true",
        str(ctx),
        timeout=120,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert f"cannot reach registry {host}" in text and "Connection refused" in text
    assert "request failed after" not in text  # no retries were spent on it
