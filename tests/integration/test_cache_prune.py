"""``mason cache prune REF`` against the real registry: the least recently used build's own
layers leave the cache, the most recently used build stays fully cached."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from tests.support.cli import mason, mason_build
from tests.support.registry_server import RegistryServer


def _context(tmp_path: Path, base: str, name: str) -> Path:
    ctx = tmp_path / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base}\nRUN head -c 300000 /dev/urandom > /{name}\n")
    return ctx


def _run_cached(proc_log: str) -> bool:
    [vertex] = re.findall(r"^#(\d+) \[\d+/\d+\] RUN ", proc_log, re.M)
    return f"#{vertex} CACHED" in proc_log


def test_prune_to_a_size_keeps_the_most_recent_build(
    registry: RegistryServer, busybox_image: str, tmp_path: Path
) -> None:
    ref = f"{registry.host}/retention/cache"
    cache_to = f"type=registry,ref={ref},mode=max"
    older, newer = (
        _context(tmp_path, busybox_image, "older"),
        _context(tmp_path, busybox_image, "newer"),
    )
    assert mason_build(tmp_path / "r1", "--cache-to", cache_to, str(older)).returncode == 0
    time.sleep(1.1)  # last use has one-second precision
    assert mason_build(tmp_path / "r2", "--cache-to", cache_to, str(newer)).returncode == 0
    inspect = mason(tmp_path / "r0", "cache", "inspect", "--format", "json", ref)
    total = json.loads(inspect.stdout)["totalSize"]

    dry = mason(tmp_path / "r0", "cache", "prune", ref, "--keep-size", str(total - 1), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would drop 1" in dry.stdout
    assert (
        json.loads(mason(tmp_path / "r0", "cache", "inspect", "--format", "json", ref).stdout)[
            "totalSize"
        ]
        == total
    )

    done = mason(tmp_path / "r0", "cache", "prune", ref, "--keep-size", str(total - 1))
    assert done.returncode == 0, done.stderr
    assert "dropped 1" in done.stdout and "garbage collection" in done.stdout
    after = json.loads(mason(tmp_path / "r0", "cache", "inspect", "--format", "json", ref).stdout)
    assert after["totalSize"] < total - 300000

    new_again = mason_build(tmp_path / "r3", "--cache-from", ref, str(newer))
    assert new_again.returncode == 0 and _run_cached(new_again.stderr + new_again.stdout)
    old_again = mason_build(tmp_path / "r4", "--cache-from", ref, str(older))
    assert old_again.returncode == 0 and not _run_cached(old_again.stderr + old_again.stdout)


def test_prune_needs_a_limit_and_a_cache(registry: RegistryServer, tmp_path: Path) -> None:
    none = mason(tmp_path / "r", "cache", "prune", f"{registry.host}/retention/none")
    assert none.returncode == 2 and "--keep-duration or --keep-size" in none.stderr
    missing = mason(
        tmp_path / "r", "cache", "prune", f"{registry.host}/retention/none", "--keep-duration", "7d"
    )
    assert missing.returncode == 1 and "no cache at" in missing.stderr
