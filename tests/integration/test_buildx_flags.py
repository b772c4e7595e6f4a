"""docker buildx build's flags that mason takes with their buildx meaning, through the CLI:
``--iidfile``, ``--load`` (no daemon: says what to run), ``--add-host``, ``--shm-size`` and
``--ulimit`` (every RUN's sandbox, in runc and in the chroot fallback)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from tests.support.cli import mason_build, mason_cmd, mason_env

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (overlayfs, runc)")


def _context(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


def test_iidfile_holds_the_image_config_digest(tmp_path: Path) -> None:
    ctx = _context(tmp_path, "FROM scratch\nCOPY Dockerfile /\n")
    iid = tmp_path / "iid"
    iid.write_text("sha256:stale")
    oci = tmp_path / "image.tar"
    proc = mason_build(
        tmp_path / "root", "--iidfile", str(iid), "-o", f"type=oci,dest={oci}", str(ctx)
    )
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(oci) as tf:
        index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
        manifest_digest = index["manifests"][0]["digest"]
        manifest = json.load(tf.extractfile("blobs/sha256/" + manifest_digest.split(":")[1]))  # type: ignore[arg-type]
    assert iid.read_text() == manifest["config"]["digest"]

    failing = _context(tmp_path, "FROM scratch\nCOPY missing.txt /\n")
    proc = mason_build(tmp_path / "root", "--iidfile", str(iid), str(failing))
    assert proc.returncode == 1
    assert not iid.exists(), "a failed build must not leave the previous image ID behind"


def test_load_says_there_is_no_daemon_and_what_to_run(tmp_path: Path) -> None:
    ctx = _context(tmp_path, "FROM scratch\nCOPY Dockerfile /\n")
    proc = mason_build(tmp_path / "root", "--load", str(ctx))
    assert proc.returncode == 2
    assert (
        "no daemon" in proc.stderr
        and "-o type=docker,dest=-" in proc.stderr
        and "docker load" in proc.stderr
    )
    assert not (tmp_path / "root").exists() or not list((tmp_path / "root").glob("meta.db"))


@pytest.mark.parametrize("runtime", ["runc", "chroot"])
def test_add_host_shm_size_and_ulimit_reach_every_run(
    busybox_image: str, tmp_path: Path, runtime: str
) -> None:
    ctx = _context(
        tmp_path,
        f"""\
FROM {busybox_image}
RUN cat /etc/hosts > /hosts && df -k /dev/shm | tail -1 > /shm && ulimit -n > /nofile && ulimit -s > /stack
""",
    )
    out = tmp_path / "out"
    proc = mason_build(
        tmp_path / "root",
        f"--runtime={runtime}",
        "--add-host",
        "db.internal:10.1.2.3",
        "--add-host",
        "v6host=fd00::1",
        "--shm-size",
        "128m",
        "--ulimit",
        "nofile=1024:2048",
        "--ulimit",
        "stack=16777216",
        "-o",
        f"type=local,dest={out}",
        str(ctx),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hosts = (out / "hosts").read_text().splitlines()
    assert "10.1.2.3\tdb.internal" in hosts and "fd00::1\tv6host" in hosts
    assert (out / "shm").read_text().split()[1] == str(128 * 1024)
    assert (out / "nofile").read_text().strip() == "1024"
    assert (out / "stack").read_text().strip() == "16384"  # bytes given, KiB shown

    # the flags are part of the RUN's key (BuildKit keeps them in the exec step's metadata)
    again = mason_build(
        tmp_path / "root",
        f"--runtime={runtime}",
        "--shm-size",
        "256m",
        "-o",
        f"type=local,dest={tmp_path / 'out2'}",
        str(ctx),
    )
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "out2" / "shm").read_text().split()[1] == str(256 * 1024)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--add-host", "nocolon", "expected NAME:ADDRESS"),
        ("--add-host", "gw:host-gateway", "mason has no daemon"),
        ("--add-host", "h:not-an-ip", "is not an IP address"),
        ("--shm-size", "lots", "expected a positive size"),
        ("--ulimit", "bogus=1", "expected NAME=SOFT[:HARD]"),
        ("--ulimit", "nofile=10:5", "soft limit must not exceed"),
    ],
)
def test_bad_sandbox_flags_are_usage_errors(
    tmp_path: Path, flag: str, value: str, message: str
) -> None:
    ctx = _context(tmp_path, "FROM scratch\nCOPY Dockerfile /\n")
    proc = mason_build(tmp_path / "root", flag, value, str(ctx))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def _mason_stdin(root: Path, data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*mason_cmd(), "build", "--progress=plain", *args, "-"],
        input=data,
        capture_output=True,
        env=mason_env(root),
        timeout=300,
        check=False,
    )


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_context_on_stdin_as_a_tar_or_a_dockerfile(tmp_path: Path) -> None:
    out = tmp_path / "out"
    tar = _tar({"Dockerfile": b"FROM scratch\nCOPY hello.txt /\n", "hello.txt": b"from stdin\n"})
    proc = _mason_stdin(tmp_path / "root", tar, "-o", f"type=local,dest={out}")
    assert proc.returncode == 0, proc.stderr.decode()
    assert (out / "hello.txt").read_bytes() == b"from stdin\n"

    dockerfile = b"FROM scratch\nLABEL only=dockerfile\n"
    iid = tmp_path / "iid"
    proc = _mason_stdin(
        tmp_path / "root",
        dockerfile,
        "--iidfile",
        str(iid),
        "-o",
        f"type=oci,dest={tmp_path / 'i.tar'}",
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert iid.read_text().startswith("sha256:")


def test_a_context_tar_on_stdin_cannot_write_outside(tmp_path: Path) -> None:
    escape = tmp_path / "escaped.txt"
    tar = _tar({"Dockerfile": b"FROM scratch\nCOPY . /\n", f"../../../../../..{escape}": b"x"})
    proc = _mason_stdin(tmp_path / "root", tar, "-o", f"type=local,dest={tmp_path / 'out'}")
    assert proc.returncode == 2 and b"cannot be unpacked" in proc.stderr
    assert not escape.exists()


@pytest.mark.parametrize("spec", ["-", "type=tar,dest=-"])
def test_output_to_stdout_is_a_tar_of_the_files(tmp_path: Path, spec: str) -> None:
    ctx = _context(tmp_path, "FROM scratch\nCOPY Dockerfile /df\n")
    proc = mason_build(tmp_path / "root", "-o", spec, str(ctx), text=False)
    assert proc.returncode == 0, proc.stderr.decode()
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tf:
        member = tf.extractfile("df")
        assert member is not None and member.read() == (ctx / "Dockerfile").read_bytes()
    assert b"#1 " in proc.stderr, "progress goes to stderr, never into the tar"


def test_pull_resolves_a_retagged_base_again(busybox_image: str, reg: str, tmp_path: Path) -> None:
    base = f"{reg}/base:1"
    ctx = _context(tmp_path, f"FROM {base}\nRUN cat /v > /seen\n")
    root = tmp_path / "root"
    for version in ("one", "two"):  # the tag moves to a new image between the builds
        src = tmp_path / f"base-{version}"
        src.mkdir()
        (src / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo {version} > /v\n")
        pushed = mason_build(tmp_path / f"root-{version}", "--push", "-t", base, str(src))
        assert pushed.returncode == 0, pushed.stderr
        out = tmp_path / f"out-{version}"
        proc = mason_build(root, "--pull", "-o", f"type=local,dest={out}", str(ctx))
        assert proc.returncode == 0, proc.stderr
        assert (out / "seen").read_text() == f"{version}\n"
