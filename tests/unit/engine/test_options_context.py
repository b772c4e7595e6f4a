"""--output / --secret parsing, build-context selection, checksums and COPY semantics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mason.engine.context import (
    CopyOptions,
    DockerIgnore,
    checksum_sources,
    copy_sources,
    select_sources,
)
from mason.engine.options import OutputSpec, outputs_for, parse_output, parse_secret
from mason.errors import BuildError, UsageError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("type=registry,name=reg/app:1", OutputSpec(type="image", names=("reg/app:1",), push=True)),
        (
            "type=image,name=reg/app,push=true,compression=zstd,compression-level=3",
            OutputSpec(
                type="image", names=("reg/app",), push=True, compression="zstd", compression_level=3
            ),
        ),
        ("type=oci,dest=out.tar", OutputSpec(type="oci", dest="out.tar")),
        ("type=oci,dest=dir,tar=false", OutputSpec(type="oci", dest="dir", tar=False)),
        (
            "type=docker,dest=img.tar",
            OutputSpec(type="docker", dest="img.tar", oci_mediatypes=False),
        ),
        ("type=local,dest=out", OutputSpec(type="local", dest="out")),
        ("out", OutputSpec(type="local", dest="out")),
        ("-", OutputSpec(type="tar", dest="-")),
        (
            'type=image,"name=a/b,c/d",push=true',
            OutputSpec(type="image", names=("a/b", "c/d"), push=True),
        ),
    ],
)
def test_parse_output(text: str, expected: OutputSpec) -> None:
    """--output follows buildx's CSV syntax and defaults."""
    assert parse_output(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "type=nope,dest=x",
        "type=oci",
        "type=image,compression=lz4",
        "type=image,compression=gzip,compression-level=12",
        "type=image,push=maybe,name=x",
        "dest=x",
    ],
)
def test_parse_output_rejects(text: str) -> None:
    """Bad --output values are usage errors (exit 2)."""
    with pytest.raises(UsageError):
        parse_output(text)


def test_push_and_tags_combine_like_buildx() -> None:
    """--push -t REF adds a pushing image output; an output without names takes the tags."""
    outs = outputs_for(("r/a:1",), True, ())
    assert outs == (OutputSpec(type="image", names=("r/a:1",), push=True),)
    outs = outputs_for(("r/a:1",), False, (parse_output("type=docker,dest=x.tar"),))
    assert outs[0].names == ("r/a:1",)
    with pytest.raises(UsageError):
        outputs_for((), True, ())


def test_parse_secret(tmp_path: Path) -> None:
    """--secret takes src=FILE or env=VAR; a missing file is a usage error."""
    f = tmp_path / "s"
    f.write_text("x")
    assert parse_secret(f"id=a,src={f}").src == f
    assert parse_secret("id=b,env=TOKEN", {"TOKEN": "v"}).env_value == "v"
    assert parse_secret("TOKEN", {"TOKEN": "v"}).env_value == "v"
    with pytest.raises(UsageError):
        parse_secret(f"id=a,src={tmp_path / 'missing'}")


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    c = tmp_path / "ctx"
    (c / "app" / "sub").mkdir(parents=True)
    (c / "app" / "a.txt").write_text("a")
    (c / "app" / "b.log").write_text("b")
    (c / "app" / "sub" / "c.txt").write_text("c")
    (c / "top.txt").write_text("top")
    os.symlink("a.txt", c / "app" / "link")
    return c


def test_wildcards_and_dockerignore(ctx: Path) -> None:
    """Wildcards match per path component; .dockerignore removes matches."""
    ignore = DockerIgnore(["**/*.log"])
    names = sorted(s.rel for s in select_sources(ctx, ["app/*"], ignore))
    assert names == ["app/a.txt", "app/link", "app/sub"]
    with pytest.raises(BuildError):
        select_sources(ctx, ["nothing*"], ignore)
    with pytest.raises(BuildError):
        select_sources(ctx, ["missing.txt"], ignore)


def test_dockerignore_directories_and_exceptions_in_a_copied_tree(
    ctx: Path, tmp_path: Path
) -> None:
    """An excluded directory is left out with everything below it, unless a ``!`` exception
    re-includes something there: then only that is copied (and checksummed)."""
    ignore = DockerIgnore(["app/sub", "**/*.log", "!app/sub/c.txt"])
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    copy_sources(
        select_sources(ctx, ["."], ignore),
        rootfs,
        "/",
        CopyOptions(),
        ignore,
        dest_is_dir_hint=True,
    )
    found = sorted(
        str(p.relative_to(rootfs)) for p in rootfs.rglob("*") if not p.is_dir() or p.is_symlink()
    )
    assert found == ["app/a.txt", "app/link", "app/sub/c.txt", "top.txt"]
    without_exception = DockerIgnore(["app/sub", "**/*.log"])
    assert checksum_sources(select_sources(ctx, ["."], ignore), ignore) != checksum_sources(
        select_sources(ctx, ["."], without_exception), without_exception
    )
    (ctx / "app" / "sub" / "ignored.txt").write_text("not in the context")
    for rules in (ignore, without_exception):
        before = checksum_sources(select_sources(ctx, ["."], rules), rules)
        (ctx / "app" / "sub" / "ignored.txt").write_text("still not in the context")
        assert checksum_sources(select_sources(ctx, ["."], rules), rules) == before


def test_checksum_ignores_mtime_but_not_mode_or_content(ctx: Path) -> None:
    """The COPY checksum covers content, mode and link targets; not mtimes."""

    def cs() -> str:
        return checksum_sources(select_sources(ctx, ["app"], None), None)

    base = cs()
    os.utime(ctx / "app" / "a.txt", (1, 1))
    assert cs() == base
    os.chmod(ctx / "app" / "a.txt", 0o600)
    assert cs() != base
    changed_mode = cs()
    (ctx / "app" / "sub" / "c.txt").write_text("C")
    assert cs() != changed_mode


@pytest.mark.parametrize(
    ("sources", "dest", "expect"),
    [
        (
            ["app"],
            "/dst/",
            ["dst/a.txt", "dst/b.log", "dst/link", "dst/sub/c.txt"],
        ),  # a directory copies its contents
        (["top.txt"], "/renamed.txt", ["renamed.txt"]),  # no trailing slash: the file is renamed
        (["top.txt"], "/into/", ["into/top.txt"]),  # trailing slash: into the directory
        (["top.txt", "app/a.txt"], "/multi/", ["multi/a.txt", "multi/top.txt"]),
    ],
)
def test_copy_semantics(
    ctx: Path, tmp_path: Path, sources: list[str], dest: str, expect: list[str]
) -> None:
    """COPY follows Docker's directory and trailing-slash rules."""
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    copy_sources(
        select_sources(ctx, sources, None),
        rootfs,
        dest,
        CopyOptions(),
        None,
        dest_is_dir_hint=dest.endswith("/"),
    )
    found = sorted(
        str(p.relative_to(rootfs)) for p in rootfs.rglob("*") if not p.is_dir() or p.is_symlink()
    )
    assert found == expect


def test_copy_into_existing_directory_and_chmod(ctx: Path, tmp_path: Path) -> None:
    """A destination that is an existing directory receives the file; --chmod applies."""
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    copy_sources(
        select_sources(ctx, ["top.txt"], None),
        rootfs,
        "/etc",
        CopyOptions(chmod=0o640),
        None,
        dest_is_dir_hint=False,
    )
    assert (rootfs / "etc" / "top.txt").stat().st_mode & 0o777 == 0o640


def test_symlinks_do_not_escape_the_context(tmp_path: Path) -> None:
    """A context symlink pointing outside resolves inside the context root, never the host."""
    c = tmp_path / "ctx"
    c.mkdir()
    os.symlink("/etc", c / "evil")
    with pytest.raises(BuildError):
        select_sources(c, ["evil/passwd"], None)


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        (
            "type=docker,dest=d.tar,compresion=zstd",
            "unknown attribute 'compresion' for type=docker",
            "type=docker takes name, dest, compression",
        ),
        (
            "type=local,dest=out,tar=false",
            "unknown attribute 'tar' for type=local",
            "type=local takes dest",
        ),
        ("type=image,name=r/a,push=true,unpack=true", "unpack= is not supported", ""),
        (
            "type=oci,dest=o.tar,registry.insecure=true",
            "unknown attribute 'registry.insecure' for type=oci",
            "",
        ),
        (
            "type=image,name=r/a,annotation-bogus.org.x=y",
            "unrecognized annotation type bogus",
            "manifest-descriptor",
        ),
        (
            "type=docker,dest=d.tar,compression=lz4",
            "'lz4' is not a known compression",
            "gzip, zstd",
        ),
    ],
)
def test_output_attributes_are_checked(text: str, message: str, hint: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_output(text)
    assert message in info.value.message
    assert hint in (info.value.hint or "")


def test_registry_insecure_on_an_image_output() -> None:
    assert parse_output("type=image,name=lan:5000/a,push=true,registry.insecure=true").insecure
    assert not parse_output("type=image,name=lan:5000/a,push=true").insecure
