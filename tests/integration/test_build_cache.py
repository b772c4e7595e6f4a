"""The builder with mason.cache backends: inline, local, min vs max (after a wipe)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from tests.support.registry_server import RegistryServer

from mason.cache.options import parse_cache_from, parse_cache_to
from mason.engine.builder import build
from mason.engine.options import BuildOptions, parse_output
from mason.progress import RecordingSink

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (overlayfs, runc)")

DOCKERFILE = """\
ARG BASE
FROM ${BASE} AS build
RUN echo built > /artifact
FROM ${BASE}
COPY --from=build /artifact /artifact
RUN cat /artifact > /copy
"""


@pytest.fixture
def context(tmp_path: Path, busybox_image: str) -> Path:
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


def _build(root: Path, ctx: Path, base: str, **kw: Any) -> tuple[Any, dict[str, str]]:
    sink = RecordingSink()
    outcome = build(
        BuildOptions(context=ctx, build_args={"BASE": base}, **kw), root=root, progress=sink
    )
    states = {
        e.name: e.status
        for e in sink.events
        if e.name.startswith("[")
        and not e.name.startswith("[internal]")
        and e.status in ("cached", "done")
    }
    return outcome, states


def test_local_cache_round_trip(context: Path, busybox_image: str, tmp_path: Path) -> None:
    """--cache-to type=local then a wipe and --cache-from type=local: every step CACHED, same digest."""
    cache_dir = tmp_path / "cache"
    out = tmp_path / "img.tar"
    opts: dict[str, Any] = {
        "cache_to": tuple(parse_cache_to(f"type=local,dest={cache_dir},mode=max")),
        "cache_from": tuple(parse_cache_from(f"type=local,src={cache_dir}")),
        "outputs": (parse_output(f"type=oci,dest={out}"),),
    }
    first, _ = _build(tmp_path / "r1", context, busybox_image, **opts)
    assert (cache_dir / "index.json").exists()
    second, states = _build(tmp_path / "r2", context, busybox_image, **opts)
    assert states and set(states.values()) == {"cached"}, states
    assert second.image_digest == first.image_digest


def test_inline_cache_round_trip(
    context: Path, busybox_image: str, registry: RegistryServer, tmp_path: Path
) -> None:
    """--cache-to type=inline embeds min-mode records in the image; --cache-from IMAGE hits the final stage."""
    ref = f"{registry.host}/cachetest/inline:latest"
    first, _ = _build(
        tmp_path / "r1",
        context,
        busybox_image,
        tags=(ref,),
        push=True,
        cache_to=tuple(parse_cache_to("type=inline")),
    )
    second, states = _build(
        tmp_path / "r2",
        context,
        busybox_image,
        tags=(ref,),
        push=True,
        cache_to=tuple(parse_cache_to("type=inline")),
        cache_from=tuple(parse_cache_from(ref)),
    )
    assert states["[stage-1 3/3] RUN cat /artifact > /copy"] == "cached"
    assert second.image_digest == first.image_digest


@pytest.mark.parametrize("mode", ["min", "max"])
def test_min_and_max_mode_after_wipe(
    context: Path, busybox_image: str, registry: RegistryServer, tmp_path: Path, mode: str
) -> None:
    """After a wipe, the intermediate stage's step has a result only with mode=max."""
    cache = f"{registry.host}/cachetest/{mode}"
    ref = f"{registry.host}/cachetest/app-{mode}:latest"
    _build(
        tmp_path / "r1",
        context,
        busybox_image,
        tags=(ref,),
        push=True,
        cache_to=tuple(parse_cache_to(f"type=registry,ref={cache},mode={mode}")),
    )
    # the final stage now copies the artifact elsewhere: that COPY misses and needs the build
    # stage's result, which only a max cache holds
    (context / "Dockerfile").write_text(
        DOCKERFILE.replace("/artifact /artifact", "/artifact /elsewhere").replace(
            "cat /artifact", "cat /elsewhere"
        )
    )
    outcome, states = _build(
        tmp_path / "r2", context, busybox_image, cache_from=tuple(parse_cache_from(cache))
    )
    build_step = states["[build 2/2] RUN echo built > /artifact"]
    assert build_step == ("cached" if mode == "max" else "done")
    assert states["[stage-1 2/3] COPY --from=build /artifact /elsewhere"] == "done"
    if mode == "max":
        # the hit was materialised lazily: its layer was downloaded only now, to run the COPY
        assert outcome.downloaded_blobs
