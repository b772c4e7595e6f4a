"""Cache builds through the CLI and what a registry holds afterwards, shared by the
integration tests of registry, local and eStargz caches (``test_remote_cache`` and the
modules beside it): ``Builder`` runs ``mason build`` on a fresh ``$MASON_ROOT`` and parses its
plain progress into a ``Build``; the rest reads the registry (skopeo, the access log, blobs).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.cli import mason_build
from tests.support.registry_server import RegistryServer, is_peek

CONTEXTS = Path(__file__).resolve().parents[1] / "integration" / "contexts"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CACHECONFIG = "application/vnd.buildkit.cacheconfig.v0"
UNCOMPRESSED = "containerd.io/uncompressed"
# a Dockerfile step: not "[internal]" (nor a multi-platform build's "[linux/arm64 internal]")
_STEP = re.compile(r"^#(\d+) (\[(?![^\]]*\binternal\])[^\]]+\] .*)$")
_STATUS = re.compile(r"^#(\d+) (CACHED|DONE [0-9.]+s|ERROR: .*)$")
_ACCESS = re.compile(
    r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) (?P<size>\d+|-)'
)
_BLOB_GET = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")


@dataclass
class Build:
    """One ``mason build`` run and what its plain progress output says."""

    returncode: int
    output: str
    metadata: dict[str, object] = field(default_factory=dict)

    @property
    def steps(self) -> dict[str, str]:
        """Dockerfile step title -> final status (``CACHED``, ``DONE``, ``ERROR``)."""
        titles: dict[str, str] = {}
        status: dict[str, str] = {}
        for line in self.output.splitlines():
            m = _STEP.match(line)
            if m:
                titles.setdefault(m[1], m[2])
                continue
            m = _STATUS.match(line)
            if m:
                status[m[1]] = m[2].split()[0].rstrip(":")
        return {title: status.get(n, "?") for n, title in titles.items()}

    @property
    def cached(self) -> set[str]:
        return {t for t, s in self.steps.items() if s == "CACHED"}

    @property
    def ran(self) -> set[str]:
        return {t for t, s in self.steps.items() if s != "CACHED"}

    @property
    def warnings(self) -> list[str]:
        """WARNING lines, except the notice that a build without an output keeps its result
        locally (these tests often build for the cache alone)."""
        return [
            line
            for line in self.output.splitlines()
            if "WARNING" in line and "no output specified" not in line
        ]

    @property
    def digest(self) -> str:
        return str(self.metadata["containerimage.digest"])

    def check(self) -> Build:
        assert self.returncode == 0, (
            f"mason build failed ({self.returncode}):\n{self.output[-4000:]}"
        )
        return self


class Builder:
    """Runs ``mason build`` on a context with a fresh ``$MASON_ROOT`` unless one is given."""

    def __init__(self, tmp: Path, base: str) -> None:
        self.tmp = tmp
        self.base = base
        self._n = 0

    def root(self) -> Path:
        self._n += 1
        path = self.tmp / f"root-{self._n}"
        path.mkdir()
        return path

    def __call__(
        self, context: Path, *args: str, root: Path | None = None, env: dict[str, str] | None = None
    ) -> Build:
        root = root or self.root()
        meta = self.tmp / f"metadata-{self._n}-{len(args)}.json"
        meta.unlink(missing_ok=True)
        proc = mason_build(
            root,
            "--build-arg",
            f"BASE={self.base}",
            "--metadata-file",
            str(meta),
            *args,
            str(context),
            env=env,
        )
        metadata = json.loads(meta.read_text()) if meta.exists() else {}
        return Build(proc.returncode, proc.stdout + proc.stderr, metadata)


def copy_context(name: str, dest: Path) -> Path:
    target = dest / f"ctx-{name}"
    shutil.copytree(CONTEXTS / name, target)
    return target


def skopeo_raw(ref: str) -> tuple[dict[str, object], bytes]:
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return json.loads(raw), raw


def registry_blob(registry: RegistryServer, repo: str, digest: str) -> bytes:
    with urllib.request.urlopen(f"{registry.url}/v2/{repo}/blobs/{digest}", timeout=30) as resp:
        data: bytes = resp.read()
        return data


@dataclass(frozen=True)
class CacheDoc:
    """A registry cache in either form: top media type, layer descriptors, config descriptor."""

    media_type: str
    layers: list[dict[str, object]]
    config: dict[str, object]

    @property
    def total_size(self) -> int:
        return int(self.config["size"]) + sum(int(d["size"]) for d in self.layers)  # type: ignore[call-overload]


def cache_doc(ref: str) -> CacheDoc:
    doc, _ = skopeo_raw(ref)
    media_type = str(doc.get("mediaType", ""))
    if "manifests" in doc:
        entries = list(doc["manifests"])  # type: ignore[call-overload]
        config = entries[-1]
        assert config["mediaType"] == CACHECONFIG, f"{ref}: the config descriptor must come last"
        return CacheDoc(media_type, entries[:-1], config)
    config = doc["config"]
    assert config["mediaType"] == CACHECONFIG  # type: ignore[index]
    return CacheDoc(media_type, list(doc["layers"]), config)  # type: ignore[call-overload, arg-type]


class AccessLog:
    """The registry's access log from a mark on: which requests a build made."""

    def __init__(self, registry: RegistryServer) -> None:
        self.registry = registry
        self.start = len(registry.access_log_lines())

    def requests(self) -> list[tuple[str, str, int]]:
        return [(method, path, status) for method, path, status, _ in self._lines()]

    def _lines(self) -> list[tuple[str, str, int, str]]:
        out = []
        for line in self.registry.access_log_lines()[self.start :]:
            m = _ACCESS.search(line)
            if m:
                out.append((m["method"], m["path"], int(m["status"]), m["size"]))
        return out

    def blob_gets(self) -> list[str]:
        """Digests of blobs served (status < 400) since the mark; a peek at a cache hit's first
        bytes (``is_peek``) is not a download."""
        out = []
        for method, path, status, size in self._lines():
            m = _BLOB_GET.match(path.split("?", 1)[0])
            if method == "GET" and m and status < 400 and not is_peek(status, size):
                out.append(m["digest"])
        return out

    def uploads(self) -> list[tuple[str, str]]:
        """Blob upload requests (POST/PATCH/PUT under /blobs/uploads/) since the mark."""
        return [
            (method, path)
            for method, path, _ in self.requests()
            if method in ("POST", "PATCH", "PUT") and "/blobs/uploads/" in path
        ]

    def manifest_puts(self) -> list[str]:
        return [
            path for method, path, _ in self.requests() if method == "PUT" and "/manifests/" in path
        ]


def base_layers(base: str) -> set[str]:
    doc, _ = skopeo_raw(base)
    return {str(d["digest"]) for d in doc["layers"]}  # type: ignore[attr-defined]
