"""The RUN-sandbox flags of ``docker buildx build``: ``--add-host``, ``--shm-size``, ``--ulimit``.

Their syntax is Docker's (``opts.ValidateExtraHost``, ``units.RAMInBytes``,
``units.ParseUlimit``); BuildKit puts the values in every exec step's metadata,
so they take part in the steps' cache keys.
"""

from __future__ import annotations

import ipaddress
import re
import resource

from mason.errors import UsageError
from mason.executor import Ulimit

__all__ = ["parse_add_host", "parse_shm_size", "parse_ulimit"]

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
#: go-units' RAMInBytes syntax
_RAM_SIZE = re.compile(r"^(\d+(?:\.\d+)*) ?([kmgtp])?i?b?$", re.IGNORECASE)


def parse_add_host(text: str) -> tuple[str, str]:
    """``name:address`` or ``name=address`` (an IPv6 address after the first separator)."""
    sep = "=" if "=" in text else ":"
    name, found, address = text.partition(sep)
    if not found or not name or not address:
        raise UsageError(
            f"invalid --add-host {text!r}: expected NAME:ADDRESS", reference="invalid-argument"
        )
    if address == "host-gateway":
        raise UsageError(
            f"--add-host {text}: host-gateway is the Docker daemon's gateway, and mason has no "
            "daemon",
            reference="invalid-argument",
            hint="give the address itself",
        )
    try:
        ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        raise UsageError(
            f"invalid --add-host {text!r}: {address!r} is not an IP address",
            reference="invalid-argument",
        ) from None
    return name, address.strip("[]")


def parse_shm_size(text: str) -> int:
    """Bytes from Docker's RAM sizes: ``64m``, ``64MiB``, ``1g``, ``1048576`` (binary units)."""
    match = _RAM_SIZE.match(text.strip())
    value = float(match.group(1)) if match else 0.0
    if match is None or value <= 0:
        raise UsageError(
            f"invalid --shm-size {text!r}: expected a positive size such as 64m or 1g",
            reference="invalid-argument",
        )
    return int(value * _SIZE_UNITS[(match.group(2) or "").lower()])


def parse_ulimit(text: str) -> Ulimit:
    """``name=soft[:hard]`` (one value sets both; -1 is unlimited), as ``docker run --ulimit``."""
    name, found, values = text.partition("=")
    limit = getattr(resource, f"RLIMIT_{name.upper()}", None) if name.isalpha() else None
    if not found or limit is None:
        raise UsageError(
            f"invalid --ulimit {text!r}: expected NAME=SOFT[:HARD] with a limit name such as "
            "nofile, nproc, core, stack or memlock",
            reference="invalid-argument",
        )
    soft_text, _, hard_text = values.partition(":")
    try:
        soft = int(soft_text)
        hard = int(hard_text) if hard_text else soft
    except ValueError:
        raise UsageError(
            f"invalid --ulimit {text!r}: the limits must be integers", reference="invalid-argument"
        ) from None
    if soft < -1 or hard < -1 or (hard != -1 and (soft == -1 or soft > hard)):
        raise UsageError(
            f"invalid --ulimit {text!r}: the soft limit must not exceed the hard limit",
            reference="invalid-argument",
        )
    return Ulimit(name.lower(), soft, hard)
