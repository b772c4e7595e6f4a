"""Table-driven tests of .dockerignore reading and matching (moby patternmatcher rules)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mason.dockerfile import DockerfileError
from mason.dockerfile.dockerignore import (
    IgnoreMatcher,
    ignore_file_for,
    load_ignore_rules,
    read_ignore_file,
)

READ = [
    (b"# comment\nnode_modules\n\n  *.log  \n", ["node_modules", "*.log"]),
    (b"\xef\xbb\xbf.git\n", [".git"]),
    (b"/abs/path\n", ["abs/path"]),
    (b"a/../b\n./c\nd//e/\n", ["b", "c", "d/e"]),
    (b"!keep.txt\n! spaced\n", ["!keep.txt", "!spaced"]),
    (b"  # indented is a pattern\n", ["# indented is a pattern"]),
    (b"crlf\r\nnext\r\n", ["crlf", "next"]),
    (b"/\n", ["/"]),
]


@pytest.mark.parametrize(("data", "patterns"), READ)
def test_read_ignore_file(data: bytes, patterns: list[str]) -> None:
    assert read_ignore_file(data) == patterns


MATCH = [
    # (patterns, path, excluded)
    (["*.go"], "a.go", True),
    (["*.go"], "dir/a.go", False),
    (["*.go"], "a.go.txt", False),
    (["**/*.go"], "a.go", True),
    (["**/*.go"], "dir/sub/a.go", True),
    (["dir"], "dir", True),
    (["dir"], "dir/file", True),
    (["dir"], "dir/sub/file", True),
    (["dir"], "other/dir", False),
    (["dir/*"], "dir/file", True),
    (["dir/*"], "dir", False),
    (["dir/**"], "dir/a/b", True),
    (["a/**/b"], "a/b", True),
    (["a/**/b"], "a/x/y/b", True),
    (["a/**/b"], "a/x/c", False),
    (["**"], "anything/at/all", True),
    (["file?.txt"], "file1.txt", True),
    (["file?.txt"], "file12.txt", False),
    (["file?.txt"], "file/.txt", False),
    (["[a-c].txt"], "b.txt", True),
    (["[a-c].txt"], "d.txt", False),
    (["[^a-c].txt"], "d.txt", True),
    (["[!a-c].txt"], "a.txt", False),
    (["\\*.txt"], "*.txt", True),
    (["\\*.txt"], "a.txt", False),
    (["*"], "a", True),
    (["*"], "a/b", True),  # the parent "a" matches
    (["a.b"], "axb", False),
    (["x+y"], "x+y", True),
    # exceptions, last match wins
    (["*.md", "!README.md"], "README.md", False),
    (["*.md", "!README.md"], "CHANGES.md", True),
    (["!README.md", "*.md"], "README.md", True),
    (["docs", "!docs/keep"], "docs/keep", False),
    (["docs", "!docs/keep"], "docs/drop", True),
    (["docs", "!docs/keep"], "docs/keep/inner", False),
    (["*", "!src", "src/*.tmp"], "src/a.tmp", True),
    (["*", "!src", "src/*.tmp"], "src/a.py", False),
    (["*", "!src", "src/*.tmp"], "README", True),
    # leading slash and cleaning
    (["/build"], "build/out", True),
    (["./build/"], "build/out", True),
    # Dockerfile and .dockerignore are ordinary context paths
    (["Dockerfile", ".dockerignore"], "Dockerfile", True),
    ([], "anything", False),
]


@pytest.mark.parametrize(("patterns", "path", "excluded"), MATCH)
def test_excluded(patterns: list[str], path: str, excluded: bool) -> None:
    assert IgnoreMatcher(patterns).excluded(path) is excluded


def test_context_root_is_never_excluded() -> None:
    assert IgnoreMatcher(["*", "**"]).excluded(".") is False


SKIP = [
    (["node_modules"], "node_modules", True),
    (["node_modules"], "src", False),
    (["docs", "!docs/keep"], "docs", False),
    (["docs", "!README.md"], "docs", True),
    (["docs", "!**/keep"], "docs", False),
    (["*", "!src/main.py"], "tests", True),
    (["*", "!src/main.py"], "src", False),
    (["*", "!s*/main.py"], "src", False),
]


@pytest.mark.parametrize(("patterns", "path", "skip"), SKIP)
def test_can_skip_dir(patterns: list[str], path: str, skip: bool) -> None:
    assert IgnoreMatcher(patterns).can_skip_dir(path) is skip


@pytest.mark.parametrize("pattern", ["[", "a[b", "x\\", "[]a]"])
def test_bad_patterns_are_errors(pattern: str) -> None:
    with pytest.raises(DockerfileError):
        IgnoreMatcher([pattern])


def test_lone_exclamation_is_an_error() -> None:
    with pytest.raises(DockerfileError, match="illegal exclusion pattern"):
        IgnoreMatcher(read_ignore_file(b"!\n"))


def test_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / ".dockerignore").write_text("from-context\n")
    df = tmp_path / "build" / "app.Dockerfile"
    df.parent.mkdir()
    df.write_text("FROM scratch\n")
    assert ignore_file_for(df, ctx) == ctx / ".dockerignore"
    (tmp_path / "build" / "app.Dockerfile.dockerignore").write_text("from-dockerfile\n")
    assert ignore_file_for(df, ctx) == tmp_path / "build" / "app.Dockerfile.dockerignore"
    matcher = load_ignore_rules(df, ctx)
    assert matcher.excluded("from-dockerfile")
    assert not matcher.excluded("from-context")


def test_no_ignore_file_excludes_nothing(tmp_path: Path) -> None:
    matcher = load_ignore_rules(tmp_path / "Dockerfile", tmp_path)
    assert not matcher.excluded("x")
