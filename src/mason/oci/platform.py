"""Platforms (os/architecture/variant) as in the OCI image index."""

from __future__ import annotations

import platform as _platform
from collections.abc import Iterable, Mapping
from typing import Any

from mason.oci.errors import OCIError
from mason.structs import Struct

__all__ = [
    "Platform",
    "PlatformError",
    "host_platform",
    "normalize_architecture",
    "parse_platforms",
    "platform_vector",
]


class PlatformError(OCIError):
    reference = "invalid-platform"
    exit_code = 2


_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def normalize_architecture(arch: str) -> str:
    """Map kernel / distro spellings (x86_64, aarch64) to the OCI/Go names (amd64, arm64)."""
    lowered = arch.lower()
    return _ARCH_ALIASES.get(lowered, lowered)


#: containerd's isKnownArch (Go's GOARCH values)
_KNOWN_ARCHES = frozenset(
    [
        "386",
        "amd64",
        "amd64p32",
        "arm",
        "armbe",
        "arm64",
        "arm64be",
        "ppc64",
        "ppc64le",
        "loong64",
        "mips",
        "mipsle",
        "mips64",
        "mips64le",
        "mips64p32",
        "mips64p32le",
        "ppc",
        "riscv",
        "riscv64",
        "s390",
        "s390x",
        "sparc",
        "sparc64",
        "wasm",
    ]
)

#: containerd's variant normalisation per (architecture, variant)
_VARIANTS = {
    ("amd64", "v1"): "",
    ("arm64", "8"): "",
    ("arm64", "v8"): "",
    ("arm64", "v8.0"): "",
    ("arm64", "9"): "v9",
    ("arm64", "9.0"): "v9",
    ("arm64", "v9.0"): "v9",
    ("arm", ""): "v7",
    ("arm", "7"): "v7",
    ("arm", "5"): "v5",
    ("arm", "6"): "v6",
    ("arm", "8"): "v8",
}


class Platform(Struct, frozen=True):
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]`` (or a lone architecture, on linux) normalised as containerd's
        ``platforms.Normalize``: ``linux/arm64/v8`` is ``linux/arm64``, ``linux/arm`` is
        ``linux/arm/v7``, ``linux/amd64/v1`` is ``linux/amd64``."""
        parts = text.strip().split("/")
        if len(parts) == 1 and normalize_architecture(parts[0]) in _KNOWN_ARCHES:
            parts = ["linux", *parts]  # containerd: an architecture alone is the default OS's
        if len(parts) < 2 or len(parts) > 3 or not all(parts):
            raise PlatformError(
                f"invalid platform {text!r}",
                hint="a platform is os/architecture[/variant], for example linux/amd64 or linux/arm/v7",
            )
        return cls(parts[0].lower(), parts[1], parts[2] if len(parts) == 3 else None).normalized()

    def normalized(self) -> Platform:
        """containerd's ``normalizeArch``: Go's architecture names and default variants."""
        raw, variant = self.architecture.lower(), (self.variant or "").lower()
        arch = normalize_architecture(raw)
        variant = _VARIANTS.get((raw, variant), _VARIANTS.get((arch, variant), variant))
        if arch == "386" or raw in ("armhf", "armel"):
            variant = {"armhf": "v7", "armel": "v6"}.get(raw, "")
        return Platform(
            self.os.lower(),
            arch,
            variant or None,
            self.os_version,
            tuple(sorted(set(self.os_features))),
        )

    @property
    def dir_name(self) -> str:
        """The folder of this platform in a multi-platform local or tar output (``linux_arm_v7``)."""
        return str(self).replace("/", "_")

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Platform:
        if not isinstance(value, Mapping):
            raise PlatformError(f"platform must be a JSON object, got {type(value).__name__}")
        os_name = value.get("os")
        arch = value.get("architecture")
        if not isinstance(os_name, str) or not isinstance(arch, str):
            raise PlatformError(
                f"platform needs string os and architecture fields: {dict(value)!r}"
            )
        variant = value.get("variant")
        os_version = value.get("os.version")
        features = value.get("os.features") or ()
        return cls(
            os_name,
            arch,
            variant if isinstance(variant, str) and variant else None,
            os_version if isinstance(os_version, str) and os_version else None,
            tuple(str(f) for f in features),
        )

    def matches(self, other: Platform) -> bool:
        """True when an image of platform ``other`` runs here (containerd's ``platforms.Only``)."""
        return self.rank(other) is not None

    def rank(self, other: Platform) -> int | None:
        """``other``'s place in this platform's preference order (``platform_vector``; 0 is the
        exact platform), None when it does not run here."""
        want = other.normalized()
        for i, p in enumerate(platform_vector(self)):
            if (p.os, p.architecture, p.variant) == (want.os, want.architecture, want.variant):
                return i
        return None


_ARM64_VARIANTS = {
    "v8": ((8,), (0,)),
    **{f"v8.{i}": ((8,), (i,)) for i in range(10)},
    "v9": ((9, 8), (0, 5)),
    **{f"v9.{i}": ((9, 8), (i, min(i + 5, 9))) for i in range(8)},
}


def platform_vector(platform: Platform) -> tuple[Platform, ...]:
    """What runs on ``platform``, best first: containerd's ``platformVector`` (amd64/v3 runs
    v2, v1 and 386; arm/v7 runs v6 and v5; arm64 runs arm64's older variants and arm/v8..v5)."""
    p = platform.normalized()
    out = [p]
    num = (p.variant or "").removeprefix("v")
    if p.architecture == "amd64":
        if num.isdigit() and int(num) > 1:
            out += [
                Platform(p.os, "amd64", f"v{n}" if n > 1 else None)
                for n in range(int(num) - 1, 0, -1)
            ]
        out.append(Platform(p.os, "386"))
    elif p.architecture == "arm" and num.isdigit() and int(num) > 5:
        out += [Platform(p.os, "arm", f"v{n}") for n in range(int(num) - 1, 4, -1)]
    elif p.architecture == "arm64":
        variant = p.variant or "v8"
        out = []
        majors, minors = _ARM64_VARIANTS.get(variant, ((), ()))
        for major, top in zip(majors, minors, strict=True):
            for minor in range(top, -1, -1):
                v = f"v{major}" if minor == 0 else f"v{major}.{minor}"
                out.append(Platform(p.os, "arm64", v).normalized())
        arm = "v8" if variant.startswith(("v8", "v9")) else variant
        out += platform_vector(Platform(p.os, "arm", arm))
    return tuple(out)


def parse_platforms(values: Iterable[str]) -> tuple[Platform, ...]:
    """``--platform`` values, each comma-separated, in order without duplicates (buildx)."""
    out: list[Platform] = []
    for value in values:
        for text in value.split(","):
            if not text.strip():
                continue
            p = Platform.parse(text)
            if p not in out:
                out.append(p)
    return tuple(out)


def host_platform() -> Platform:
    """The platform of this machine (always linux for mason)."""
    machine = _platform.machine()
    arch = normalize_architecture(machine)
    variant: str | None = None
    if machine.lower() == "armv7l":
        variant = "v7"
    elif machine.lower() == "armv6l":
        variant = "v6"
    return Platform("linux", arch, variant)
