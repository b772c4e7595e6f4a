"""Real git servers on loopback for the git-source tests: ``git daemon`` (``git://``) and
``git http-backend`` behind a small threaded HTTP server (smart HTTP, ``http://…/repo.git``),
both serving bare repositories under one base directory, plus helpers that make and change
repositories with the real ``git``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["GitRepo", "git_daemon", "git_http_server", "static_http_server"]

_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def _git(*args: str, cwd: Path) -> str:
    env = {**os.environ, **_ENV}
    return subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


class GitRepo:
    """A work tree at ``work`` pushed to the bare ``base/NAME.git`` after each commit."""

    def __init__(self, base: Path, name: str) -> None:
        self.bare = base / f"{name}.git"
        self.work = base / f"{name}-work"
        self.work.mkdir(parents=True)
        _git("init", "-q", "--bare", str(self.bare), cwd=base)
        _git("init", "-q", cwd=self.work)
        _git("remote", "add", "origin", str(self.bare), cwd=self.work)
        # smart HTTP serves only repositories that say so
        _git("config", "http.receivepack", "false", cwd=self.bare)
        (self.bare / "git-daemon-export-ok").touch()

    def write(self, files: dict[str, str]) -> None:
        for rel, text in files.items():
            path = self.work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def symlink(self, rel: str, target: str) -> None:
        path = self.work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)

    def commit(self, message: str, branch: str = "main") -> str:
        """Commit everything in the work tree to ``branch``, push it, return the commit id."""
        _git("checkout", "-q", "-B", branch, cwd=self.work)
        _git("add", "-A", cwd=self.work)
        _git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        _git("push", "-q", "-f", "origin", f"{branch}:{branch}", cwd=self.work)
        return self.head()

    def tag(self, name: str, annotated: bool = False) -> None:
        args = ["tag", "-a", "-m", name, name] if annotated else ["tag", name]
        _git(*args, cwd=self.work)
        _git("push", "-q", "-f", "origin", f"refs/tags/{name}", cwd=self.work)

    def head(self) -> str:
        return _git("rev-parse", "HEAD", cwd=self.work)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"git daemon exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("git daemon did not listen")


@contextmanager
def git_daemon(base: Path) -> Iterator[str]:
    """``git daemon`` serving ``base``; yields ``git://127.0.0.1:PORT``."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--listen=127.0.0.1",
            f"--port={port}",
            f"--base-path={base}",
            "--export-all",
            str(base),
        ],
        env={**os.environ, **_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, proc)
        yield f"git://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _cgi_handler(base: Path, protocol_v2: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._cgi()

        def do_POST(self) -> None:
            self._cgi()

        def _cgi(self) -> None:
            path, _, query = self.path.partition("?")
            env = {
                **os.environ,
                **_ENV,
                "GIT_PROJECT_ROOT": str(base),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": self.headers.get("Content-Length", ""),
                "REMOTE_ADDR": "127.0.0.1",
                # without it http-backend speaks protocol v0, which refuses unadvertised commits
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", "") if protocol_v2 else "",
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            }
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            done = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
            )
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            status = 200
            headers: list[tuple[str, str]] = []
            for line in head.decode("latin-1").split("\r\n"):
                key, _, value = line.partition(":")
                if key.lower() == "status":
                    status = int(value.split()[0])
                elif key:
                    headers.append((key, value.strip()))
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@contextmanager
def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def git_http_server(base: Path, *, protocol_v2: bool = True) -> Iterator[str]:
    """Smart HTTP (``git http-backend``) serving ``base``; yields ``http://127.0.0.1:PORT``.
    ``protocol_v2=False``: an old server that fetches only advertised refs."""
    if shutil.which("git") is None:
        raise RuntimeError("git is not installed (bash scripts/setup.sh test installs it)")
    with _serve(_cgi_handler(base, protocol_v2)) as url:
        yield url


@contextmanager
def static_http_server(files: dict[str, bytes]) -> Iterator[str]:
    """Plain files over HTTP (a context tarball, a Dockerfile); yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            data = files.get(self.path.lstrip("/"))
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    with _serve(Handler) as url:
        yield url
