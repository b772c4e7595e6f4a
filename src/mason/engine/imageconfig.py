"""Image config assembly: the ``config`` object, ``rootfs.diff_ids`` and history,
built the way BuildKit's Dockerfile frontend does it (``# buildkit`` suffixes,
``comment: buildkit.dockerfile.v0``, ``empty_layer`` for config-only steps).

The builder keeps the config as a plain dict while it walks a stage; ``serialise``
gives deterministic bytes (sorted keys) so identical inputs give identical digests.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from mason.digest import Digest
from mason.oci.config import json_copy
from mason.structs import Struct, field, replace

__all__ = [
    "HISTORY_COMMENT",
    "StageConfig",
    "format_created",
    "go_duration",
    "go_healthcheck_text",
    "history_created_by",
    "serialise_config",
]

HISTORY_COMMENT = "buildkit.dockerfile.v0"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def format_created(epoch: float | None) -> str:
    """RFC 3339 UTC like Go's time.Time JSON (``Z`` suffix, no trailing zero nanos)."""
    if epoch is None:
        epoch = _dt.datetime.now(_dt.UTC).timestamp()
    whole = int(epoch)
    frac = epoch - whole
    base = _dt.datetime.fromtimestamp(whole, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac > 0:
        digits = f"{frac:.9f}"[2:].rstrip("0")
        if digits:
            base += "." + digits
    return base + "Z"


def history_created_by(instruction: str, text: str, *, layer: bool) -> str:
    """``RUN /bin/sh -c ... # buildkit`` for layer steps, ``ENV A=b`` for config steps."""
    return f"{instruction} {text} # buildkit" if layer else f"{instruction} {text}"


class StageConfig(Struct):
    """Mutable image config of one stage while the builder walks it."""

    architecture: str = "amd64"
    os: str = "linux"
    variant: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    diff_ids: list[Digest] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def scratch(cls, architecture: str, os_: str, variant: str | None = None) -> StageConfig:
        return cls(
            architecture=architecture,
            os=os_,
            variant=variant,
            config={"Env": [f"PATH={DEFAULT_PATH}"]},
        )

    @classmethod
    def from_image_config(cls, doc: Mapping[str, Any]) -> StageConfig:
        """Start from a base image's config document (its parsed JSON)."""
        cfg = json_copy(dict(doc.get("config") or {}))
        if not cfg.get("Env"):
            cfg["Env"] = [f"PATH={DEFAULT_PATH}"]
        rootfs = doc.get("rootfs") or {}
        extra = {
            k: json_copy(v)
            for k, v in doc.items()
            if k
            not in (
                "architecture",
                "os",
                "variant",
                "config",
                "rootfs",
                "history",
                "created",
                "moby.buildkit.cache.v0",
                "moby.buildkit.buildinfo.v1",
                "container",
                "container_config",
                "docker_version",
                "author",
                "os.version",
                "os.features",
            )
        }
        return cls(
            architecture=str(doc.get("architecture", "amd64")),
            os=str(doc.get("os", "linux")),
            variant=doc.get("variant"),
            config=cfg,
            diff_ids=[Digest(d) for d in rootfs.get("diff_ids") or []],
            history=json_copy(list(doc.get("history") or [])),
            extra=extra,
        )

    def copy(self) -> StageConfig:
        return replace(
            self,
            config=json_copy(self.config),
            diff_ids=list(self.diff_ids),
            history=json_copy(self.history),
            extra=json_copy(self.extra),
        )

    # env ------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.config.get("Env") or []:
            k, _, v = str(item).partition("=")
            out[k] = v
        return out

    def env_list(self) -> list[str]:
        return list(self.config.get("Env") or [])

    def set_env(self, key: str, value: str) -> None:
        items = [e for e in (self.config.get("Env") or []) if str(e).partition("=")[0] != key]
        # Docker replaces in place when the variable exists, appends otherwise.
        existing = [str(e).partition("=")[0] for e in (self.config.get("Env") or [])]
        if key in existing:
            items = [
                f"{key}={value}" if str(e).partition("=")[0] == key else e
                for e in self.config["Env"]
            ]
        else:
            items.append(f"{key}={value}")
        self.config["Env"] = items

    # history --------------------------------------------------------------

    def add_layer(self, diff_id: Digest) -> None:
        self.diff_ids.append(diff_id)

    # final document ---------------------------------------------------------

    def document(
        self, created: str, extra_fields: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        doc: dict[str, Any] = dict(self.extra)
        doc.update(
            {
                "architecture": self.architecture,
                "os": self.os,
                "config": _clean_config(self.config),
                "created": created,
                "history": self.history,
                "rootfs": {"type": "layers", "diff_ids": list(self.diff_ids)},
            }
        )
        if self.variant:
            doc["variant"] = self.variant
        if extra_fields:
            doc.update(extra_fields)
        return doc


def _clean_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    # Drop empty values the way Docker's omitempty does, so configs don't carry noise; BuildKit's
    # OnBuild has no omitempty and is always written (null when there are no triggers).
    out = {k: v for k, v in cfg.items() if v not in (None, "", [], {})}
    out.setdefault("OnBuild", None)
    return out


def serialise_config(doc: Mapping[str, Any]) -> bytes:
    """Deterministic bytes of an image config: sorted keys, compact separators."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def exec_form_text(args: Sequence[str]) -> str:
    """Go's ``fmt.Sprintf("%q")``-like rendering used in BuildKit history for JSON forms."""
    return "[" + " ".join(json.dumps(a, ensure_ascii=False) for a in args) + "]"


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String()``: ``0s``, ``1.5s``, ``1m30s``, ``2h0m0s``, ``500ms``."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _go_frac(ns, size) + unit
    h, rem = divmod(ns, 3_600_000_000_000)
    m, rem = divmod(rem, 60_000_000_000)
    secs = _go_frac(rem, 1_000_000_000) + "s"
    if h:
        return f"{sign}{h}h{m}m{secs}"
    if m:
        return f"{sign}{m}m{secs}"
    return sign + secs


def _go_frac(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")


def go_healthcheck_text(
    test: Sequence[str],
    interval: int,
    timeout: int,
    start_period: int,
    start_interval: int,
    retries: int,
) -> str:
    """The ``HEALTHCHECK`` history text BuildKit v0.32.2 writes: Go's ``%+v`` of the health config
    struct (``{Test:[CMD-SHELL curl x] Interval:30s Timeout:0s StartPeriod:0s StartInterval:0s Retries:3}``)."""
    return (
        f"{{Test:[{' '.join(test)}] Interval:{go_duration(interval)} Timeout:{go_duration(timeout)} "
        f"StartPeriod:{go_duration(start_period)} StartInterval:{go_duration(start_interval)} Retries:{retries}}}"
    )
