"""ADD of git repositories (BuildKit v0.32.2 semantics) and git/http build contexts (buildx)
against real git and HTTP servers on loopback:
``git daemon`` (git://) and ``git http-backend`` (smart HTTP, http://127.0.0.1:PORT/repo.git).
Every build runs the ``mason`` command line with runc and a local output."""

from __future__ import annotations

import http.client
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support.cli import mason_build
from tests.support.git_server import GitRepo, git_daemon, git_http_server, static_http_server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (overlayfs, runc)")


@dataclass
class Served:
    repo: GitRepo
    http: str  # http://127.0.0.1:PORT/app.git
    git: str  # git://127.0.0.1:PORT/app.git
    first: str  # commit ids
    tagged: str


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    if shutil.which("git") is None or shutil.which("runc") is None:
        pytest.skip("git and runc are needed (bash scripts/setup.sh test installs them)")
    base = tmp_path / "srv"
    base.mkdir()
    repo = GitRepo(base, "app")
    repo.write({"README": "hello\n", "sub/inner.txt": "inner\n", "sub/deep/d.txt": "d\n"})
    repo.symlink("escape", "/etc")
    repo.symlink("sub/up", "..")
    first = repo.commit("first")
    repo.tag("v1", annotated=True)
    repo.write({"README": "hello v2\n"})
    tagged = first
    second = repo.commit("second")
    assert second != first
    with git_http_server(base) as http, git_daemon(base) as git:
        yield Served(repo, f"{http}/app.git", f"{git}/app.git", first, tagged)


def _build(
    tmp: Path, base_image: str, dockerfile: str, *args: str
) -> subprocess.CompletedProcess[str]:
    ctx = tmp / "ctx"
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    out = tmp / "out"
    shutil.rmtree(out, ignore_errors=True)
    return mason_build(
        tmp / "root",
        "--build-arg",
        f"BASE={base_image}",
        "-o",
        f"type=local,dest={out}",
        *args,
        str(ctx),
    )


def _ok(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr


def test_add_git_branch_tag_sha_subdir(tmp_path: Path, busybox_image: str, served: Served) -> None:
    df = f"""FROM scratch
ADD {served.http}#main /branch/
ADD {served.git}#v1 /tag/
ADD {served.http}#{served.first} /sha/
ADD {served.http}#main:sub /subdir/
ADD {served.git}?branch=main&subdir=sub/deep /query/
ADD --chown=7:8 --chmod=0640 {served.http} /owned/
ADD --exclude=sub {served.http}#main /excluded/
ADD {served.git}?ref=main&mtime=commit /dated/
"""
    done = _build(tmp_path, busybox_image, df)
    _ok(done)
    out = tmp_path / "out"
    assert (out / "branch/README").read_text() == "hello v2\n"
    assert (out / "tag/README").read_text() == "hello\n"
    assert (out / "sha/README").read_text() == "hello\n"
    assert sorted(os.listdir(out / "subdir")) == ["deep", "inner.txt", "up"]
    assert os.readlink(out / "subdir/up") == ".."  # a symlink is copied as a symlink
    assert os.listdir(out / "query") == ["d.txt"]
    assert not (out / "branch/.git").exists()
    assert os.readlink(out / "branch/escape") == "/etc"
    st = os.lstat(out / "owned/README")
    assert (st.st_mode & 0o777) == 0o640
    assert sorted(os.listdir(out / "excluded")) == ["README", "escape"]
    committed = subprocess.run(
        ["git", "log", "-1", "--format=%ct"],
        cwd=served.repo.work,
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(os.lstat(out / "dated/README").st_mtime) == int(committed.stdout)


def test_add_git_owner_and_mode(tmp_path: Path, busybox_image: str, served: Served) -> None:
    df = f"""FROM {{BASE}}
ADD {served.http}#main /plain/
ADD --chown=7:8 {served.http}#main /owned/
RUN stat -c '%u:%g %a' /plain/README /owned/README /owned/sub > /modes
"""
    done = _build(tmp_path, busybox_image, df.replace("{BASE}", busybox_image))
    _ok(done)
    assert (tmp_path / "out/modes").read_text().split("\n")[:3] == [
        "0:0 644",
        "7:8 644",
        "7:8 755",
    ]


def test_keep_git_dir(tmp_path: Path, busybox_image: str, served: Served) -> None:
    df = f"""FROM scratch
ADD --keep-git-dir=true {served.http}#main /kept/
ADD {served.git}#main?keep-git-dir=true /kept2/
"""
    # the query after the fragment is part of the fragment (BuildKit: ref "main?keep…"): use the
    # query form properly for the second one
    df = df.replace("#main?keep-git-dir=true", "?branch=main&keep-git-dir=true")
    _ok(_build(tmp_path, busybox_image, df))
    for d in ("kept", "kept2"):
        git_dir = tmp_path / "out" / d / ".git"
        assert git_dir.is_dir()
        log = subprocess.run(
            ["git", "--git-dir", str(git_dir), "log", "-1", "--format=%H"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert log.stdout.strip() == served.repo.head()


def test_checksum_ok_and_mismatch(tmp_path: Path, busybox_image: str, served: Served) -> None:
    head = served.repo.head()
    _ok(
        _build(
            tmp_path / "a",
            busybox_image,
            f"FROM scratch\nADD --checksum={head[:12]} {served.http}#main /x/\n",
        )
    )
    bad = _build(
        tmp_path / "b",
        busybox_image,
        f"FROM scratch\nADD --checksum={'0' * 40} {served.http}#main /x/\n",
    )
    assert bad.returncode == 1, bad.stderr
    assert f"expected checksum to match {'0' * 40}, got {head}" in bad.stderr
    assert not (tmp_path / "b/out").exists()
    registry = busybox_image.split("/", 1)[0]
    pushed = mason_build(
        tmp_path / "c",
        "--push",
        "-t",
        f"{registry}/git/mismatch:t",
        str(tmp_path / "b/ctx"),
    )
    assert pushed.returncode == 1 and "expected checksum to match" in pushed.stderr
    assert _status(registry, "/v2/git/mismatch/manifests/t") == 404  # nothing was pushed
    # the control: the matching checksum pushes to the same name
    good = mason_build(
        tmp_path / "c", "--push", "-t", f"{registry}/git/mismatch:t", str(tmp_path / "a/ctx")
    )
    assert good.returncode == 0, good.stderr
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    assert _status(registry, "/v2/git/mismatch/manifests/t", accept) == 200


def _status(registry: str, path: str, headers: dict[str, str] | None = None) -> int:
    conn = http.client.HTTPConnection(registry, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        return conn.getresponse().status
    finally:
        conn.close()


def test_cache_follows_the_commit(tmp_path: Path, busybox_image: str, served: Served) -> None:
    df = f"FROM {busybox_image}\nADD {served.http}#main /app/\nRUN cat /app/README > /seen\n"
    _ok(_build(tmp_path, busybox_image, df))
    again = _build(tmp_path, busybox_image, df)
    _ok(again)
    assert again.stderr.count("CACHED") >= 2, again.stderr
    served.repo.write({"README": "hello v3\n"})
    served.repo.commit("third")
    third = _build(tmp_path, busybox_image, df, "--explain-cache")
    _ok(third)
    assert "cache miss: ADD git repository moved to another commit" in third.stderr
    assert (tmp_path / "out/seen").read_text() == "hello v3\n"
    assert "ADD" in third.stderr and third.stderr.count("CACHED") < again.stderr.count("CACHED")


def test_subdir_symlink_escape_refused(tmp_path: Path, busybox_image: str, served: Served) -> None:
    for sub in ("escape", "sub/up/sub"):
        done = _build(tmp_path, busybox_image, f"FROM scratch\nADD {served.http}#main:{sub} /x/\n")
        assert done.returncode == 1, done.stderr
        assert "invalid subdir" in done.stderr
    dotdot = _build(
        tmp_path, busybox_image, f"FROM scratch\nADD {served.http}#main:../../sub /x/\n"
    )
    _ok(dotdot)  # ".." is cleaned at the repository's root, as BuildKit's path.Join("/", …)
    assert (tmp_path / "out/x/inner.txt").read_text() == "inner\n"


def test_commit_from_a_server_that_sends_only_refs(
    tmp_path: Path, busybox_image: str, served: Served
) -> None:
    """Protocol v0 refuses a want of an unadvertised commit: the whole branch history is
    fetched instead, and the commit checked out from it."""
    with git_http_server(served.repo.bare.parent, protocol_v2=False) as old:
        df = f"FROM scratch\nADD {old}/app.git#{served.first} /sha/\nADD {old}/app.git#v1 /tag/\n"
        _ok(_build(tmp_path, busybox_image, df))
    assert (tmp_path / "out/sha/README").read_text() == "hello\n"
    assert (tmp_path / "out/tag/README").read_text() == "hello\n"


def test_credentials_not_shown(tmp_path: Path, busybox_image: str, served: Served) -> None:
    url = served.http.replace("http://", "http://user:s3cret@")
    done = _build(tmp_path, busybox_image, f"FROM scratch\nADD {url}#nosuchref /x/\n")
    assert done.returncode == 1
    assert "s3cret" not in done.stderr and "user:xxxxx@" in done.stderr
    assert "nosuchref" in done.stderr


# -- git and http build contexts ----------------------------------------------------------------


def _build_remote(
    tmp: Path, base_image: str, context: str, *args: str
) -> subprocess.CompletedProcess[str]:
    out = tmp / "out"
    shutil.rmtree(out, ignore_errors=True)
    return mason_build(
        tmp / "root",
        "--build-arg",
        f"BASE={base_image}",
        "-o",
        f"type=local,dest={out}",
        *args,
        context,
    )


def test_git_context(tmp_path: Path, busybox_image: str, served: Served) -> None:
    served.repo.write(
        {
            "app/Dockerfile": "ARG BASE\nFROM $BASE\nCOPY . /ctx/\nRUN ls -a /ctx > /listing\n",
            "app/alt.Dockerfile": "FROM scratch\nCOPY kept.txt /alt/\n",
            "app/kept.txt": "kept\n",
            "app/secret.txt": "ignored\n",
            "app/.dockerignore": "secret.txt\n",
        }
    )
    served.repo.commit("context")
    done = _build_remote(tmp_path, busybox_image, f"{served.http}#main:app")
    _ok(done)
    listing = (tmp_path / "out/listing").read_text().split()
    assert "kept.txt" in listing and "secret.txt" not in listing and ".git" not in listing
    # dockerui's build arg keeps .git of a git context (at the repository's root, no subdir)
    kept = _build_remote(
        tmp_path,
        busybox_image,
        f"{served.http}#main",
        "-f",
        "app/Dockerfile",
        "--build-arg",
        "BUILDKIT_CONTEXT_KEEP_GIT_DIR=1",
    )
    _ok(kept)
    assert ".git" in (tmp_path / "out/listing").read_text().split()
    # -f is relative to the context's subdir; the git:// and query forms too
    alt = _build_remote(
        tmp_path, busybox_image, f"{served.git}?branch=main&subdir=app", "-f", "alt.Dockerfile"
    )
    _ok(alt)
    assert (tmp_path / "out/alt/kept.txt").read_text() == "kept\n"
    escape = _build_remote(
        tmp_path, busybox_image, f"{served.http}#main:app", "-f", "../../../etc/passwd"
    )
    assert escape.returncode == 2 and "failed to read dockerfile" in escape.stderr


def test_http_tarball_and_dockerfile_contexts(tmp_path: Path, busybox_image: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in {
            "Dockerfile": b"ARG BASE\nFROM $BASE\nCOPY hello.txt /h/\n",
            "hello.txt": b"from the tarball\n",
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    files = {
        "ctx.tar.gz": buf.getvalue(),
        "Dockerfile.txt": b"ARG BASE\nFROM $BASE\nRUN echo plain > /plain\n",
    }
    with static_http_server(files) as base:
        _ok(_build_remote(tmp_path, busybox_image, f"{base}/ctx.tar.gz"))
        assert (tmp_path / "out/h/hello.txt").read_text() == "from the tarball\n"
        _ok(_build_remote(tmp_path, busybox_image, f"{base}/Dockerfile.txt"))
        assert (tmp_path / "out/plain").read_text() == "plain\n"
        missing = _build_remote(tmp_path, busybox_image, f"{base}/nothing.tar")
        assert missing.returncode == 1 and "HTTP 404" in missing.stderr
