"""Git source references, parsed as BuildKit v0.32.2's dfgitutil.ParseGitRef parses them (its
test table, TestParseGitRef, plus the query errors), and credential redaction."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mason.engine.gitsource import (
    GitRef,
    GitRefError,
    _normalize_modes,
    _subdir,
    is_commit_sha,
    parse_git_ref,
    redact_credentials,
    redact_credentials_in,
)
from mason.errors import BuildError

BK = "https://github.com/moby/buildkit.git"


@pytest.mark.parametrize(
    "text",
    [
        "https://example.com/",
        "https://example.com/foo",
        "https://example.com/foo.git/",
        "https://example.com/foo.git.bar",
        "custom.xyz/moby/buildkit.git",
        "https://github.com/moby/buildkit",
        "http://github.com/docker/docker.git:#branch",
        "./.git",
        ".git",
        "../repo.git",
        "ftp://example.com/foo.git",  # not a git protocol: a path, as BuildKit
        "context/dir",
    ],
)
def test_not_git(text: str) -> None:
    assert parse_git_ref(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://example.com/foo.git", GitRef("https://example.com/foo.git")),
        ("https://example.com/foo.git#deadbeef", GitRef("https://example.com/foo.git", "deadbeef")),
        (
            "https://example.com/foo.git#release/1.2",
            GitRef("https://example.com/foo.git", "release/1.2"),
        ),
        ("git://example.com/foo", GitRef("git://example.com/foo", unencrypted=True)),
        ("http://h/r.git", GitRef("http://h/r.git", unencrypted=True)),
        (
            "github.com/moby/buildkit#master",
            GitRef("github.com/moby/buildkit", "master", indistinguishable_from_local=True),
        ),
        (
            "https://foo:bar@github.com/moby/buildkit.git",
            GitRef("https://foo:bar@github.com/moby/buildkit.git"),
        ),
        ("git@github.com:moby/buildkit", GitRef("git@github.com:moby/buildkit")),
        ("ssh://git@host:2222/r.git#v1", GitRef("ssh://git@host:2222/r.git", "v1")),
        (
            "https://github.com/foo/bar.git#baz/qux:quux/quuz",
            GitRef("https://github.com/foo/bar.git", "baz/qux", "quux/quuz"),
        ),
        (
            "https://github.com/docker/docker.git#:myfolder",
            GitRef("https://github.com/docker/docker.git", "", "myfolder"),
        ),
        ("https://h/r.git#main:../../x/./y", GitRef("https://h/r.git", "main", "x/y")),
        (
            "https://github.com/docker/docker.git?ref=v1.0.0&subdir=/subdir",
            GitRef("https://github.com/docker/docker.git", "v1.0.0", "/subdir"),
        ),
        (BK + "?subdir=/subdir#v1.0.0", GitRef(BK, "v1.0.0", "/subdir")),
        (BK + "?tag=v1.0.0", GitRef(BK, "refs/tags/v1.0.0")),
        (BK + "?branch=v1.0", GitRef(BK, "refs/heads/v1.0")),
        (
            "git@github.com:moby/buildkit.git?subdir=/subdir#v1.0.0",
            GitRef("git@github.com:moby/buildkit.git", "v1.0.0", "/subdir"),
        ),
        (BK + "?mtime=commit", GitRef(BK, mtime="commit")),
        (BK + "?keep-git-dir", GitRef(BK, keep_git_dir=True)),
        (BK + "?keep-git-dir=false", GitRef(BK, keep_git_dir=False)),
        (BK + "?submodules=0", GitRef(BK, submodules=False)),
        (BK + "?checksum=deadbeef", GitRef(BK, checksum="deadbeef")),
        (BK + "?commit=deadbeef", GitRef(BK, checksum="deadbeef")),
        (
            BK + "?fetch-by-commit=true&checksum=deadbeef#refs/heads/branch",
            GitRef(BK, "refs/heads/branch", checksum="deadbeef", fetch_by_commit=True),
        ),
        (BK + "?fetch-by-commit=false", GitRef(BK)),
    ],
)
def test_parse(text: str, expected: GitRef) -> None:
    assert parse_git_ref(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (BK + "?ref=v1.0.0#v1.2.3", "ref conflicts: 'v1.2.3' vs 'v1.0.0'"),
        (BK + "?ref=v1.0.0&tag=v1.2.3", "ref conflicts: 'v1.0.0' vs 'refs/tags/v1.2.3'"),
        (BK + "?tag=v1.0.0&branch=v1.0", "branch conflicts with tag"),
        (BK + "?subdir=a#main:b", "subdir conflicts: 'b' vs 'a'"),
        (
            BK + "?mtime=invalid",
            'invalid mtime value: \'invalid\' (must be "checkout" or "commit")',
        ),
        (BK + "?fetch-by-commit=invalid", "invalid fetch-by-commit value: 'invalid'"),
        (BK + "?keep-git-dir=maybe", "invalid keep-git-dir value: 'maybe'"),
        (BK + "?submodules=2", "invalid submodules value: '2'"),
        (BK + "?invalid=123", "unexpected query 'invalid'"),
        (BK + "?ref=", "query 'ref' has no value"),
        (BK + "?ref=a&ref=b", "query 'ref' has multiple values"),
        ("git@github.com:moby/buildkit.git?tag=a&branch=b", "branch conflicts with tag"),
    ],
)
def test_query_errors(text: str, error: str) -> None:
    with pytest.raises(GitRefError) as info:
        parse_git_ref(text)
    assert info.value.message == error


def test_commit_sha() -> None:
    assert is_commit_sha("a" * 40) and is_commit_sha("0" * 64)
    assert not is_commit_sha("a" * 39) and not is_commit_sha("g" * 40)


def test_redaction() -> None:
    assert redact_credentials("https://u:pw@h/r.git") == "https://u:xxxxx@h/r.git"
    assert redact_credentials("https://u@h/r.git") == "https://u@h/r.git"
    assert redact_credentials("git@h:r.git") == "git@h:r.git"
    line = "ADD https://u:pw@h/r.git#main /x and http://a:b@c/d"
    assert (
        redact_credentials_in(line) == "ADD https://u:xxxxx@h/r.git#main /x and http://a:xxxxx@c/d"
    )
    ref = parse_git_ref("https://u:pw@h/r.git#main:sub")
    assert ref is not None and ref.display == "https://u:xxxxx@h/r.git#main:sub"


def test_subdir_refuses_symlinks_and_files(tmp_path: Path) -> None:
    (tmp_path / "a/b").mkdir(parents=True)
    (tmp_path / "f").write_text("x")
    (tmp_path / "out").symlink_to("/etc")
    (tmp_path / "a/in").symlink_to("b")
    assert _subdir(tmp_path, GitRef("r", subdir="a/b")) == tmp_path / "a/b"
    assert _subdir(tmp_path, GitRef("r", subdir="/a/../a/b/")) == tmp_path / "a/b"
    for bad in ("out", "a/in", "f", "out/ssl"):
        with pytest.raises(BuildError, match="invalid subdir"):
            _subdir(tmp_path, GitRef("r", subdir=bad))
    with pytest.raises(BuildError, match="does not exist"):
        _subdir(tmp_path, GitRef("r", subdir="nope"))


def test_modes_do_not_follow_the_umask(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o700)
    (tmp_path / "d/plain").write_text("x")
    (tmp_path / "d/tool").write_text("x")
    os.chmod(tmp_path / "d/plain", 0o600)
    os.chmod(tmp_path / "d/tool", 0o700)
    (tmp_path / "d/link").symlink_to("plain")
    _normalize_modes(tmp_path)
    modes = {n: stat.S_IMODE(os.lstat(tmp_path / "d" / n).st_mode) for n in ("plain", "tool")}
    assert modes == {"plain": 0o644, "tool": 0o755}
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o755


@pytest.mark.parametrize(
    "text",
    [
        "https://example.com/foo.git#main:sub",
        "git://example.com/foo",
        "ssh://git@host:2222/r.git#v1",
        "git@github.com:moby/buildkit",
        "github.com/moby/buildkit#master",
        "https://example.com/context.tar.gz",  # a download, not git
    ],
)
def test_a_remote_context_is_never_taken_for_a_local_path_without_looking(text: str) -> None:
    # `mason build DIR` skips the git and download code when the context cannot be a URL
    from mason.cli.build_cmd import _may_be_remote

    assert _may_be_remote(text)
    assert parse_git_ref(text) is not None or text.startswith("https://")


def test_a_plain_path_is_local_without_the_git_parser() -> None:
    from mason.cli.build_cmd import _may_be_remote

    for text in ("context/dir", ".", "/abs/dir", "../repo.git", "ftp.example/dir"):
        assert not _may_be_remote(text) and parse_git_ref(text) is None
