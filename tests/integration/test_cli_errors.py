"""Every user-facing failure of the ``mason`` CLI, driven as a user would (a subprocess, the real
registry, busybox): the message says what and where, the exit status is right (1 build failure,
2 usage or Dockerfile error), no traceback, no credential in the output, no half-written file,
and the next good build on the same ``$MASON_ROOT`` still works.

One ``$MASON_ROOT`` is shared by the whole module on purpose: each failure runs against the
state the previous ones left, and ``_healthy`` builds after it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.cli import mason, mason_build
from tests.support.registry_server import RegistryServer, free_port

GOOD = "FROM {base}\nCOPY a.txt /a.txt\nRUN cat /a.txt\n"


def _mason(
    root: Path, *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    # without MASON_DEBUG: its traceback would replace the message under test
    return mason(root, *args, env={"MASON_DEBUG": None, **(env or {})}, input=input, timeout=120)


def _build(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return mason_build(root, *args, env={"MASON_DEBUG": None, **(env or {})}, timeout=120)


def _failed(res: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """Assert a clean failure: exit ``code``, every needle in stderr, no traceback."""
    text = res.stdout + res.stderr
    assert res.returncode == code, text
    assert "Traceback" not in text and "internal error" not in text, text
    for needle in needles:
        assert needle in res.stderr, f"{needle!r} not in:\n{res.stderr}"
    return text


def _context(base: Path, dockerfile: str, **files: str) -> Path:
    base.mkdir(parents=True)
    (base / "Dockerfile").write_text(dockerfile)
    for name, text in {"a.txt": "a\n", **files}.items():
        (base / name).write_text(text)
    return base


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-errors") / "root"


@pytest.fixture(scope="module")
def good(busybox_image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _context(tmp_path_factory.mktemp("good") / "ctx", GOOD.format(base=busybox_image))


@pytest.fixture(autouse=True)
def _no_host_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)


@pytest.fixture
def healthy(root: Path, good: Path) -> Iterator[None]:
    """After the test: a good build on the same root succeeds, and nothing is left in tmp/."""
    yield
    res = _build(root, str(good))
    assert res.returncode == 0, res.stdout + res.stderr
    assert not list((root / "tmp").iterdir())


def _docker_config(tmp_path: Path, host: str, user: str, password: str) -> dict[str, str]:
    cfg = tmp_path / "docker-config"
    cfg.mkdir()
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return {"DOCKER_CONFIG": str(cfg)}


# -- context and Dockerfile ------------------------------------------------------------------


def test_missing_context_dir(root: Path, tmp_path: Path) -> None:
    _failed(
        _build(root, str(tmp_path / "nope")),
        2,
        f"build context {tmp_path / 'nope'} is not a directory",
    )


def test_missing_dockerfile(root: Path, tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    _failed(
        _build(root, str(tmp_path / "ctx")),
        2,
        "failed to read dockerfile",
        "Dockerfile: No such file",
        "hint: give the Dockerfile with -f PATH",
    )
    _failed(
        _build(root, "-f", str(tmp_path / "Other"), str(tmp_path / "ctx")),
        2,
        f"failed to read dockerfile {tmp_path / 'Other'}",
    )


@pytest.mark.usefixtures("healthy")
def test_dockerfile_outside_the_context_is_allowed_as_in_buildx(
    root: Path, busybox_image: str, tmp_path: Path
) -> None:
    # buildx reads -f from anywhere; only COPY sources are confined to the context
    ctx = _context(tmp_path / "ctx", "")
    (tmp_path / "elsewhere.Dockerfile").write_text(f"FROM {busybox_image}\nCOPY a.txt /a.txt\n")
    res = _build(root, "-f", str(tmp_path / "elsewhere.Dockerfile"), str(ctx))
    assert res.returncode == 0, res.stderr
    (tmp_path / "escape.Dockerfile").write_text(
        f"FROM {busybox_image}\nCOPY ../escape.Dockerfile /x\n"
    )
    _failed(
        _build(root, "-f", str(tmp_path / "escape.Dockerfile"), str(ctx)),
        1,
        "escape.Dockerfile",
        "escape.Dockerfile:2",
    )


def test_syntax_error_shows_line(root: Path, busybox_image: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path / "ctx", f"FROM {busybox_image}\nRUN true\nCOPY --chmod=755 a.txt\n")
    _failed(
        _build(root, str(ctx)),
        2,
        "line 3",
        "COPY requires at least two arguments",
        "Dockerfile:3",
        "3 | COPY --chmod=755 a.txt",
    )


def test_unknown_instruction_suggests(root: Path, busybox_image: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path / "ctx", f"FROM {busybox_image}\nRUNN echo hi\n")
    _failed(
        _build(root, str(ctx)), 2, "unknown instruction: RUNN", "Dockerfile:2", "did you mean RUN?"
    )


@pytest.mark.usefixtures("healthy")
def test_copy_of_missing_file(root: Path, busybox_image: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path / "ctx", f"FROM {busybox_image}\nCOPY a.txt /a\nCOPY missing.txt /x\n")
    _failed(_build(root, str(ctx)), 1, "missing.txt", "Dockerfile:3", ">>> COPY missing.txt /x")


@pytest.mark.usefixtures("healthy")
def test_failing_run_shows_last_output_and_line(
    root: Path, busybox_image: str, tmp_path: Path
) -> None:
    run = (
        "RUN for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25; do echo out-$i; done; "
        "echo to-stderr >&2; exit 3"
    )
    ctx = _context(tmp_path / "ctx", f"FROM {busybox_image}\nENV A=1\n{run}\n")
    text = _failed(_build(root, str(ctx)), 1, "exit code 3", "out-25", "to-stderr", "Dockerfile:3")
    error_part = text[text.rindex("ERROR:") :]
    assert "out-25" in error_part and "out-1\n" not in error_part  # the last lines, not all


@pytest.mark.usefixtures("healthy")
def test_target_unknown_stage(root: Path, busybox_image: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path / "ctx", f"FROM {busybox_image} AS base\nFROM base AS app\n")
    _failed(
        _build(root, "--target", "nope", str(ctx)),
        2,
        "target stage nope could not be found",
        "base, app",
    )


# -- registries ----------------------------------------------------------------------------


@pytest.mark.usefixtures("healthy")
def test_from_missing_image_shows_url_and_registry_body(
    root: Path, registry: RegistryServer, tmp_path: Path
) -> None:
    ctx = _context(tmp_path / "ctx", f"FROM {registry.host}/no/such:tag\n")
    _failed(
        _build(root, str(ctx)),
        1,
        f"{registry.host}/no/such:tag: not found",
        f"GET {registry.url}/v2/no/such/manifests/tag -> HTTP 404",
        "MANIFEST_UNKNOWN",
    )


@pytest.mark.usefixtures("healthy")
def test_from_unreachable_registry(root: Path, tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    ctx = _context(tmp_path / "ctx", f"FROM {host}/x/y:z\n")
    _failed(_build(root, str(ctx)), 1, f"cannot reach registry {host}", "Connection refused")


@pytest.mark.usefixtures("healthy")
def test_from_with_wrong_credentials_never_prints_them(
    root: Path, registry_token: RegistryServer, tmp_path: Path
) -> None:
    password = "wrong-secret-" + "p4ssw0rd"
    env = _docker_config(tmp_path, registry_token.host, "mason", password)
    ctx = _context(tmp_path / "ctx", f"FROM {registry_token.host}/x/y:z\n")
    text = _failed(
        _build(root, str(ctx), env=env),
        1,
        f"authenticate to {registry_token.host}",
        "refused to issue a token as 'mason'",
        "UNAUTHORIZED",
    )
    assert password not in text
    assert base64.b64encode(f"mason:{password}".encode()).decode() not in text


@pytest.mark.usefixtures("healthy")
def test_push_refused_names_the_registry(
    root: Path, registry_token: RegistryServer, good: Path, tmp_path: Path
) -> None:
    password = "wrong-push-" + "s3cret"
    env = _docker_config(tmp_path, registry_token.host, "mason", password)
    target = f"{registry_token.host}/cli/refused:1"
    text = _failed(
        _build(root, "-t", target, "--push", str(good), env=env),
        1,
        f"authenticate to {registry_token.host}",
        "UNAUTHORIZED",
    )
    assert (
        password not in text and base64.b64encode(f"mason:{password}".encode()).decode() not in text
    )


# -- flags ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--output", "type=bogus", "invalid --output 'type=bogus': unknown type 'bogus'"),
        ("--output", "type=oci", "dest= is required for type=oci"),
        (
            "--cache-to",
            "type=registry",
            "invalid --cache-to 'type=registry': registry cache exporter requires ref",
        ),
        ("--cache-to", "type=registry,ref=localhost:5000/c,mode=huge", "mode='huge'"),
        ("--cache-from", "type=nope,ref=x", "invalid --cache-from 'type=nope,ref=x'"),
        ("--secret", "id=tok", "invalid --secret 'id=tok': give src=FILE or env=VAR"),
        ("--secret", "src=/etc/hostname", "invalid --secret 'src=/etc/hostname': id= is required"),
        ("--build-arg", "=x", "invalid --build-arg '=x': expected KEY=VALUE"),
        ("--platform", "linux/amd64,linux", "--platform: invalid platform 'linux'"),
        ("--platform", "windows/amd64", "mason builds linux images only, not windows"),
        # issue 13 defect 6: one parser, one rule for every output and cache attribute
        (
            "--output",
            "type=docker,dest=d.tar,compresion=zstd",
            "unknown attribute 'compresion' for type=docker",
        ),
        ("--output", "type=docker,dest=d.tar,compresion=zstd", "takes name, dest, compression"),
        ("--output", "type=image,name=localhost:5000/x,compression=lz4", "gzip, zstd, estargz"),
        ("--cache-to", "type=registry,ref=localhost:5000/c,mode=maximum", "mode is min or max"),
    ],
)
def test_bad_flag_values(root: Path, good: Path, flag: str, value: str, needle: str) -> None:
    _failed(_build(root, flag, value, str(good)), 2, needle)


def test_secret_source_missing(root: Path, good: Path, tmp_path: Path) -> None:
    missing = tmp_path / "token.txt"
    _failed(
        _build(root, "--secret", f"id=tok,src={missing}", str(good)),
        2,
        f"{missing} is not a readable file",
    )


def test_push_without_tag(root: Path, good: Path) -> None:
    _failed(_build(root, "--push", str(good)), 2, "--push needs at least one -t REF")


def test_unknown_flag_is_reported_with_the_subcommands_usage(root: Path, good: Path) -> None:
    # issue 13: the top-level usage ("mason COMMAND ...") said nothing of build's flags
    text = _failed(
        _build(root, "--no-such-flag", str(good)),
        2,
        "usage: mason build",
        "mason build: error: unrecognized arguments: --no-such-flag",
    )
    assert "--build-context" in text  # the usage lists build's own flags
    _failed(
        _mason(root, "imagetools", "inspect", "--bogus", "x"),
        2,
        "mason imagetools inspect: error: unrecognized arguments: --bogus",
    )


# -- outputs and state ---------------------------------------------------------------------


@pytest.mark.usefixtures("healthy")
def test_output_dest_unwritable(root: Path, good: Path) -> None:
    _failed(
        _build(root, "-o", "type=oci,dest=/proc/x.tar", str(good)),
        1,
        "cannot write the oci output to /proc/x.tar",
    )
    assert not [p for p in os.listdir("/proc") if p.startswith(".mason-")]


@pytest.mark.usefixtures("healthy")
def test_output_failing_at_the_end_leaves_no_partial_file(
    root: Path, good: Path, tmp_path: Path
) -> None:
    # a directory is refused before the build (issue 9 item 4: dest is never replaced by a rename)
    (tmp_path / "out.tar").mkdir()
    _failed(
        _build(root, "-o", f"type=docker,dest={tmp_path / 'out.tar'}", str(good)),
        2,
        f"{tmp_path / 'out.tar'} is a directory",
    )
    assert not list((tmp_path / "out.tar").iterdir())
    # the tar is complete in its temp file; the rename onto an immutable file fails
    target = tmp_path / "immutable.tar"
    target.write_text("old")
    chattr = shutil.which("chattr")
    if (
        chattr
        and subprocess.run([chattr, "+i", str(target)], capture_output=True, check=False).returncode
        == 0
    ):
        try:
            _failed(
                _build(root, "-o", f"type=docker,dest={target}", str(good)),
                1,
                f"cannot write the docker output to {target}",
            )
        finally:
            subprocess.run([chattr, "-i", str(target)], check=True)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["immutable.tar", "out.tar"]
        assert target.read_text() == "old"
    _failed(
        _build(root, "-o", "type=local,dest=/etc/hostname", str(good)),
        1,
        "cannot write the local output to /etc/hostname: exists and is not a directory",
    )


def _largest_blob(root: Path) -> Path:
    return max((root / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)


@pytest.mark.usefixtures("healthy")
def test_corrupt_blob_in_content_store(root: Path, good: Path, tmp_path: Path) -> None:
    assert _build(root, str(good)).returncode == 0
    blob = _largest_blob(root)  # busybox's layer
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the digest tells
    blob.write_bytes(bytes(data))
    out = tmp_path / "image.tar"
    text = _failed(
        _build(root, "-o", f"type=oci,dest={out}", str(good)),
        1,
        f"expected sha256:{blob.name}, got sha256:",
    )
    assert "(deleted)" in text and not blob.exists() and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mason-")]
    # the next build fetches the layer again (straight into the tarball) and exports it intact
    res = _build(root, "-o", f"type=oci,dest={out}", str(good))
    assert res.returncode == 0, res.stderr
    with tarfile.open(out) as tar:
        member = tar.extractfile(f"blobs/sha256/{blob.name}")
        assert member is not None
        assert hashlib.sha256(member.read()).hexdigest() == blob.name
    assert not blob.exists() or hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


@pytest.mark.usefixtures("healthy")
def test_corrupt_config_in_content_store_is_fetched_again(
    root: Path, good: Path, busybox_image: str
) -> None:
    assert _build(root, str(good)).returncode == 0
    blobs = root / "blobs" / "sha256"
    configs = [
        p
        for p in blobs.iterdir()
        if b'"rootfs"' in p.read_bytes()[:4096] and p.stat().st_size < 4096
    ]
    assert configs
    for cfg in configs:
        cfg.write_bytes(cfg.read_bytes().replace(b'"rootfs"', b'"rootFS"'))
    res = _build(root, str(good))
    assert res.returncode == 0, res.stderr
    assert "is corrupt: expected sha256:" in res.stderr and ", got sha256:" in res.stderr


def test_state_dir_is_a_file(good: Path, tmp_path: Path) -> None:
    afile = tmp_path / "root"
    afile.write_text("not a directory")
    _failed(
        _build(afile, str(good)),
        1,
        f"cannot use state directory {afile}: a file is in the way",
        "set MASON_ROOT to a writable directory",
    )
    assert afile.read_text() == "not a directory"
    _failed(_mason(afile, "du"), 1, f"cannot use state directory {afile}")


# -- imagetools and cache ------------------------------------------------------------------


def test_imagetools_inspect_missing_ref(root: Path, registry: RegistryServer) -> None:
    _failed(
        _mason(root, "imagetools", "inspect", f"{registry.host}/no/such:tag"),
        1,
        f"GET {registry.url}/v2/no/such/manifests/tag -> HTTP 404",
        "MANIFEST_UNKNOWN",
    )


def test_cache_inspect_of_a_non_cache(root: Path, busybox_image: str, tmp_path: Path) -> None:
    _failed(
        _mason(root, "cache", "inspect", busybox_image),
        1,
        f"cannot inspect cache {busybox_image}",
        "no cache found",
        "hint: build it with --cache-to type=inline",
    )
    (tmp_path / "plain-dir").mkdir()
    _failed(
        _mason(root, "cache", "inspect", str(tmp_path / "plain-dir")),
        1,
        "is not an OCI image layout",
    )
    _failed(
        _mason(root, "cache", "inspect", str(tmp_path / "missing")),
        2,
        "is neither a directory nor an image reference",
    )
