"""Platforms (os/architecture/variant) as in the OCI image index."""

from __future__ import annotations

import platform as _platform
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mason.oci.errors import OCIError

__all__ = ["Platform", "PlatformError", "host_platform", "normalize_architecture"]


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


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]`` (e.g. ``linux/arm64/v8``); normalises arm64's variant."""
        parts = text.strip().split("/")
        if len(parts) < 2 or len(parts) > 3 or not all(parts):
            raise PlatformError(
                f"invalid platform {text!r}",
                hint="a platform is os/architecture[/variant], for example linux/amd64 or linux/arm/v7",
            )
        os_name = parts[0].lower()
        arch = normalize_architecture(parts[1])
        variant = parts[2].lower() if len(parts) == 3 else None
        if arch == "arm64" and variant == "v8":
            variant = None  # containerd's normalisation: v8 is arm64's default variant
        return cls(os_name, arch, variant)

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
        """True when ``other`` (from an index) can run here: same os and arch, and variant
        equal or unspecified on either side."""
        if self.os != other.os or self.architecture != other.architecture:
            return False
        return self.variant is None or other.variant is None or self.variant == other.variant


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
