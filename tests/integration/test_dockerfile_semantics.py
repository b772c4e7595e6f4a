"""Docker compatibility: `mason build` against Docker's documented Dockerfile behaviour.

Few builds, many checks: ``contexts/semantics/Dockerfile`` (one multi-stage build with
``--target final``) records what its steps observe under ``/obs`` and leaves files and
config behind; the test unpacks the OCI output once with umoci and compares everything
with what ``docker buildx build`` (BuildKit's v0.11 Dockerfile frontend) gives. The base
image it builds FROM is made here too (ONBUILD triggers) and pushed to the test registry.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.archives import inside_archive_gz
from tests.support.registry_server import RegistryServer

from mason.engine.builder import build
from mason.engine.options import BuildOptions, SecretSpec, parse_output
from mason.errors import BuildError
from mason.progress import RecordingSink

CONTEXT = Path(__file__).resolve().parent / "contexts" / "semantics"
SECRET = "s3cr3t-token-do-not-leak"
REMOTE = {"remote.txt": b"remote content\n", "other.txt": b"other remote\n"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (overlayfs, runc)")


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (bash scripts/setup.sh installs it)")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def http_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A static file server on 127.0.0.1 for ADD <url>."""
    d = tmp_path_factory.mktemp("www")
    for name, data in REMOTE.items():
        (d / name).write_bytes(data)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(d))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _states(sink: RecordingSink) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in sink.events:
        if e.status in ("cached", "done", "error"):
            out[e.name] = e.status
    return out


def _read_layout(layout: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((layout / "blobs" / "sha256" / digest).read_bytes())
    config = json.loads(
        (layout / "blobs" / "sha256" / manifest["config"]["digest"].split(":", 1)[1]).read_bytes()
    )
    return manifest, config


@pytest.fixture(scope="module")
def onbuild_base(
    registry: RegistryServer, busybox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The base image with ONBUILD triggers, built and pushed by mason."""
    _need("runc")
    ref = f"{registry.host}/semantics/onbuild-base:1"
    build(
        BuildOptions(
            context=CONTEXT,
            dockerfile=CONTEXT / "base.Dockerfile",
            build_args={"BASE": busybox_image},
            tags=(ref,),
            push=True,
        ),
        root=tmp_path_factory.mktemp("root-base"),
    )
    return ref


@pytest.fixture(scope="module")
def probe(
    busybox_image: str, onbuild_base: str, http_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The probe Dockerfile built once (--target final), unpacked with umoci."""
    _need("umoci")
    work = tmp_path_factory.mktemp("probe")
    context = work / "context"
    shutil.copytree(CONTEXT, context, symlinks=True)
    (context / "archive.tar.gz").write_bytes(inside_archive_gz())
    secret = work / "secret.txt"
    secret.write_text(SECRET)
    layout = work / "layout"
    sink = RecordingSink()
    outcome = build(
        BuildOptions(
            context=context,
            target="final",
            build_args={
                "BASE": busybox_image,
                "ONBUILD_BASE": onbuild_base,
                "OVERRIDE": "from-cli",
                "HTTP_URL": http_url,
                "HTTP_PROXY": "http://proxy.invalid:3128",
            },
            secrets=(SecretSpec("tok", secret),),
            outputs=(parse_output(f"type=oci,dest={layout},tar=false"),),
        ),
        root=work / "root",
        progress=sink,
    )
    bundle = work / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)],
        check=True,
        capture_output=True,
    )
    manifest, config = _read_layout(layout)
    return {
        "rootfs": bundle / "rootfs",
        "config": config,
        "manifest": manifest,
        "layout": layout,
        "sink": sink,
        "outcome": outcome,
        "root": work / "root",
        "context": context,
    }


def _obs(probe: dict[str, Any], name: str) -> str:
    text: str = (probe["rootfs"] / "obs" / name).read_text()
    return text


def _owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_target_stops_and_unused_stages_never_run(probe: dict[str, Any]) -> None:
    """--target final: the stage after it and the stage nobody needs (both `exit 1`) never run."""
    names = _states(probe["sink"])
    assert not [n for n in names if "exit 1" in n], names
    assert all(s != "error" for s in names.values())
    assert any(n.startswith("[main ") for n in names) and any(
        n.startswith("[builder ") for n in names
    )


def test_arg_and_env_scoping(probe: dict[str, Any]) -> None:
    """ARG before FROM is for FROM only unless redeclared; --build-arg overrides defaults; ARG defaults
    expand earlier ARGs; predefined platform ARGs need `ARG TARGETARCH`; proxy args reach RUN."""
    lines = _obs(probe, "args.txt").splitlines()
    from mason.oci.platform import host_platform

    host = host_platform()
    assert lines == [
        "targetarch-before-declare=[]",
        "from_only=[]",
        "redeclared=[global-value]",
        "override=[from-cli]",
        "combined=[from-cli-combined]",
        "unset=[unset]",
        f"targetarch=[{host.architecture}]",
        f"targetos=[{host.os}]",
        f"targetplatform=[{host}]",
        "base_env=[from-base]",
        "http_proxy=[http://proxy.invalid:3128]",
    ]
    # ENV values are expanded before the instruction applies; ENV shadows an ARG of the same name
    assert _obs(probe, "env.txt") == "myenv=[hello world] sameref=[one] shadow=[from-env]\n"


def test_config_env_keeps_env_and_drops_args(probe: dict[str, Any]) -> None:
    """Image Env: the base's ENV inherited, ENV values in order, no ARG and no proxy variable;
    the proxy value is in no history entry either."""
    cfg = probe["config"]
    env = cfg["config"]["Env"]
    assert "BASE_ENV=from-base" in env
    assert "MYENV=hello world" in env and "SAME=two" in env and "SAMEREF=one" in env
    assert "FROMARG=from-cli-combined" in env and "SHADOW=from-env" in env
    assert any(e.startswith("PATH=") for e in env)
    names = {e.partition("=")[0] for e in env}
    assert not names & {
        "OVERRIDE",
        "REDECLARED",
        "COMBINED",
        "TARGETARCH",
        "HTTP_PROXY",
        "HTTP_URL",
        "UNSET_ARG",
    }
    dumped = json.dumps(cfg)
    assert "proxy.invalid" not in dumped
    assert SECRET not in dumped


def test_exec_and_shell_forms_and_shell_instruction(probe: dict[str, Any]) -> None:
    """Exec form is not expanded by the builder; SHELL changes RUN's and CMD's shell form."""
    assert _obs(probe, "exec.txt") == "$MYENV\nhello world\n"
    assert _obs(probe, "shell.txt") == "via_shell=[yes]\n"
    assert _obs(probe, "heredoc-run.txt") == "heredoc run [hello world]\nsecond line\n"
    assert _obs(probe, "heredoc-shebang.txt") == "shebang heredoc\n"
    cfg = probe["config"]["config"]
    assert cfg["Shell"] == ["/usr/bin/env", "VIA_SHELL=yes", "/bin/sh", "-c"]


def test_entrypoint_in_later_stage_resets_inherited_cmd(probe: dict[str, Any]) -> None:
    cfg = probe["config"]["config"]
    assert cfg["Entrypoint"] == ["/bin/echo", "entry"]
    assert "Cmd" not in cfg or cfg["Cmd"] is None
    hist = [h["created_by"] for h in probe["config"]["history"]]
    assert 'CMD ["/usr/bin/env" "VIA_SHELL=yes" "/bin/sh" "-c" "echo shell form"]' in hist


def test_user_and_workdir(probe: dict[str, Any]) -> None:
    r = probe["rootfs"]
    assert _obs(probe, "pwd.txt") == "/w1/w2/w3\n"
    assert _obs(probe, "pwd-env.txt") == "/envdir/sub\n"
    assert _obs(probe, "user-name.txt") == "1000\n1000\n"
    assert _obs(probe, "user-ids.txt") == "1001\n2000\n"
    # WORKDIR under USER app creates the missing directories owned by app
    assert _owner(r / "home" / "app" / "work") == (1000, 1000)
    assert _owner(r / "home" / "app") == (1000, 1000)
    assert _owner(r / "home" / "app" / "work" / "made-by-app") == (1000, 1000)
    assert _owner(r / "tmp" / "made-by-1001") == (1001, 2000)
    assert _owner(r / "w1" / "w2" / "w3") == (0, 0)
    cfg = probe["config"]["config"]
    assert cfg["User"] == "app:grp2"
    assert cfg["WorkingDir"] == "/copies"


def test_copy_destinations_wildcards_and_directories(probe: dict[str, Any]) -> None:
    r = probe["rootfs"]
    assert sorted(os.listdir(r / "multi")) == ["a.txt", "b.txt"]
    assert (r / "renamed.txt").read_text() == "alpha\n"
    assert sorted(os.listdir(r / "existing-dir-no-slash")) == ["a.txt", "b.txt"]
    # a directory source copies its contents (hidden files included, .dockerignore applied)
    assert sorted(os.listdir(r / "dircopy")) == [".hidden", "sub", "x.txt"]
    assert sorted(os.listdir(r / "dircopy" / "sub")) == ["y.txt"]
    assert sorted(os.listdir(r / "dircopy-slash")) == [".hidden", "sub", "x.txt"]
    assert sorted(os.listdir(r / "wild")) == ["a.txt", "b.txt", "onbuild.txt"]
    assert sorted(os.listdir(r / "wild-sub")) == ["y.txt"]
    # relative destinations are under WORKDIR
    assert (r / "copies" / "relative.txt").read_text() == "alpha\n"
    assert (r / "copies" / "reldir" / "a.txt").read_text() == "alpha\n"
    # context files belong to root whatever their owner on the host
    assert _owner(r / "renamed.txt") == (0, 0)


def test_dockerignore_applies_to_the_whole_context(probe: dict[str, Any]) -> None:
    ctx = probe["rootfs"] / "ctx"
    names = {str(p.relative_to(ctx)) for p in ctx.rglob("*")}
    assert {
        "a.txt",
        ".hiddenfile",
        "keep.log",
        "dir/.hidden",
        "dir/sub/y.txt",
        "Dockerfile",
        ".dockerignore",
        "archive.tar.gz",
    } <= names
    assert "ignored.log" not in names  # *.log
    assert "dir/sub/scratch.tmp" not in names  # **/*.tmp
    assert "base.Dockerfile" not in names


def test_chown_and_chmod(probe: dict[str, Any]) -> None:
    """--chown names resolve in the destination's /etc/passwd and /etc/group; a user alone
    takes its primary group; a uid alone is also the gid; --chmod sets the mode."""
    r = probe["rootfs"]
    assert _owner(r / "chown-names.txt") == (1000, 2000)
    assert _owner(r / "chown-user.txt") == (1000, 1000)
    assert _owner(r / "chown-uid.txt") == (1234, 1234)
    assert _owner(r / "chown-uid-gid.txt") == (1234, 2000)
    assert _mode(r / "chmod.txt") == 0o751
    assert _owner(r / "chown-dir" / "x.txt") == (1000, 1000)
    assert _owner(r / "chown-dir" / "sub" / "y.txt") == (1000, 1000)
    assert _mode(r / "chown-dir" / "x.txt") == 0o600
    # COPY --from keeps the owner the file has in the source stage
    assert _owner(r / "from-builder.txt") == (1234, 5678)
    assert (r / "from-builder-dir" / "artifact.txt").read_text() == "built\n"
    assert (r / "from-builder-dir" / "tree" / "seed.txt").read_text() == "seeded\n"


def test_add_archives_urls_and_checksum(probe: dict[str, Any]) -> None:
    r = probe["rootfs"]
    # COPY keeps an archive as it is; ADD extracts a local archive
    assert (r / "not-extracted" / "archive.tar.gz").read_bytes() == inside_archive_gz()
    assert (r / "extracted" / "inside" / "one.txt").read_text() == "one\n"
    assert _mode(r / "extracted" / "inside" / "one.txt") == 0o640
    # ADD <url>: downloaded (checksum verified), mode 0600; several URLs into a directory
    assert (r / "downloaded.txt").read_bytes() == REMOTE["remote.txt"]
    assert _mode(r / "downloaded.txt") == 0o600
    assert sorted(os.listdir(r / "urls")) == ["other.txt", "remote.txt"]
    assert (r / "urls" / "other.txt").read_bytes() == REMOTE["other.txt"]


def test_heredoc_copy_and_link(probe: dict[str, Any]) -> None:
    r = probe["rootfs"]
    assert (r / "heredoc.txt").read_text() == "expanded=[hello world]\n"
    assert (r / "heredoc-quoted.txt").read_text() == "literal=[$MYENV]\n"
    assert (r / "heredocs" / "one").read_text() == "first\n"
    assert (r / "heredocs" / "two").read_text() == "second\n"
    assert (r / "linked" / "a.txt").read_text() == "alpha\n"
    assert (r / "linked-tree" / "seed.txt").read_text() == "seeded\n"


def test_run_mounts(probe: dict[str, Any]) -> None:
    """bind (context: read-only; from a stage; rw writes discarded), cache seeded from a stage,
    cache, tmpfs, secrets (default and custom target); no mount leaves anything in the image."""
    r = probe["rootfs"]
    assert _obs(probe, "bind-ctx.txt") == "x in dir\nreadonly\n"
    assert _obs(probe, "bind-from.txt") == "built\n"
    assert _obs(probe, "bind-rw.txt").split() == ["artifact.txt", "scribble", "tree"]
    assert _obs(probe, "cache-from.txt") == "seed.txt\n"
    assert _obs(probe, "cache.txt") == "marker\n"
    assert _obs(probe, "tmpfs.txt") == "x\n"
    assert _obs(probe, "secret-len.txt").strip() == str(len(SECRET))
    assert _obs(probe, "secret-ls.txt") == "tok\n"
    assert _obs(probe, "secret-target.txt") == "440 1000\n"
    for stub in ("ctxdir", "mnt/b", "c", "cache", "scratchpad", "etc/tokfile", "run/secrets/tok"):
        assert not os.path.lexists(r / stub), stub


def test_network_none_has_only_loopback(probe: dict[str, Any]) -> None:
    assert _obs(probe, "net-none.txt").split() == ["lo"]


def test_secret_is_in_no_layer_and_no_config(probe: dict[str, Any]) -> None:
    blobs = probe["layout"] / "blobs" / "sha256"
    for blob in blobs.iterdir():
        data = blob.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        assert SECRET.encode() not in data, blob.name


def test_config_instructions(probe: dict[str, Any]) -> None:
    cfg = probe["config"]
    c = cfg["config"]
    assert c["ExposedPorts"] == {"80/tcp": {}, "443/udp": {}, "8000/tcp": {}, "8001/tcp": {}}
    assert c["Volumes"] == {"/data": {}, "/data2": {}, "/data3": {}}
    assert c["Labels"] == {"base.label": "inherited", "probe.a": "b", "probe.c d": "e f"}
    assert c["StopSignal"] == "SIGQUIT"
    assert c["Healthcheck"] == {
        "Test": ["CMD-SHELL", "wget -q -O- localhost || exit 1"],
        "Interval": 5_000_000_000,
        "Timeout": 2_000_000_000,
        "StartPeriod": 1_000_000_000,
        "Retries": 4,
    }
    assert cfg["author"] == "probe@example.com"
    # the base image's triggers ran and are not inherited; this build's own ONBUILD is recorded
    assert c["OnBuild"] == ["RUN echo this is for images built FROM the result"]
    layers = [h for h in cfg["history"] if not h.get("empty_layer")]
    assert len(layers) == len(cfg["rootfs"]["diff_ids"]) == len(probe["manifest"]["layers"])
    hist = [h["created_by"] for h in cfg["history"]]
    # history texts as BuildKit writes them (Go formatting of the config values)
    for text in (
        "EXPOSE map[443/udp:{} 80/tcp:{} 8000/tcp:{} 8001/tcp:{}]",
        "VOLUME [/data /data2]",
        "SHELL [/usr/bin/env VIA_SHELL=yes /bin/sh -c]",
        "STOPSIGNAL SIGQUIT",
        "USER app:grp2",
        "HEALTHCHECK {Test:[CMD-SHELL wget -q -O- localhost || exit 1] Interval:5s Timeout:2s StartPeriod:1s "
        "StartInterval:0s Retries:4}",
        'ENTRYPOINT ["/bin/echo" "entry"]',
        "WORKDIR /w1/w2/w3",
        "COPY a.txt b.txt /multi/ # buildkit",
        "LABEL probe.a=b probe.c d=e f",
        "ENV SAME=two SAMEREF=one",
        "ARG OVERRIDE=stage-default",
    ):
        assert text in hist, text
    assert not [
        h for h in hist if h.startswith("ONBUILD")
    ]  # BuildKit writes no history for ONBUILD
    assert {"created_by": "WORKDIR /", "empty_layer": True}.items() <= next(
        h for h in cfg["history"] if h["created_by"] == "WORKDIR /"
    ).items()
    assert c["ArgsEscaped"] is True
    runs = [h for h in hist if h.startswith("RUN ")]
    assert runs and all(h.endswith(" # buildkit") for h in runs)
    assert not any("proxy.invalid" in h for h in hist)
    # ARG values used by a RUN are in its history (as BuildKit writes them)
    assert any("OVERRIDE=from-cli" in h for h in runs)


def test_onbuild_triggers_of_the_base_ran(probe: dict[str, Any]) -> None:
    r = probe["rootfs"]
    assert (r / "onbuild-run.txt").read_text() == "onbuild saw BASE_ENV=from-base\n"
    assert (r / "onbuild-copied.txt").read_text() == "copied by the ONBUILD trigger\n"


def test_add_checksum_mismatch_fails(busybox_image: str, http_url: str, tmp_path: Path) -> None:
    text = (
        f"FROM {busybox_image}\nADD --checksum=sha256:{'0' * 64} {http_url}/remote.txt /x\n"
    ).encode()
    with pytest.raises(BuildError) as info:
        build(BuildOptions(context=CONTEXT, dockerfile_text=text), root=tmp_path / "root")
    assert "checksum" in str(info.value)


def test_copy_link_layer_is_reused_when_the_base_changes(
    busybox_image: str, onbuild_base: str, probe: dict[str, Any], tmp_path: Path
) -> None:
    """COPY --link makes its layer on its own: a new base reuses it (cached, same diff ID) and the
    image still holds the base's files and the copied ones."""
    text = b"ARG BASE\nFROM ${BASE}\nCOPY --link a.txt b.txt /linked/\n"
    root = tmp_path / "root"
    results = []
    for base in (busybox_image, onbuild_base):
        layout = tmp_path / f"out-{len(results)}"
        sink = RecordingSink()
        build(
            BuildOptions(
                context=probe["context"],
                dockerfile_text=text,
                build_args={"BASE": base},
                outputs=(parse_output(f"type=oci,dest={layout},tar=false"),),
            ),
            root=root,
            progress=sink,
        )
        results.append((layout, sink))
    (first, _), (second, sink2) = results
    _, cfg1 = _read_layout(first)
    _, cfg2 = _read_layout(second)
    assert cfg1["rootfs"]["diff_ids"][-1] == cfg2["rootfs"]["diff_ids"][-1]
    assert len(cfg2["rootfs"]["diff_ids"]) > len(cfg1["rootfs"]["diff_ids"])
    link_steps = {n: s for n, s in _states(sink2).items() if "COPY --link" in n}
    assert "cached" in link_steps.values(), link_steps
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{second}:latest", str(bundle)],
        check=True,
        capture_output=True,
    )
    rootfs = bundle / "rootfs"
    assert (rootfs / "linked" / "a.txt").read_text() == "alpha\n"
    assert (rootfs / "onbuild-copied.txt").exists() and (rootfs / "bin" / "busybox").exists()
