"""Shared by tests: moved from test_convert.py so that test modules never import each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mason.digest import sha256_bytes
from mason.dockerfile import parse_dockerfile
from mason.dockerfile.stages import plan_build
from mason.engine.context import DockerIgnore
from mason.engine.convert import ResolvedImage, convert_plan
from mason.engine.ops import BuildEnv
from mason.engine.state import LayerRef
from mason.oci import Reference

BASE_DIFF = sha256_bytes(b"base-layer")


BASE_CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "created": "1970-01-01T00:00:00Z",
    "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
    "rootfs": {"type": "layers", "diff_ids": [BASE_DIFF]},
    "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "base"}],
}


def _resolver(ref: str, platform: str) -> ResolvedImage:
    return ResolvedImage(
        Reference.parse(ref),
        sha256_bytes(ref.encode()),
        BASE_CONFIG,
        (
            LayerRef(
                BASE_DIFF, sha256_bytes(b"blob"), 4, "application/vnd.oci.image.layer.v1.tar+gzip"
            ),
        ),
    )


def _convert(tmp_path: Path, text: str, **kw: Any) -> Any:
    env = BuildEnv(
        state=None,
        blobs=None,
        snapshots=None,
        executor=None,
        context=tmp_path,  # type: ignore[arg-type]
        ignore=DockerIgnore([]),
        secrets={},
        source_date_epoch=None,
    )
    df = parse_dockerfile(text.encode())
    plan = plan_build(df, build_args=kw.pop("build_args", {}), target=kw.pop("target", None))
    return convert_plan(env, plan, _resolver, platform="linux/amd64", **kw)
