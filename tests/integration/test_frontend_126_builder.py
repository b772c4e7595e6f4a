"""The builder's semantics of Dockerfile frontend 1.26 (BuildKit v0.32.2), issue 11 item 2.

Each test builds a small Dockerfile FROM the test registry's busybox with runc, writes an OCI
layout, unpacks it with umoci and checks the files, modes and config the feature makes.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import json
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support.archives import inside_archive_gz

from mason.engine.builder import build
from mason.engine.options import BuildOptions, SecretSpec, parse_output
from mason.errors import BuildError
from mason.progress import RecordingSink

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (overlayfs, runc)")


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (bash scripts/setup.sh test installs it)")


@dataclass
class Built:
    rootfs: Path
    config: dict[str, Any]
    manifest: dict[str, Any]
    layout: Path
    root: Path

    def mode(self, rel: str) -> int:
        return stat.S_IMODE(os.lstat(self.rootfs / rel).st_mode)

    def text(self, rel: str) -> str:
        return (self.rootfs / rel).read_text()

    def names(self, rel: str = "") -> list[str]:
        """Every path under ``rel``, relative to it, sorted."""
        base = self.rootfs / rel
        out = []
        for dirpath, dirnames, filenames in os.walk(base):
            for n in dirnames + filenames:
                out.append(os.path.relpath(os.path.join(dirpath, n), base))
        return sorted(out)


def _build(tmp: Path, dockerfile: str, files: Mapping[str, bytes | str] = (), **kw: Any) -> Built:
    """Build ``dockerfile`` (``{BASE}`` is the busybox image) on a context of ``files``."""
    _need("runc")
    _need("umoci")
    tmp.mkdir(parents=True, exist_ok=True)
    context = tmp / "context"
    context.mkdir(exist_ok=True)
    for name, data in dict(files).items():
        p = context / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        p.write_bytes(data)
    (context / "Dockerfile").write_text(dockerfile)
    layout = tmp / "layout"
    shutil.rmtree(layout, ignore_errors=True)
    root = kw.pop("root", tmp / "root")
    outputs = kw.pop("outputs", (parse_output(f"type=oci,dest={layout},tar=false"),))
    progress = kw.pop("progress", None)
    build(BuildOptions(context=context, outputs=outputs, **kw), root=root, progress=progress)
    bundle = tmp / "bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)],
        check=True,
        capture_output=True,
    )
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]))
    config = json.loads(_blob(layout, manifest["config"]["digest"]))
    return Built(bundle / "rootfs", config, manifest, layout, root)


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


# -- a RUN's groups ---------------------------------------------------------------------


def test_run_has_its_primary_group_among_supplementary_groups(
    busybox_image: str, tmp_path: Path
) -> None:
    """BuildKit v0.32.2: user app (gid 1500, also in extra) -> groups=1500(app),1600(extra);
    USER 1700:1800 -> groups=1800."""
    b = _build(
        tmp_path,
        f"""FROM {busybox_image}
RUN echo 'app:x:1500:1500::/home/app:/bin/sh' >> /etc/passwd && \\
    printf 'app:x:1500:\\nextra:x:1600:app\\n' >> /etc/group
USER app
RUN id > /tmp/app.id
USER 1700:1800
RUN id > /tmp/numeric.id
""",
    )
    assert (
        b.text("tmp/app.id").strip() == "uid=1500(app) gid=1500(app) groups=1500(app),1600(extra)"
    )
    assert b.text("tmp/numeric.id").strip() == "uid=1700 gid=1800 groups=1800"


# -- HEALTHCHECK --start-interval, --chmod, heredoc modes ---------------------------------


def test_healthcheck_start_interval_in_the_config(busybox_image: str, tmp_path: Path) -> None:
    b = _build(
        tmp_path,
        f"""FROM {busybox_image}
HEALTHCHECK --interval=30s --start-period=5s --start-interval=2s --retries=3 CMD wget -q -O- localhost
""",
    )
    assert b.config["config"]["Healthcheck"] == {
        "Test": ["CMD-SHELL", "wget -q -O- localhost"],
        "Interval": 30_000_000_000,
        "StartPeriod": 5_000_000_000,
        "StartInterval": 2_000_000_000,
        "Retries": 3,
    }
    # BuildKit v0.32.2's history text: Go's %+v of the health config
    assert b.config["history"][-1]["created_by"] == (
        "HEALTHCHECK {Test:[CMD-SHELL wget -q -O- localhost] Interval:30s Timeout:0s StartPeriod:5s "
        "StartInterval:2s Retries:3}"
    )


def test_symbolic_and_expanded_chmod(busybox_image: str, tmp_path: Path) -> None:
    files = {"f644": 0o644, "d/inner": 0o640, "f600": 0o600, "exec": 0o744}
    for name, mode in files.items():
        p = tmp_path / "context" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(name + "\n")
        os.chmod(p, mode)
    os.chmod(tmp_path / "context" / "d", 0o750)
    b = _build(
        tmp_path,
        f"""FROM {busybox_image}
ARG MODE=0640
COPY --chmod=u+x f644 /out/ux
COPY --chmod=go=rx f600 /out/gorx
COPY --chmod=a+X d /out/dir/
COPY --chmod=a+X f644 /out/plusX-file
COPY --chmod=a+X exec /out/plusX-exec
COPY --chmod=u=rwx,g=u,o= f644 /out/copyu
COPY --chmod=$MODE f644 /out/expanded
""",
    )
    assert b.mode("out/ux") == 0o744
    assert b.mode("out/gorx") == 0o655
    assert b.mode("out/dir/inner") == 0o640  # X: a file only when it is executable already
    assert b.mode("out/plusX-file") == 0o644
    assert b.mode("out/plusX-exec") == 0o755
    assert b.mode("out/copyu") == 0o770
    assert b.mode("out/expanded") == 0o640
    hist = [h["created_by"] for h in b.config["history"]]
    assert "COPY --chmod=u+x f644 /out/ux # buildkit" in hist
    assert "COPY --chmod=0640 f644 /out/expanded # buildkit" in hist


def test_invalid_chmod_names_the_line(busybox_image: str, tmp_path: Path) -> None:
    from mason.dockerfile import DockerfileError

    with pytest.raises(DockerfileError) as info:
        _build(tmp_path, f"FROM {busybox_image}\nCOPY --chmod=u+z a /a\n", {"a": "a"})
    assert "invalid syntax" in str(info.value) and "Dockerfile:2" in str(info.value)
    with pytest.raises(DockerfileError) as info:
        _build(tmp_path, f"FROM {busybox_image}\nCOPY --chmod=17777 a /a\n", {"a": "a"})
    assert (
        "invalid chmod parameter: '17777'. it should be octal string and between 0 and 07777"
        in str(info.value)
    )


def test_heredoc_files_are_0644(busybox_image: str, tmp_path: Path) -> None:
    b = _build(
        tmp_path,
        f"""FROM {busybox_image}
COPY <<EOF /heredoc.txt
hello
EOF
COPY <<one <<two /docs/
first
one
second
two
""",
    )
    assert b.text("heredoc.txt") == "hello\n"
    assert b.mode("heredoc.txt") == 0o644
    assert b.mode("docs/one") == b.mode("docs/two") == 0o644


# -- RUN --mount=type=secret,env= ---------------------------------------------------------


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if data[:2] == b"\x1f\x8b":  # a gzip layer: look inside
                data += gzip.decompress(data)
            if needle in data:
                found.append(path)
    return found


def test_secret_env_is_in_that_run_only(busybox_image: str, tmp_path: Path) -> None:
    secret = "s3cr3t-" + os.urandom(6).hex()
    (tmp_path / "secret.txt").write_text(secret)
    dockerfile = f"""FROM {busybox_image}
RUN --mount=type=secret,id=tok,env=TOKEN sh -c 'echo "len=${{#TOKEN}}" > /len; \\
    [ "$TOKEN" = "$(cat /proc/self/environ | tr "\\0" "\\n" | sed -n "s/^TOKEN=//p")" ] && echo env > /env; \\
    [ -e /run/secrets/tok ] || echo nofile > /nofile'
RUN echo "after=[$TOKEN]" > /after
RUN --mount=type=secret,id=tok,env=TOKEN,target=/s sh -c '[ "$(cat /s)" = "$TOKEN" ] && echo both > /both'
RUN --mount=type=secret,id=absent,env=OPT echo "opt=[$OPT]" > /opt
"""
    sink = RecordingSink()
    b = _build(
        tmp_path, dockerfile, secrets=(SecretSpec("tok", tmp_path / "secret.txt"),), progress=sink
    )
    assert b.text("len") == f"len={len(secret)}\n"
    assert b.text("env") == "env\n" and b.text("nofile") == "nofile\n"
    assert b.text("after") == "after=[]\n"
    assert b.text("both") == "both\n"
    assert b.text("opt") == "opt=[]\n"  # an optional secret that is missing: empty, as BuildKit
    needle = secret.encode()
    assert needle not in json.dumps(b.config).encode()
    assert not _files_holding(b.layout, needle)  # no layer, config or manifest
    assert not _files_holding(b.root, needle)  # no key preimage, result or blob under $MASON_ROOT
    assert not _files_holding(b.rootfs, needle)
    # the value is not in the key: another value hits the cache
    (tmp_path / "secret.txt").write_text("another-value")
    sink = RecordingSink()
    _build(
        tmp_path,
        dockerfile,
        secrets=(SecretSpec("tok", tmp_path / "secret.txt"),),
        progress=sink,
        root=b.root,
    )
    runs = [e for e in sink.events if " RUN " in e.name and e.status in ("cached", "done")]
    assert runs and all(e.status == "cached" for e in runs), [(e.name, e.status) for e in runs]


def test_secret_env_required_and_missing_fails(busybox_image: str, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="secret tok not found"):
        _build(
            tmp_path, f"FROM {busybox_image}\nRUN --mount=type=secret,id=tok,env=T,required true\n"
        )


# -- RUN --security=insecure -----------------------------------------------------------


def _probe_security(p: str) -> str:
    """Shell that records, in files named ``/<p>...``, what the sandbox lets a RUN do."""
    return (
        f"grep ^CapEff /proc/self/status > /{p}caps; "
        f"(echo 1 > /proc/sys/vm/drop_caches) 2>/dev/null && echo w > /{p}proc-sys || echo ro > /{p}proc-sys; "
        f"mkdir -p /probe-mnt; mount -t tmpfs none /probe-mnt 2>/dev/null && echo mount-ok > /{p}mount "
        f"|| echo mount-refused > /{p}mount"
    )


@pytest.mark.parametrize("runtime", ["runc", "chroot"])
def test_security_insecure_needs_allow_and_lifts_the_sandbox(
    busybox_image: str, tmp_path: Path, runtime: str
) -> None:
    dockerfile = f"""FROM {busybox_image}
RUN {_probe_security("sandbox-")}
RUN --security=insecure {_probe_security("")}
RUN --security=sandbox grep ^CapEff /proc/self/status > /after-caps
"""
    with pytest.raises(BuildError) as info:
        _build(tmp_path, dockerfile, runtime=runtime)
    assert "security.insecure is not allowed" in info.value.message
    assert "Dockerfile:3" in str(info.value) and "--allow security.insecure" in str(info.value)
    b = _build(tmp_path, dockerfile, runtime=runtime, allow=("security.insecure",))
    # every capability mason has itself (BuildKit takes its own process's, containerd's cap.Current)
    full = next(
        int(ln.split()[1], 16)
        for ln in Path("/proc/self/status").read_text().splitlines()
        if ln.startswith("CapEff:")
    )
    assert int(b.text("caps").split()[1], 16) == full
    assert int(b.text("sandbox-caps").split()[1], 16) != full
    assert int(b.text("after-caps").split()[1], 16) != full  # that RUN only
    assert b.text("proc-sys") == "w\n"  # /proc/sys is not read-only
    assert b.text("sandbox-proc-sys") == "ro\n"
    assert b.text("mount") == "mount-ok\n"  # CAP_SYS_ADMIN
    assert b.text("sandbox-mount") == "mount-refused\n"


def test_allow_flag_is_checked(tmp_path: Path) -> None:
    from mason.cli.main import main

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    assert main(["build", "--allow", "security.nope", str(tmp_path)]) == 2


# -- COPY --parents, COPY/ADD --exclude -----------------------------------------------------

#: BuildKit v0.32.2's case 15 (tests/data/buildkit-keys/15-copy-parents-exclude): the context and
#: the tree BuildKit built from it (its RUN's `find | sort`, read from the shared golden layers)
CASE15_FILES = {
    n: n + "\n"
    for n in (
        "logs/keep/app.log",
        "logs/keep/app.txt",
        "logs/tmp/t.txt",
        "logs/top.log",
        "logs/top.txt",
        "src/a/one.txt",
        "src/a/skip.md",
        "src/a/two.txt",
        "src/b/one.txt",
        "src/b/two.txt",
        "src/c/one.txt",
    )
}
CASE15_TREE = [
    "/all",
    "/all/src",
    "/all/src/a",
    "/all/src/a/one.txt",
    "/all/src/a/skip.md",
    "/all/src/a/two.txt",
    "/all/src/b",
    "/all/src/b/one.txt",
    "/all/src/b/two.txt",
    "/logs",
    "/logs/keep",
    "/logs/keep/app.log",
    "/logs/keep/app.txt",
    "/logs/top.txt",
    "/out",
    "/out/src",
    "/out/src/a",
    "/out/src/a/one.txt",
    "/out/src/a/two.txt",
    "/out/src/b",
    "/out/src/b/one.txt",
]


def test_copy_parents_and_exclude_as_buildkit_case_15(busybox_image: str, tmp_path: Path) -> None:
    b = _build(
        tmp_path,
        f"""FROM {busybox_image}
COPY --parents src/a/*.txt src/b/one.txt /out/
COPY --exclude=*.log --exclude=tmp logs/ /logs/
COPY --parents --exclude=src/c ./src/ /all/
RUN find /out /logs /all | sort > /tree.txt
""",
        CASE15_FILES,
    )
    assert b.text("tree.txt").split() == CASE15_TREE
    assert b.text("out/src/a/one.txt") == "src/a/one.txt\n"


def test_copy_parents_pivot_and_globstar(busybox_image: str, tmp_path: Path) -> None:
    files = {
        "app/pkg/x/go.mod": "x",
        "app/pkg/y/z/go.mod": "z",
        "app/pkg/y/main.go": "m",
        "app/go.mod": "r",
    }
    b = _build(
        tmp_path,
        f"""FROM {busybox_image}
COPY --parents app/./pkg/**/go.mod /pivot/
COPY --parents **/go.mod /all/
COPY --parents app/go.mod /one/
""",
        files,
    )
    assert b.names("pivot") == [
        "pkg",
        "pkg/x",
        "pkg/x/go.mod",
        "pkg/y",
        "pkg/y/z",
        "pkg/y/z/go.mod",
    ]
    assert b.names("all") == [
        "app",
        "app/go.mod",
        "app/pkg",
        "app/pkg/x",
        "app/pkg/x/go.mod",
        "app/pkg/y",
        "app/pkg/y/z",
        "app/pkg/y/z/go.mod",
    ]
    assert b.names("one") == ["app", "app/go.mod"]


def test_a_wildcard_matching_nothing_copies_nothing(busybox_image: str, tmp_path: Path) -> None:
    """Frontend 1.26 sets ``allowEmptyWildcard`` on COPY and ADD: the optional-file idiom
    (``COPY package.json yarn.lock* /app/``) builds, and a wildcard alone that matches
    nothing creates nothing, from the context and from a stage; a missing plain path still fails."""
    b = _build(
        tmp_path,
        f"""FROM {busybox_image} AS src
RUN mkdir /d && echo x > /d/x.txt
FROM {busybox_image}
COPY package.json yarn.lock* /app/
COPY *.nothing /none/
ADD nothing*/ /none-add/
COPY --from=src /d/*.md /none-stage/
COPY --parents missing*/./** /none-parents/
""",
        {"package.json": "{}"},
    )
    assert b.names("app") == ["package.json"]
    for absent in ("none", "none-add", "none-stage", "none-parents"):
        assert not os.path.lexists(b.rootfs / absent), absent
    with pytest.raises(BuildError, match=r"missing\.json"):
        _build(tmp_path / "plain", f"FROM {busybox_image}\nCOPY missing.json /app/\n")


def test_exclude_with_exceptions_and_add_and_from_stage(busybox_image: str, tmp_path: Path) -> None:
    files = {"d/a.md": "a", "d/b.md": "b", "d/keep.md": "k", "d/c.txt": "c", "d/sub/e.md": "e"}
    b = _build(
        tmp_path,
        f"""FROM {busybox_image} AS src
COPY d /d
FROM {busybox_image}
COPY --exclude=*.md --exclude=!keep.md d /copy/
ADD --exclude=**/*.md d /add/
COPY --from=src --exclude=sub /d /staged/
""",
        files,
    )
    assert b.names("copy") == ["c.txt", "keep.md", "sub", "sub/e.md"]
    assert b.names("add") == ["c.txt", "sub"]
    assert b.names("staged") == ["a.md", "b.md", "c.txt", "keep.md"]


def test_exclude_and_parents_enter_the_key(busybox_image: str, tmp_path: Path) -> None:
    """An excluded file's edit hits the cache; another exclude pattern misses it."""
    files = {"d/a.txt": "a", "d/b.log": "b"}
    df = f"FROM {busybox_image}\nCOPY --exclude=*.log d /d/\n"
    b = _build(tmp_path, df, files)
    (tmp_path / "context" / "d" / "b.log").write_text("changed")
    sink = RecordingSink()
    _build(tmp_path, df, progress=sink, root=b.root)
    assert [
        e.status for e in sink.events if "COPY" in e.name and e.status in ("cached", "done")
    ] == ["cached"]
    sink = RecordingSink()
    _build(tmp_path, df.replace("*.log", "*.txt"), progress=sink, root=b.root)
    assert [
        e.status for e in sink.events if "COPY" in e.name and e.status in ("cached", "done")
    ] == ["done"]


# -- ADD --unpack ------------------------------------------------------------------------------


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A static file server on 127.0.0.1 (for ADD <url>): its directory and base URL."""
    d = tmp_path / "www"
    d.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(d))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield d, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_add_unpack(busybox_image: str, tmp_path: Path, http_dir: tuple[Path, str]) -> None:
    www, url = http_dir
    (www / "remote.tar.gz").write_bytes(inside_archive_gz())
    b = _build(
        tmp_path / "b",
        f"""FROM {busybox_image}
ADD archive.tar.gz /local-default/
ADD --unpack=false archive.tar.gz /local-kept/
ADD {url}/remote.tar.gz /remote-default/
ADD --unpack=true {url}/remote.tar.gz /remote-unpacked/
""",
        {"archive.tar.gz": inside_archive_gz()},
    )
    assert b.names("local-default") == ["inside", "inside/one.txt", "inside/two.txt"]
    assert b.names("local-kept") == ["archive.tar.gz"]
    assert (b.rootfs / "local-kept" / "archive.tar.gz").read_bytes() == inside_archive_gz()
    assert b.names("remote-default") == ["remote.tar.gz"]
    assert b.names("remote-unpacked") == ["inside", "inside/one.txt", "inside/two.txt"]
    assert (
        b.text("remote-unpacked/inside/two.txt") == "two\n"
        and b.mode("remote-unpacked/inside/one.txt") == 0o640
    )


# -- SOURCE_DATE_EPOCH and rewrite-timestamp=true -------------------------------------------


def test_source_date_epoch_and_rewrite_timestamp_give_one_digest(
    busybox_image: str, tmp_path: Path
) -> None:
    """Two cold builds at different times, of contexts with other mtimes, give one image."""
    import time

    epoch = 1_700_000_000
    dockerfile = f"""FROM {busybox_image}
COPY a.txt /a.txt
RUN echo built > /built-at && touch /new-file
"""
    digests = []
    for n in range(2):
        work = tmp_path / f"b{n}"
        layout = work / "layout"
        b = _build(
            work,
            dockerfile,
            {"a.txt": "a\n"},
            build_args={"SOURCE_DATE_EPOCH": str(epoch)},
            source_date_epoch=epoch,
            outputs=(parse_output(f"type=oci,dest={layout},tar=false,rewrite-timestamp=true"),),
        )
        os.utime(work / "context" / "a.txt", (epoch + 99_999 * (n + 1),) * 2)
        index = json.loads((b.layout / "index.json").read_text())
        digests.append(index["manifests"][0]["digest"])
        assert b.config["created"] == "2023-11-14T22:13:20Z"
        assert {h["created"] for h in b.config["history"]} == {"2023-11-14T22:13:20Z"}
        for rel in ("a.txt", "built-at", "new-file"):
            assert os.lstat(b.rootfs / rel).st_mtime <= epoch, rel
        time.sleep(1.1)
    assert digests[0] == digests[1]


def test_rewrite_timestamp_is_an_output_attribute() -> None:
    from mason.errors import UsageError

    assert parse_output("type=oci,dest=x.tar,rewrite-timestamp=true").rewrite_timestamp
    assert parse_output("type=image,name=r/a,rewrite-timestamp=true").rewrite_timestamp
    assert not parse_output("type=docker,dest=x.tar").rewrite_timestamp
    with pytest.raises(UsageError):
        parse_output("type=oci,dest=x.tar,rewrite-timestamp=maybe")
    with pytest.raises(UsageError):
        parse_output("type=local,dest=x,rewrite-timestamp=true")
