"""Image references and platforms as the build checks read them (pure, no I/O).

``valid_reference`` is distribution/reference's ``ParseNormalizedNamed``
accepting a name; ``parse_platform`` is containerd's ``platforms.Parse`` for
the OS and architecture (``None`` where it fails); ``format_platform`` is
``platforms.FormatAll(platforms.Normalize(p))`` without OS versions.
"""

from __future__ import annotations

import re

__all__ = ["format_platform", "parse_platform", "valid_reference"]

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = f"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?", re.ASCII)
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}
_NAME_TOTAL_MAX = 255
_DEFAULT_DOMAIN = "docker.io"


def valid_reference(name: str) -> bool:
    """Whether ``name`` is an image reference Docker accepts (``alpine``, ``a/b:1``, ``h:5000/x@sha256:…``)."""
    if not name or _IDENTIFIER.fullmatch(name):
        return False
    i = name.find("/")
    head = name[:i] if i >= 0 else ""
    if i < 0 or (
        "." not in head and ":" not in head and head != "localhost" and head.lower() == head
    ):
        domain, remainder = _DEFAULT_DOMAIN, name
    else:
        domain, remainder = head, name[i + 1 :]
    if domain == _DEFAULT_DOMAIN and "/" not in remainder:
        remainder = "library/" + remainder
    if remainder.lower() != remainder:
        return False
    m = _REFERENCE.fullmatch(f"{domain}/{remainder}")
    if m is None or len(m.group(1)) > _NAME_TOTAL_MAX:
        return False
    if m.group(3):
        algorithm, _, hex_part = m.group(3).partition(":")
        want = _DIGEST_HEX.get(algorithm)
        if want is None or len(hex_part) != want or not re.fullmatch(r"[a-f0-9]+", hex_part):
            return False
    return True


_KNOWN_OS = frozenset(
    ("aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js", "linux", "nacl",
     "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows", "zos")
)  # fmt: skip
_KNOWN_ARCH = frozenset(
    ("386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "loong64", "mips", "mipsle", "mips64",
     "mips64le", "mips64p32", "mips64p32le", "ppc", "ppc64", "ppc64le", "riscv", "riscv64", "s390", "s390x",
     "sparc", "sparc64", "wasm")
)  # fmt: skip
_SPECIFIER = re.compile(r"[A-Za-z0-9_.-]+")


def _normalize_os(os_: str) -> str:
    os_ = os_.lower()
    return "darwin" if os_ == "macos" else os_


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant in ("8", "v8", "v8.0") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant


def parse_platform(text: str, default: str = "linux/amd64") -> tuple[str, str, str] | None:
    """``(os, architecture, variant)`` of a ``--platform`` value; ``default`` fills a lone OS or arch."""
    if "*" in text:
        return None
    parts = text.split("/")
    if any(_SPECIFIER.fullmatch(p) is None for p in parts):
        return None
    d_os, _, d_rest = default.partition("/")
    d_arch, _, d_variant = d_rest.partition("/")
    if len(parts) == 1:
        os_ = _normalize_os(parts[0])
        if os_ in _KNOWN_OS:
            return os_, d_arch, d_variant
        arch, variant = _normalize_arch(parts[0], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        return (d_os, arch, variant) if arch in _KNOWN_ARCH else None
    if len(parts) == 2:
        return (_normalize_os(parts[0]), *_normalize_arch(parts[1], ""))
    if len(parts) == 3:
        arch, variant = _normalize_arch(parts[1], parts[2])
        if arch == "arm64" and variant == "":
            variant = "v8"
        return _normalize_os(parts[0]), arch, variant
    return None


def format_platform(os_: str, arch: str, variant: str = "") -> str:
    """``os/arch[/variant]`` after containerd's normalisation."""
    arch, variant = _normalize_arch(arch, variant)
    out = f"{_normalize_os(os_)}/{arch}"
    return f"{out}/{variant}" if variant else out
