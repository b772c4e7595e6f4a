"""What a whole warm build imports (issue 14): bench/bench_startup.py's 2-step build, its cache
exported by a first build, then built on a fresh root with every step from that cache and the
image pushed; the modules loaded by its end (``tests/unit/cli/test_import_budget.py``'s probe
and deny lists)."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import mason_build
from tests.support.registry_server import RegistryServer
from tests.unit.cli.test_import_budget import (
    _LAZY_FOR_WARM_BUILD,
    _loaded,
    _modules_at_first_request,
)

from mason.oci.reference import Reference
from mason.registry.client import RegistryClient


def test_a_warm_build_from_a_registry_cache_loads_only_what_it_uses(
    registry: RegistryServer, busybox_image: str, tmp_path: Path
) -> None:
    host = registry.host
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\nRUN echo one > /one\nCOPY a.txt /a.txt\n"
    )
    (ctx / "a.txt").write_text("hello\n")
    cache = f"type=registry,ref={host}/warm-imports/cache"
    seed = mason_build(tmp_path / "seed", "--cache-to", f"{cache},mode=max", str(ctx), timeout=300)
    assert seed.returncode == 0, seed.stderr[-3000:]
    image = f"{host}/warm-imports/app"
    argv = ["build", "--progress=plain", "--cache-from", cache, "--push", "-t", image, str(ctx)]
    where, modules, _ = _modules_at_first_request(tmp_path, 0, argv)
    with RegistryClient() as client:  # the build ran to its end: the image was pushed
        assert client.head_manifest(Reference.parse(image)) is not None
    assert where == "exit"
    assert _loaded(modules, _LAZY_FOR_WARM_BUILD) == []
