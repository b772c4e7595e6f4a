"""``--ssh`` and ``RUN --mount=type=ssh``: ssh agents a build forwards to its RUN steps.

``--ssh default|ID[=SOCKET|KEY_FILE[,KEY_FILE...]]`` is buildx's syntax. An id with no path is
``$SSH_AUTH_SOCK``; a path that is a socket is that agent; key files are loaded into a private
``ssh-agent`` (openssh's, the real binary) that lives in a 0700 temporary directory for the
build only, so mason never holds the key bytes itself (BuildKit runs an in-process agent).

A RUN never sees the host socket's path: each ssh mount is a fresh listening socket in a
private directory, proxied to the agent by a thread, with the mount's mode/uid/gid (BuildKit
forwards the agent over its session the same way). The container can talk to the agent and
to nothing else on the host.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from mason.cache.options import split_csv
from mason.errors import BuildError, UsageError
from mason.structs import Struct

__all__ = ["SshSpec", "agent_proxy", "parse_ssh", "ssh_agents"]

_AGENT_START_TIMEOUT = 10.0


class SshSpec(Struct, frozen=True):
    """One ``--ssh``: the id RUN mounts name, and an agent socket or key files (none: the
    environment's ``$SSH_AUTH_SOCK``)."""

    id: str
    paths: tuple[str, ...] = ()


def parse_ssh(text: str) -> SshSpec:
    """``ID[=PATH[,PATH...]]`` as buildx's ``ParseSSH``."""
    fields = split_csv(text)
    if not fields or not fields[0]:
        raise UsageError(f"invalid --ssh {text!r}: an id is required", reference="invalid-ssh")
    sid, _, first = fields[0].partition("=")
    if not sid:
        raise UsageError(f"invalid --ssh {text!r}: an id is required", reference="invalid-ssh")
    paths = [p for p in (first, *fields[1:]) if p]
    return SshSpec(id=sid, paths=tuple(paths))


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _agent_for(spec: SshSpec, stack: contextlib.ExitStack, environ: Mapping[str, str]) -> str:
    """The socket of ``spec``'s agent: given, ``$SSH_AUTH_SOCK``, or a private one with its keys."""
    paths = list(spec.paths)
    if not paths:
        sock = environ.get("SSH_AUTH_SOCK", "")
        if not sock:
            raise UsageError(
                f"invalid --ssh {spec.id}: no agent socket",
                reference="invalid-ssh",
                hint="SSH_AUTH_SOCK is not set: start an ssh-agent or give --ssh ID=KEY_FILE",
            )
        paths = [sock]
    sockets = [p for p in paths if _is_socket(p)]
    if sockets:
        if len(paths) > 1:
            raise UsageError(
                f"invalid --ssh {spec.id}: an agent socket cannot be combined with other paths",
                reference="invalid-ssh",
            )
        return sockets[0]
    for p in paths:
        if not os.path.isfile(p):
            raise UsageError(
                f"invalid --ssh {spec.id}: {p} is neither an agent socket nor a key file",
                reference="invalid-ssh",
            )
    return _start_agent(spec.id, paths, stack)


def _start_agent(sid: str, keys: Sequence[str], stack: contextlib.ExitStack) -> str:
    """A private ``ssh-agent -D`` holding ``keys``; killed (and its directory removed) on exit."""
    import shutil
    import tempfile

    agent, add = shutil.which("ssh-agent"), shutil.which("ssh-add")
    if agent is None or add is None:
        raise UsageError(
            f"--ssh {sid}=KEY_FILE needs ssh-agent and ssh-add (openssh-client)",
            reference="invalid-ssh",
        )
    import subprocess  # only --ssh with key files starts programs (start-up, issue 14)

    home = tempfile.mkdtemp(prefix="mason-ssh-")  # 0700: only this user reaches the socket
    stack.callback(shutil.rmtree, home, True)
    sock = os.path.join(home, "agent")
    proc = subprocess.Popen(
        [agent, "-D", "-a", sock],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    stack.callback(stop)
    deadline = time.monotonic() + _AGENT_START_TIMEOUT
    while not _is_socket(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise UsageError(f"--ssh {sid}: ssh-agent did not start", reference="invalid-ssh")
        time.sleep(0.01)
    # no terminal, no askpass: a key with a passphrase fails instead of prompting
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SSH_AUTH_SOCK": sock}
    env["SSH_ASKPASS_REQUIRE"] = "never"
    for key in keys:
        res = subprocess.run(
            [add, "-q", "--", key],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise UsageError(
                f"--ssh {sid}: cannot load key file {key}: {res.stderr.strip()}",
                reference="invalid-ssh",
                hint="the key must be a private key without a passphrase",
            )
    return sock


@contextlib.contextmanager
def ssh_agents(
    specs: Sequence[SshSpec], environ: Mapping[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """The agent socket of every ``--ssh`` id, for the length of the build."""
    with contextlib.ExitStack() as stack:
        found: dict[str, str] = {}
        for spec in specs:
            if spec.id in found:
                raise UsageError(f"--ssh {spec.id} is given twice", reference="invalid-ssh")
            found[spec.id] = _agent_for(spec, stack, os.environ if environ is None else environ)
        yield found


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _serve(listener: socket.socket, upstream: str) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:  # closed: the RUN is over
            return
        try:
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            up.connect(upstream)
        except OSError:
            conn.close()
            continue
        t = threading.Thread(target=_pipe, args=(up, conn), daemon=True)
        t.start()
        threading.Thread(target=_relay, args=(conn, up, t), daemon=True).start()


def _relay(conn: socket.socket, up: socket.socket, back: threading.Thread) -> None:
    _pipe(conn, up)
    back.join()
    conn.close()
    up.close()


@contextlib.contextmanager
def agent_proxy(
    sockets: Mapping[str, str], sid: str, *, mode: int, uid: int, gid: int, where: list[str]
) -> Iterator[Path]:
    """A socket forwarding to agent ``sid``, owned ``uid:gid`` with ``mode``, for one RUN."""
    import shutil
    import tempfile

    upstream = sockets.get(sid)
    if upstream is None:
        raise BuildError(
            f"no SSH agent with id {sid!r} was forwarded to the build",
            reference="ssh-missing",
            context=where,
            hint=f"pass --ssh {sid} (the $SSH_AUTH_SOCK agent) or --ssh {sid}=SOCKET|KEY_FILE",
        )
    home = tempfile.mkdtemp(prefix="mason-ssh-run-")
    path = Path(home) / "agent"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        os.chown(path, uid, gid)
        os.chmod(path, mode)
        listener.listen(16)
        server = threading.Thread(target=_serve, args=(listener, upstream), daemon=True)
        server.start()
        yield path
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        shutil.rmtree(home, ignore_errors=True)
