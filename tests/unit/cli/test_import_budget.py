"""Start-up budget (issue 14): a fresh interpreter running ``mason build`` imports only what its
command line needs. An audit hook in the child lists ``sys.modules`` at the first socket
connect (the first registry request) or at exit; modules on a deny list must not be there.
Times are measured in bench/bench_startup.py, never here."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.http_server import serving
from tests.support.registry_server import free_port

# Runs in the child: the modules loaded at the first connect to PORT (or at exit, for --help)
# and the CA bundles loaded by then; with CA=1 (ssl is imported early for that only) the CA
# bundles loaded in the whole run in OUT.ca; with MAIN=1 only the main thread's connects count
# (the build's own, not the early pings' and reads').
_PROBE = """
import atexit, json, os, sys, threading
out, port, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
loads = []
if os.environ.get("CA") == "1":
    import ssl
    real = ssl.SSLContext.load_verify_locations
    def counting(self, *args, **kwargs):
        loads.append(1)
        return real(self, *args, **kwargs)
    ssl.SSLContext.load_verify_locations = counting
def dump(where):
    if not hook.done:
        hook.done = True
        with open(out, "w") as f:
            json.dump({"where": where, "modules": sorted(sys.modules), "ca": len(loads)}, f)
def hook(event, args):
    if event == "socket.connect" and isinstance(args[1], tuple) and args[1][1:2] == (port,):
        if os.environ.get("MAIN") != "1" or threading.current_thread() is threading.main_thread():
            dump("connect")
def at_exit():
    dump("exit")
    with open(out + ".ca", "w") as f:
        f.write(str(len(loads)))
hook.done = False
sys.addaudithook(hook)
atexit.register(at_exit)
from mason.cli.main import main
sys.exit(main(argv))
"""

# never needed by `mason build` with plain progress before its first request
_NEVER_BEFORE_REQUEST = {
    "rich",  # tty progress only
    "pygments",
    "mason.compression.estargz",  # nothing asked for eStargz
    "zstandard",  # nor for zstd (libzstd and the platform module it imports)
    "cryptography",
    "jwt",
    # HTTP is the standard library's http.client (mason.registry.wire): no third-party stack,
    # certifi's bundle found without importing certifi (importlib.resources), no urllib.request
    "httpx",
    "httpcore",
    "h11",
    "certifi",
    "urllib.request",
    # msgspec imports it only to import inspect; mason.structs hides it from msgspec
    "typing_extensions",
    # mason's records are msgspec structs (mason.structs): no dataclass, and nothing imports
    # inspect (with ast, dis, tokenize's friends) for one
    "dataclasses",
    "inspect",
    # mason.structs loads msgspec's core, not the package's other modules
    "msgspec.inspect",
    "msgspec.json",
    "msgspec._json_schema",
    "msgspec.yaml",
}
# nor by a build whose steps are all cached (issue 14, made lazy): tar readers and writers, the
# codecs, programs (credential helpers, git, ssh-agent, umount) and TOML (the registries.conf
# files distributions ship hold no registry). Not decimal (Go's float format): msgspec's core,
# which mason's records (mason.structs) are made with, imports it
_LAZY_FOR_CACHED_BUILD = {
    "tarfile",
    "subprocess",
    "tomllib",
    "isal",
    "mason.compression.streams",
    "mason.compression.gzip",
    "mason.layer.apply",
    "mason.layer.diff",
}
# nor by the whole of a build whose steps all come from a registry cache (issue 14, made lazy):
# http.client with email's parser and ssl (mason.registry.wire speaks HTTP/1.1 itself, ssl loads
# with the first TLS context), concurrent.futures with logging and what logging imports (its
# part a build uses is mason.futures), temp files
# (mason.oci.atomic.temp_file) with what tempfile and shutil pull in, random names, the git and
# download contexts, an image's inline cache, the parser's debug rendering
_LAZY_FOR_WARM_BUILD = (
    _NEVER_BEFORE_REQUEST
    | _LAZY_FOR_CACHED_BUILD
    | {
        "http.client",
        "email",
        "concurrent.futures",
        "logging",
        "traceback",
        "linecache",
        "tokenize",
        "string",
        "queue",
        "heapq",
        "copy",  # JSON documents are copied by mason.oci.config.json_copy
        "weakref",
        "encodings.unicode_escape",  # only for a mount point with an escaped character
        "calendar",
        "quopri",
        "ssl",
        "_ssl",
        "tempfile",
        "random",  # the cache export's jitter, only when writers race
        "shutil",
        "bz2",
        "lzma",
        "secrets",
        "hmac",
        "mason.cli.remote_context",
        "mason.cache.inline",
        "mason.dockerfile.render",
        # a cache export's merge and retention, --cache-to/--cache-from scope=, --chmod, and
        # the include/exclude and wildcard patterns of a COPY source
        "mason.cache.merge",
        "mason.cache.retention",
        "mason.cache.scopes",
        "mason.engine.chmod",
        "mason.llb.patterns",
        # OpenSSL's hashes (libcrypto, ~3 ms to load): what a warm build hashes (documents,
        # a few small context files) is for the interpreter's own sha256 (mason.digest)
        "hashlib",
        "_hashlib",
    }
)
# nor by `mason build --help`, which makes no request at all
_NEVER_FOR_HELP = _NEVER_BEFORE_REQUEST | {
    "http.client",
    "ssl",
    "sqlite3",
    "mason.registry",
    "mason.engine.builder",
    "mason.cache",
    "msgspec",  # the command line's own records are not structs
}


def _modules_at_first_request(
    tmp_path: Path, port: int, argv: list[str], env: dict[str, str] | None = None
) -> tuple[str, set[str], int]:
    out = tmp_path / "modules.json"
    cmd = [sys.executable, "-c", _PROBE, str(out), str(port), *argv]
    child_env = {**os.environ, "MASON_ROOT": str(tmp_path / "root"), **(env or {})}
    subprocess.run(cmd, env=child_env, capture_output=True, timeout=120, check=False)
    seen = json.loads(out.read_text())
    return seen["where"], set(seen["modules"]), seen["ca"]


# nor by a build whose command line names its registries: their pings go out first
_NEVER_BEFORE_EARLY_PING = _NEVER_BEFORE_REQUEST | {
    "http.client",  # the pings go out on bare sockets
    "ssl",  # a plain-HTTP registry on loopback
    "mason.engine",
    "mason.dockerfile",
    "mason.cache",
    "sqlite3",
}


def _loaded(modules: set[str], names: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_build_help_imports_no_registry_engine_or_progress_modules(tmp_path: Path) -> None:
    where, modules, _ = _modules_at_first_request(tmp_path, 0, ["build", "--help"])
    assert where == "exit"
    assert "mason.cli.build_cmd" in modules  # the probe saw the command's own module
    assert _loaded(modules, _NEVER_FOR_HELP) == []


def _context(tmp_path: Path, host: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {host}/base/busybox:latest\nRUN true\n")
    return ctx


def test_build_reaches_its_first_request_without_deny_listed_modules(tmp_path: Path) -> None:
    port = free_port()  # nothing listens: the build fails right after its first connect
    host = f"127.0.0.1:{port}"
    argv = ["build", "--progress=plain", str(_context(tmp_path, host))]
    # the build's own first request (the early ping of the FROM host goes out before)
    where, modules, _ = _modules_at_first_request(tmp_path, port, argv, {"MAIN": "1"})
    assert where == "connect" and "mason.registry.wire" in modules
    assert _loaded(modules, _NEVER_BEFORE_REQUEST) == []


def test_the_engine_loads_without_what_only_running_steps_needs(tmp_path: Path) -> None:
    # at the first request the engine and the registry client are imported and
    # registries.conf is read: none of them may have pulled in what a cached build never uses
    port = free_port()
    host = f"127.0.0.1:{port}"
    conf = tmp_path / "registries.conf"
    conf.write_text('# as distributions ship it\n[aliases]\n"php" = "docker.io/library/php"\n')
    argv = ["build", "--progress=plain", str(_context(tmp_path, host))]
    env = {"CONTAINERS_REGISTRIES_CONF": str(conf), "MAIN": "1"}
    where, modules, _ = _modules_at_first_request(tmp_path, port, argv, env)
    assert where == "connect" and "mason.engine.builder" in modules
    assert "mason.registry.regconf" in modules  # the file was read by then
    assert _loaded(modules, _LAZY_FOR_CACHED_BUILD) == []


def test_build_naming_its_registries_pings_them_before_the_engine_loads(tmp_path: Path) -> None:
    # the registry of --cache-from and of the pushed tag: pinged (mason.registry.early) right
    # after the arguments are parsed, before the HTTP client and the engine are imported
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PlainRegistry)) as server:
        port = server.server_address[1]
        host = f"127.0.0.1:{port}"
        argv = ["build", "--progress=plain", "--cache-from", f"type=registry,ref={host}/cache"]
        argv += ["--push", "-t", f"{host}/app", str(_context(tmp_path, host))]
        where, modules, _ = _modules_at_first_request(tmp_path, port, argv)
    assert where == "connect" and "mason.registry.early" in modules
    assert _loaded(modules, _NEVER_BEFORE_EARLY_PING) == []


def test_a_registry_only_the_dockerfile_names_is_read_before_the_engine_loads(
    tmp_path: Path,
) -> None:
    # the FROM image's host is pinged (and its documents read, mason.cli.early_reads) once
    # the Dockerfile is parsed, before the engine and the HTTP client are imported
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PlainRegistry)) as server:
        port = server.server_address[1]
        argv = ["build", "--progress=plain", str(_context(tmp_path, f"127.0.0.1:{port}"))]
        where, modules, _ = _modules_at_first_request(tmp_path, port, argv)
    assert where == "connect" and "mason.registry.prefetch" in modules
    assert _loaded(modules, {"http.client", "mason.engine.builder", "mason.cache.registry"}) == []


def test_plain_http_registry_marked_insecure_loads_no_ca_bundle(tmp_path: Path) -> None:
    port = free_port()
    host = f"127.0.0.1:{port}"
    conf = tmp_path / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n')
    argv = ["build", "--progress=plain", str(_context(tmp_path, host))]
    env = {"CONTAINERS_REGISTRIES_CONF": str(conf), "CA": "1"}
    where, _, ca_loads = _modules_at_first_request(tmp_path, port, argv, env)
    assert where == "connect" and ca_loads == 0


class _PlainRegistry(http.server.BaseHTTPRequestHandler):
    """Answers GET /v2/ (a registry without auth) and nothing else: enough for a ping."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/v2/" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_plain_http_registry_on_loopback_loads_no_ca_bundle(tmp_path: Path) -> None:
    # not marked insecure: HTTPS is tried first, and its handshake fails before any
    # certificate could be checked, so no verifying TLS context is ever built
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PlainRegistry)) as server:
        port = server.server_address[1]
        argv = ["build", "--progress=plain", str(_context(tmp_path, f"127.0.0.1:{port}"))]
        where, _, _ = _modules_at_first_request(tmp_path, port, argv, {"CA": "1"})
    assert where == "connect"
    assert (tmp_path / "modules.json.ca").read_text() == "0"


def test_https_not_ruled_out_still_gets_the_verifying_client(tmp_path: Path) -> None:
    # the counterpart: nothing answers, so the handshake proves nothing and the HTTPS ping
    # goes out with verification (the probe does see a CA load where one is due)
    port = free_port()
    argv = ["build", "--progress=plain", str(_context(tmp_path, f"127.0.0.1:{port}"))]
    _modules_at_first_request(tmp_path, port, argv, {"CA": "1"})
    assert (tmp_path / "modules.json.ca").read_text() == "1"
