"""Frontend 1.26 flags the parser reads but the builder cannot do yet are refused
by the builder with a clear BuildError (exit 1), never silently ignored; ADD of a git
repository converts (its errors are the frontend's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mason.digest import sha256_bytes
from mason.dockerfile import DockerfileError, parse_dockerfile
from mason.dockerfile.stages import plan_build
from mason.engine.context import DockerIgnore
from mason.engine.convert import ResolvedImage, convert_plan
from mason.engine.ops import BuildEnv
from mason.engine.state import LayerRef
from mason.errors import BuildError
from mason.oci import Reference

BASE_DIFF = sha256_bytes(b"base-layer")
BASE_CONFIG = {
    "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
    "config": {"Env": ["PATH=/bin"]},
    "rootfs": {"type": "layers", "diff_ids": [BASE_DIFF]},
    "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "base"}],
}  # fmt: skip


def _resolver(ref: str, platform: str) -> ResolvedImage:
    layer = LayerRef(
        BASE_DIFF, sha256_bytes(b"blob"), 4, "application/vnd.oci.image.layer.v1.tar+gzip"
    )
    return ResolvedImage(Reference.parse(ref), sha256_bytes(ref.encode()), BASE_CONFIG, (layer,))


def _convert(tmp_path: Path, text: str) -> Any:
    env = BuildEnv(
        state=None, blobs=None, snapshots=None, executor=None, context=tmp_path,  # type: ignore[arg-type]
        ignore=DockerIgnore([]), secrets={}, source_date_epoch=None,
        dockerfile_lines=text.splitlines(),
    )  # fmt: skip
    return convert_plan(
        env, plan_build(parse_dockerfile(text.encode())), _resolver, platform="linux/amd64"
    )


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("RUN --security=insecure true", "security.insecure is not allowed"),  # without --allow
        (
            "RUN --device=vendor.com/gpu=all true",
            "device feature is only supported in Dockerfile frontend 1.14.0-labs",
        ),
    ],
)
def test_new_flags_fail_in_the_builder(tmp_path: Path, line: str, what: str) -> None:
    text = f"FROM b\n{line}\n"
    with pytest.raises(BuildError) as info:
        _convert(tmp_path, text)
    err = info.value
    assert what in err.message
    assert err.exit_code == 1
    assert "Dockerfile:2" in str(err)
    assert line in str(err)


@pytest.mark.parametrize(
    "line",
    [
        "RUN --security=sandbox true",  # the default, spelt out
        "ARG M=0644\nCOPY --chmod=$M a /a",  # --chmod is expanded now
        "COPY --link=false a /a",
    ],
)
def test_defaults_of_new_flags_still_build(tmp_path: Path, line: str) -> None:
    conv = _convert(tmp_path, f"FROM b\n{line}\n")
    assert conv.target.vertex is not None


@pytest.mark.parametrize(
    ("line", "git"),
    [
        (
            "ADD --keep-git-dir https://github.com/a/b.git /src",
            ("https://github.com/a/b.git", True),
        ),
        (
            "ADD https://example.com/a/b.git#main:sub /src",
            ("https://example.com/a/b.git#main:sub", None),
        ),
        ("ADD git@example.com:a/b.git?keep-git-dir=1 /src", ("git@example.com:a/b.git", True)),
    ],
)
def test_add_git_converts(tmp_path: Path, line: str, git: tuple[str, bool | None]) -> None:
    action = _convert(tmp_path, f"FROM b\n{line}\n").target.vertex.op.action
    assert [(g.display, g.keep_git_dir) for g in action.git] == [git]
    assert action.sources == () and action.urls == ()


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("COPY https://h/r.git /src", "source can't be a git ref for COPY"),
        ("ADD --keep-git-dir=false https://h/r.git?keep-git-dir /s", "inconsistent keep-git-dir"),
        ("ADD --checksum=abc https://h/r.git?checksum=abd /s", "checksum mismatch 'abc' != 'abd'"),
        ("ADD https://h/r.git?nope=1 /s", "unexpected query 'nope'"),
        ("ADD --checksum=abc ./local /s", "checksum can't be specified for non-HTTP sources"),
    ],
)
def test_add_git_errors(tmp_path: Path, line: str, error: str) -> None:
    with pytest.raises(DockerfileError) as info:
        _convert(tmp_path, f"FROM b\n{line}\n")
    assert error in str(info.value) and info.value.exit_code == 2


def test_chmod_reaches_the_builder_expanded(tmp_path: Path) -> None:
    conv = _convert(tmp_path, "FROM b\nARG M=0640\nCOPY --chmod=$M a /a\n")
    assert conv.target.vertex.op.action.chmod == "0640"
