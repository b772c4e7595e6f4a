"""``--ssh`` and ``RUN --mount=type=ssh`` against a real ``ssh-agent`` (issue 13).

The RUN asks the agent for its identities from inside the sandbox with the host's own
``ssh-add -l`` (copied into the image with the libraries ``ldd`` names: busybox has no
unix-socket client), so the answer proves the request crossed the mount to the agent.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.cli import mason_build

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root")

_TOOLS = ("ssh-agent", "ssh-add", "ssh-keygen", "ldd")


def _need_tools() -> None:
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{missing} missing: bash scripts/setup.sh test installs openssh-client")


def _keygen(dest: Path, comment: str) -> str:
    """A fresh ed25519 key without passphrase; its ``ssh-add -l`` fingerprint."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(dest)], check=True
    )
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{dest}.pub"], check=True, capture_output=True, text=True
    )
    return out.stdout.split()[1]  # SHA256:...


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real ``ssh-agent`` holding one generated key: (socket, fingerprint)."""
    _need_tools()
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(500):
            if sock.exists():
                break
            proc.poll()
            assert proc.returncode is None, "ssh-agent exited"
            subprocess.run(["sleep", "0.01"], check=True)
        fp = _keygen(tmp_path / "agent_key", "agent-key")
        subprocess.run(
            ["ssh-add", "-q", str(tmp_path / "agent_key")],
            env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
            check=True,
        )
        yield str(sock), fp
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def _context(tmp_path: Path, base: str, run: str) -> Path:
    """A context whose image is busybox plus the host's ``ssh-add`` and its libraries."""
    ctx = tmp_path / "ctx"
    (ctx / "sys").mkdir(parents=True)
    ssh_add = shutil.which("ssh-add")
    assert ssh_add
    shutil.copy(ssh_add, ctx / "sys" / "ssh-add")
    copies = ["COPY sys/ssh-add /usr/bin/ssh-add"]
    ldd = subprocess.run(["ldd", ssh_add], check=True, capture_output=True, text=True).stdout
    for i, line in enumerate(ldd.splitlines()):
        path = next((w for w in line.split() if w.startswith("/")), None)
        if path:
            shutil.copy(path, ctx / "sys" / f"lib{i}")
            copies.append(f"COPY sys/lib{i} {path}")
    (ctx / "Dockerfile").write_text(f"FROM {base}\n" + "\n".join(copies) + f"\n{run}\n")
    return ctx


def _build(tmp_path: Path, ctx: Path, *args: str, env: dict[str, str | None] | None = None) -> str:
    out = tmp_path / "out"
    res = mason_build(tmp_path / "root", "-o", f"type=local,dest={out}", *args, str(ctx), env=env)
    assert res.returncode == 0, res.stderr
    return (out / "ids").read_text()


def test_default_agent_answers_a_request_from_inside_the_run(
    tmp_path: Path, busybox_image: str, agent: tuple[str, str]
) -> None:
    sock, fp = agent
    run = (
        'RUN --mount=type=ssh echo "$SSH_AUTH_SOCK" > /ids && ssh-add -l >> /ids'
        " && ls -l $SSH_AUTH_SOCK | cut -c1-10 >> /ids"
    )
    ctx = _context(tmp_path, busybox_image, run)
    ids = _build(tmp_path, ctx, "--ssh", "default", env={"SSH_AUTH_SOCK": sock})
    lines = ids.splitlines()
    assert lines[0] == "/run/buildkit/ssh_agent.0"
    assert fp in lines[1] and "agent-key" in lines[1]
    assert lines[2] == "srw-------"
    # the socket is not left in the image, nor the variable in its config
    assert not (tmp_path / "out" / "run" / "buildkit").exists()


def test_key_files_are_served_by_a_private_agent_at_the_target(
    tmp_path: Path, busybox_image: str
) -> None:
    _need_tools()
    fp1 = _keygen(tmp_path / "k1", "first-key")
    fp2 = _keygen(tmp_path / "k2", "second-key")
    run = "RUN --mount=type=ssh,id=deploy,target=/tmp/a.sock,mode=0660 ssh-add -l > /ids"
    ctx = _context(tmp_path, busybox_image, run)
    ids = _build(
        tmp_path,
        ctx,
        "--ssh",
        f"deploy={tmp_path / 'k1'},{tmp_path / 'k2'}",
        env={"SSH_AUTH_SOCK": None},
    )
    assert fp1 in ids and fp2 in ids
    assert "first-key" in ids and "second-key" in ids
    # the private agent is gone with the build
    leftover = subprocess.run(["pgrep", "-f", f"ssh-agent -D -a {tmp_path}"], check=False)
    assert leftover.returncode == 1


def test_required_agent_missing_is_an_error_naming_id_and_flag(
    tmp_path: Path, busybox_image: str
) -> None:
    _need_tools()
    ctx = _context(tmp_path, busybox_image, "RUN --mount=type=ssh,id=gh,required=true true")
    res = mason_build(tmp_path / "root", str(ctx), env={"SSH_AUTH_SOCK": None})
    assert res.returncode == 1
    assert "'gh'" in res.stderr and "--ssh gh" in res.stderr


def test_optional_agent_missing_runs_without_a_socket(tmp_path: Path, busybox_image: str) -> None:
    _need_tools()
    run = "RUN --mount=type=ssh,id=gh sh -c 'test -e \"$SSH_AUTH_SOCK\" && echo yes || echo no' > /ids"
    ctx = _context(tmp_path, busybox_image, run)
    assert _build(tmp_path, ctx).strip() == "no"


def test_bad_ssh_flags_are_usage_errors(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    no_agent = mason_build(
        tmp_path / "r", "--ssh", "default", str(ctx), env={"SSH_AUTH_SOCK": None}
    )
    assert no_agent.returncode == 2 and "SSH_AUTH_SOCK" in no_agent.stderr
    missing = mason_build(tmp_path / "r", "--ssh", f"x={tmp_path}/nokey", str(ctx))
    assert missing.returncode == 2 and "nokey" in missing.stderr
    (tmp_path / "notakey").write_text("hello\n")
    bad = mason_build(tmp_path / "r", "--ssh", f"x={tmp_path}/notakey", str(ctx))
    assert bad.returncode == 2 and "cannot load key file" in bad.stderr
