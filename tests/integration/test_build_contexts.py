"""``--build-context NAME=docker-image://REF`` and ``--no-cache-filter STAGE`` through the CLI,
against the real registry and runc. Evidence is what lands in the image (``-o type=local``)
and the ``--progress=plain`` lines (``#N CACHED``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.support.cachebuild import Builder
from tests.support.cli import mason_build

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (overlayfs, runc)")


def _context(path: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (path / name).write_text(text)
    return path


@pytest.fixture
def marked(build: Builder, reg: str, tmp_path: Path) -> str:
    """An image in the registry: busybox plus ``/marker`` (``marked``), pushed by mason."""
    ctx = _context(
        tmp_path / "marked",
        "ARG BASE\nFROM $BASE\nCOPY marker /marker\n",
        {"marker": "marked\n"},
    )
    ref = f"{reg}/marked:v1"
    build(ctx, "--push", "-t", ref).check()
    return ref


def test_docker_image_context_replaces_from_copy_from_and_a_stage(
    build: Builder, marked: str, tmp_path: Path
) -> None:
    # alpine:3.18 and tools are not reachable here (no docker.io): only the named contexts
    # make this build possible, and the stage `gen` is replaced, its COPY never runs
    ctx = _context(
        tmp_path / "ctx",
        "FROM scratch AS gen\n"
        "COPY Dockerfile /from-gen-stage\n"
        "FROM alpine:3.18\n"
        "COPY --from=tools /marker /from-tools\n"
        "COPY --from=gen /marker /from-gen\n"
        "RUN --mount=from=tools,target=/t cat /marker /t/marker > /seen\n",
    )
    out = tmp_path / "out"
    b = build(
        ctx,
        "--build-context",
        f"alpine:3.18=docker-image://{marked}",
        "--build-context",
        f"tools=docker-image://{marked}",
        "--build-context",
        f"gen=docker-image://{marked}",
        "--build-context",
        f"unused=docker-image://{marked}",  # a context nothing uses is no error (buildx)
        "-o",
        f"type=local,dest={out}",
    ).check()
    assert (out / "marker").read_text() == "marked\n", "FROM alpine:3.18 took the named image"
    assert (out / "from-tools").read_text() == "marked\n"
    assert (out / "from-gen").read_text() == "marked\n"
    assert (out / "seen").read_text() == "marked\nmarked\n"
    assert not (out / "from-gen-stage").exists()
    assert not any("from-gen-stage" in t for t in b.steps), b.steps


def test_context_name_is_the_familiar_reference(
    build: Builder, marked: str, tmp_path: Path
) -> None:
    # docker.io/library/alpine:latest and alpine are one name, as buildx compares them
    ctx = _context(tmp_path / "ctx", "FROM docker.io/library/alpine:latest\nRUN cp /marker /m2\n")
    out = tmp_path / "out"
    build(
        ctx, "--build-context", f"alpine=docker-image://{marked}", "-o", f"type=local,dest={out}"
    ).check()
    assert (out / "m2").read_text() == "marked\n"


MULTI = (
    "ARG BASE\n"
    "FROM $BASE AS a\n"
    "RUN echo a-$(cat /proc/sys/kernel/random/uuid) > /a\n"
    "FROM $BASE AS b\n"
    "RUN echo b > /b\n"
    "COPY --from=a /a /a\n"
)


def test_no_cache_filter_reruns_that_stage_only_and_still_exports(
    build: Builder, tmp_path: Path
) -> None:
    ctx = _context(tmp_path / "ctx", MULTI)
    root = build.root()
    cache = tmp_path / "cache"
    first = build(ctx, "-o", f"type=local,dest={tmp_path / 'o1'}", root=root).check()
    assert not first.cached
    second = build(
        ctx,
        "--no-cache-filter",
        "a",
        "-o",
        f"type=local,dest={tmp_path / 'o2'}",
        "--cache-to",
        f"type=local,dest={cache},mode=max",
        root=root,
    ).check()
    run_a = next(t for t in second.steps if t.startswith("[a 2/2] RUN"))
    run_b = next(t for t in second.steps if t.startswith("[b 2/3] RUN"))
    assert second.steps[run_a] != "CACHED", second.output
    assert second.steps[run_b] == "CACHED", second.output
    # stage a ran again: a new uuid, and the COPY of it with it
    assert (tmp_path / "o1" / "a").read_text() != (tmp_path / "o2" / "a").read_text()
    # what the filtered stage made is exported: a fresh builder hits it from the cache
    third = build(
        ctx,
        "-o",
        f"type=local,dest={tmp_path / 'o3'}",
        "--cache-from",
        f"type=local,src={cache}",
    ).check()
    assert third.steps[run_a] == "CACHED", third.output
    assert (tmp_path / "o3" / "a").read_text() == (tmp_path / "o2" / "a").read_text()


def test_no_cache_filter_takes_comma_separated_stages(build: Builder, tmp_path: Path) -> None:
    ctx = _context(tmp_path / "ctx", MULTI)
    root = build.root()
    build(ctx, root=root).check()
    again = build(ctx, "--no-cache-filter", "A,b", root=root).check()
    # every step of both stages ran again; only the base image (a source, not a step) is CACHED
    steps = [t for t in again.steps if " FROM " not in t]
    assert len(steps) == 3, again.output
    assert not again.cached.intersection(steps), again.steps


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("nothing", "expected NAME=VALUE"),
        ("Bad Name=docker-image://x", "invalid --build-context name"),
        ("a=docker-image://Upper", "invalid --build-context"),
        ("a=ftp://host/x", "unsupported scheme 'ftp'"),
        ("a=/does/not/exist", "is not a directory"),
        ("a=target:base", "buildx bake only"),
        ("a=oci-layout:///does/not/exist", "is not a directory"),
    ],
)
def test_bad_build_context_is_a_usage_error_before_the_build(
    tmp_path: Path, value: str, message: str
) -> None:
    ctx = _context(tmp_path / "ctx", "FROM scratch\nCOPY Dockerfile /\n")
    out = tmp_path / "out"
    proc = mason_build(
        tmp_path / "root", "--build-context", value, "-o", f"type=local,dest={out}", str(ctx)
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "--build-context" in proc.stderr, proc.stderr
    assert not out.exists()
